"""Benchmark: a 1,000-item paginated search and a 500-step cube (build, update, info, growth).

Run (from the repository root; with the defaults about 10 minutes on 2 cores at load 3, 16 at
load 6)::

    .venv/bin/python bench/scale.py                 # cubes of 50 100 250 500 steps, 2 scenes a step
    .venv/bin/python bench/scale.py --quick         # smoke run: 10 and 20 steps, 2 new, no file

What is measured, for every cube length N of ``--sizes`` (each in a fresh process):

``search``          the paginated search of the N days' 2N items: ``stac2cube.search.search_items``
                    (its own client: retries, time-outs, ``limit=100`` a page) and, as the
                    baseline in the same run, plain pystac-client
                    ``Client.open(url).search(..., limit=100).item_collection()``; HTTP requests
                    counted on the client's ``StacApiIO`` (pages = requests - 1 landing page);
                    timed in the process after imports; peak RSS ``ru_maxrss``.
``build``           ``stac2cube build`` (the CLI as a user runs it: default runner ``auto`` =
                    a threaded Dask LocalCluster in the process, default batch size 8) of days
                    0..N-1 into a new cube.
``info``            ``stac2cube info`` of the N-step cube.
``update``          ``stac2cube update --store ... --end day N+NEW-1``: the cube's own recorded
                    request, default 30-day look-back, ``--new`` new steps. For the largest N the
                    new days' items are loaded into the catalog only after its build (a catalog
                    that has grown), for the others the catalog already holds them.
``search repeats``  ``search_items`` of every size, ``--search-repeats`` times in turns in one warm
                    process: median seconds per size and per request (does a deeper page cost
                    more?).
``state``           in one process: ``Cube.info()`` (what ``info`` prints) and ``read_state`` timed
                    in-process (median of 5), the sizes of the ledger and request attributes, and
                    the store's bytes on disk per icechunk folder (chunks vs. metadata).

The CLI commands are timed from outside (wall time of the whole command: interpreter start,
imports, Prefect's temporary server, the work); memory is the peak of the sum of RSS over the
command's process tree (sampled every 50 ms with psutil: the Prefect server it starts counts) and
``ru_maxrss`` of the command's own process. Build and update run as ``scale.py --traced ...``:
the CLI's ``main`` with timing wrappers around the stage functions (search, each write batch,
commit, side files, run reports) and cProfile of the second and the last write batch, so the
report says where the time goes and whether a batch gets slower as the cube grows. Per size the report gives s/step and, between
consecutive sizes, the marginal seconds per added step (fixed costs cancel): constant marginal
cost means linear growth.

Catalog: a synthetic ``sentinel-2-c1-l2a`` catalog (:mod:`stac2cube.testing.synthetic` through
``_common.write_scenes``), two overlapping tiles a day (``32UPU`` at 10:30:21 and ``32UQU`` at
10:30:25 UTC, offset by half a tile) for ``max(--sizes) + --new`` days from 2024-06-01: 2 items
per solar day, mosaicked into one time step; ``--bands`` bands of ``--px`` + 4 px (rounded up to a
multiple of 6) tiny deflate COGs; served by a real local STAC API (PostgreSQL + pgstac +
stac-fastapi-pgstac). The cube grid is ``--px`` x ``--px`` at 10 m, covering parts of both tiles.

Writes ``bench/RESULTS_scale.md`` (its ``## Interpretation`` section is kept; edit it by hand).
Timing is never part of the pytest suite; this script is run by hand.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import itertools
import json
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    COLLECTION,
    FIRST_DAY,
    RssSampler,
    add_common_arguments,
    checked_bbox,
    file_sizes,
    flow_kwargs,
    fmt_ratio,
    grid_bounds,
    machine,
    publish,
    rss_result,
    run_measured,
    run_worker,
    start_api,
    versions,
    worker_env,
    worker_main,
    write_scenes_timed,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS_scale.md"
DEFAULT_WORKDIR = HERE / "out" / "scale"
BANDS = ["B04", "B08"]
VERSIONED = ["stac2cube", "icechunk", "zarr", "xarray", "dask", "prefect", "pystac-client"]
IMPORTS = ["numpy", "pystac_client", "zarr", "icechunk", "xarray", "stac2cube", "stac2cube.search"]
PAGE_SIZE = 100
STAC2CUBE = str(Path(sys.executable).with_name("stac2cube"))


def day(k: int) -> dt.date:
    """The solar day of time step ``k``."""
    return FIRST_DAY + dt.timedelta(days=k)


def tile_size(px: int) -> int:
    """Tile width in 10 m px: ``px`` plus a 4 px margin, rounded up to a multiple of 6."""
    return 6 * math.ceil((px + 4) / 6)


def write_catalog(root: Path, n_days: int, size: int, bands: list[str]):
    """Two scenes a day (tile A and a second tile half a tile east of it), days 0..n_days-1."""
    from stac2cube.testing.synthetic import TILE_A

    _, _, (x0, y1) = TILE_A
    shift = 60.0 * ((size * 10 // 2) // 60)  # half a tile east, on the 60 m lattice

    def scene(k: int) -> dict[str, Any]:
        d, second = divmod(k, 2)
        when = dt.datetime.combine(day(d), dt.time(10, 30, 25 if second else 21), tzinfo=dt.UTC)
        spec: dict[str, Any] = {
            "datetime": when,
            "platform": "sentinel-2a" if d % 2 == 0 else "sentinel-2b",
            "seed": k,
        }
        if second:
            spec.update(tile="32UQU", origin=(x0 + shift, y1))
        return spec

    return write_scenes_timed(root, 2 * n_days, size, bands, scene=scene)


# ------------------------------------------------------------------------------------------
# workers (each in a fresh subprocess)


def counting(client) -> list[float]:
    """Count the HTTP requests of a pystac-client ``client`` (its ``StacApiIO.request``): the
    returned list gets each request's seconds."""
    calls: list[float] = []
    stac_io = client._stac_io
    original = stac_io.request

    def request(href, method=None, headers=None, parameters=None):
        t0 = time.perf_counter()
        try:
            return original(href, method, headers, parameters)
        finally:
            calls.append(time.perf_counter() - t0)

    stac_io.request = request
    return calls


def run_search(job: dict[str, Any]) -> dict[str, Any]:
    """Search days ``start..end`` with stac2cube's ``search_items`` or plain pystac-client."""
    from pystac_client import Client

    from stac2cube.request import make_request
    from stac2cube.search import open_client, search_items

    kw = flow_kwargs(job, "", job["start"], job["end"])
    kw.pop("store")
    request = make_request(**kw)
    with RssSampler() as rss:
        t0 = time.perf_counter()
        if job["method"] == "stac2cube":
            client = open_client(job["url"])
            calls = counting(client)
            items = search_items(request, client=client, page_size=PAGE_SIZE)
            ids = {i["id"] for i in items}
        else:
            client = Client.open(job["url"])
            calls = counting(client)
            search = client.search(
                collections=[COLLECTION],
                bbox=job["bbox"],
                datetime=f"{job['start']}T00:00:00Z/{job['end']}T23:59:59Z",
                limit=PAGE_SIZE,
            )
            ids = {i.id for i in search.item_collection()}
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "items": len(ids), "requests": len(calls), **rss_result(rss)}


def run_search_repeats(job: dict[str, Any]) -> dict[str, Any]:
    """``search_items`` of every size's days, ``reps`` times in turns, in one warm process.

    Per size: the median seconds; per request (landing page, page 1, 2, ...): the median
    seconds over the repeats, so a page that gets slower deeper in the result shows.
    """
    from stac2cube.request import make_request
    from stac2cube.search import open_client, search_items

    times: dict[str, list[float]] = {}
    pages: dict[str, list[list[float]]] = {}
    for rep in range(job["reps"]):
        order = job["sizes"] if rep % 2 else job["sizes"][::-1]
        for n in order:
            kw = flow_kwargs(job, "", day(0).isoformat(), day(n - 1).isoformat())
            kw.pop("store")
            t0 = time.perf_counter()
            client = open_client(job["url"])
            calls = counting(client)
            items = search_items(make_request(**kw), client=client, page_size=PAGE_SIZE)
            times.setdefault(str(n), []).append(time.perf_counter() - t0)
            pages.setdefault(str(n), []).append(calls)
            if len(items) != 2 * n:
                raise RuntimeError(f"{len(items)} items for {n} days, not {2 * n}")
    return {
        "median_s": {n: statistics.median(t) for n, t in times.items()},
        "all_s": times,
        "page_median_s": {
            n: [statistics.median(col) for col in zip(*runs, strict=True)]
            for n, runs in pages.items()
        },
    }


def median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_state(job: dict[str, Any]) -> dict[str, Any]:
    """In-process: ``Cube.info()`` and ``read_state`` times, attribute sizes, steps, scenes."""
    import zarr

    from stac2cube.cube import Cube
    from stac2cube.store import LEDGER_ATTR, REQUEST_ATTR, read_state

    path = job["store"]
    info = Cube(path).info()
    out = {
        "steps": info["shape"]["time"],
        "ledger_steps": len(info["time_steps"]),
        "scenes": sum(s["scenes"] for s in info["time_steps"]),
        "info_s": median_s(lambda: Cube(path).info(), 5),
        "read_state_s": median_s(lambda: read_state(path), 5),
    }
    from stac2cube.store import open_repo

    group = zarr.open_group(open_repo(path).readonly_session("main").store, mode="r")
    attrs = group.attrs.asdict()
    out["ledger_bytes"] = len(attrs.get(LEDGER_ATTR, ""))
    out["request_bytes"] = len(attrs.get(REQUEST_ATTR, ""))
    if job.get("profile"):
        prof = cProfile.Profile()
        prof.enable()
        Cube(path).info()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(15)
        out["profile"] = text.getvalue()
    return out


# ------------------------------------------------------------------------------------------
# the traced CLI: ``scale.py --traced TRACE CALLS stac2cube-args...`` is ``stac2cube args...``
# with timing wrappers around a few stage functions (cheap: one perf_counter pair a call)

#: (module, attribute) wrapped by the traced CLI; ``Class.method`` for methods
TRACED = [
    ("stac2cube.parameters", "update_parameters"),
    ("stac2cube.flows.update", "update_parameters"),
    ("stac2cube.tasks.search", "search_items"),
    ("stac2cube.tasks.write", "write_time_steps"),
    ("stac2cube.cube", "Cube.commit"),
    ("stac2cube.flows.build", "write_products"),
    ("stac2cube.flows.build", "publish_build_report"),
    ("stac2cube.flows.update", "publish_build_report"),
]


def traced_cli(trace: str, profile_calls: str, args: list[str]) -> int:
    """Run ``stac2cube args`` in this process, recording when each :data:`TRACED` call ran.

    Writes ``{"calls": [[name, start_s, seconds], ...], "main_s", "imports_s", "profiles"}``
    to ``trace``; the ``write_time_steps`` calls whose indices ``profile_calls`` lists
    (comma-separated, negative from the end is not possible: the parent computes them) run
    under cProfile (their cumulative seconds per function are stored).
    """
    import atexit
    import functools
    import importlib

    t0 = time.perf_counter()
    from stac2cube.cli import main as cli_main

    for module, _ in TRACED:
        importlib.import_module(module)
    imports_s = time.perf_counter() - t0
    calls: list[list] = []
    wanted = {int(k) for k in profile_calls.split(",") if k}
    profiles: dict[str, dict[str, float]] = {}
    counter = {"write_time_steps": 0}

    def wrap(name: str, fn):
        @functools.wraps(fn)
        def timed(*a, **kw):
            prof = None
            if name == "write_time_steps":
                k = counter["write_time_steps"]
                counter["write_time_steps"] += 1
                if k in wanted:
                    prof = cProfile.Profile()
            start = time.perf_counter()
            if prof:
                prof.enable()
            try:
                return fn(*a, **kw)
            finally:
                if prof:
                    prof.disable()
                    profiles[str(k)] = profile_rows(prof)
                calls.append([name, start - t0, time.perf_counter() - start])

        return timed

    for module, attr in TRACED:
        owner = sys.modules[module]
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, wrap(name, getattr(owner, name)))

    def dump() -> None:
        Path(trace).write_text(
            json.dumps(
                {
                    "calls": calls,
                    "main_s": time.perf_counter() - t_main,
                    "imports_s": imports_s,
                    "profiles": profiles,
                }
            )
        )

    atexit.register(dump)
    t_main = time.perf_counter()
    return cli_main(args)


def profile_rows(prof: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds per function (file:function; project files short, others by name)."""
    root = str(HERE.parent)
    out: dict[str, float] = {}
    for (path, _line, name), row in pstats.Stats(prof).stats.items():
        own = path.startswith(root) and "/.venv/" not in path
        label = f"{Path(path).parent.name}/{Path(path).name}:{name}" if own else name
        if own or "site-packages" in path:
            out[label] = out.get(label, 0.0) + row[3]
    return out


WORKERS = {
    "search-stac2cube": run_search,
    "search-pystac-client": run_search,
    "state": run_state,
    "search-repeats": run_search_repeats,
}


# ------------------------------------------------------------------------------------------
# orchestration


def store_bytes(path: Path) -> dict[str, int]:
    """Bytes of an icechunk repository per top-level folder (chunks, manifests, ...)."""
    out: dict[str, int] = {}
    for rel, size in file_sizes(path).items():
        top = rel.split("/", 1)[0] if "/" in rel else "(root files)"
        out[top] = out.get(top, 0) + size
    return out


def sidecar_bytes(work: Path) -> dict[str, int]:
    """Bytes of the files the build writes beside the cube (settings, STAC Collection)."""
    return {p.name: p.stat().st_size for p in work.glob("cube.*.json")}


def cli(*args: str) -> list[str]:
    return [STAC2CUBE, *args]


def traced(trace: Path, profile_calls: list[int], *args: str) -> list[str]:
    """The ``stac2cube args`` command with timing wrappers (see :func:`traced_cli`)."""
    calls = ",".join(map(str, profile_calls))
    return [sys.executable, str(Path(__file__).resolve()), "--traced", str(trace), calls, *args]


def read_trace(path: Path) -> dict[str, Any]:
    """The trace's calls summed per name, the write batches' times and the profiles."""
    data = json.loads(path.read_text())
    per: dict[str, float] = {}
    for name, _start, seconds in data["calls"]:
        per[name] = per.get(name, 0.0) + seconds
    batches = [c for c in data["calls"] if c[0] == "write_time_steps"]
    return {
        "per": per,
        "batches": [c[2] for c in batches],
        "calls": data["calls"],
        "main_s": data["main_s"],
        "imports_s": data["imports_s"],
        "profiles": data["profiles"],
    }


def measure_size(n: int, new: int, job: dict[str, Any], env, base: Path, api, late: list) -> dict:
    """Search, build, info, state, update (and state again) for the N-step cube."""
    work = base / f"n{n}"
    store = work / "cube.icechunk"
    res: dict[str, Any] = {"n": n}
    end = day(n - 1).isoformat()
    for method in ("stac2cube", "pystac-client"):
        res[f"search_{method}"] = run_worker(
            f"search-{method}",
            {**job, "method": method, "start": day(0).isoformat(), "end": end},
            env,
            work,
        )
    batches = math.ceil(n / 8)
    build = traced(
        work / "build.trace.json",
        [1, batches - 1],
        "build", "--mission", "sentinel-2-l2a", "--bbox", *map(str, job["bbox"]),
        "--start", day(0).isoformat(), "--end", end, "--catalog", job["url"],
        "--collection", COLLECTION, "--bands", *job["bands"], "--crs", f"EPSG:{job['epsg']}",
        "--store", str(store),
    )  # fmt: skip
    res["build"] = run_measured(build, env, work / "build.log")
    res["build"]["trace"] = read_trace(work / "build.trace.json")
    res["build"]["load"] = os.getloadavg()[0]
    res["info"] = run_measured(cli("info", str(store)), env, work / "info.log")
    res["state"] = run_worker("state", {**job, "store": str(store)}, env, work)
    res["bytes"] = store_bytes(store)
    res["sidecars"] = sidecar_bytes(work)
    if late:  # the catalog gains the new days only now
        api.load_items(late)
    new_end = day(n + new - 1).isoformat()
    update = traced(
        work / "update.trace.json", [], "update", "--store", str(store), "--end", new_end
    )
    res["update"] = run_measured(update, env, work / "update.log")
    res["update"]["trace"] = read_trace(work / "update.trace.json")
    res["update"]["load"] = os.getloadavg()[0]
    res["info_after"] = run_measured(cli("info", str(store)), env, work / "info-after.log")
    res["state_after"] = run_worker(
        "state", {**job, "store": str(store), "profile": job["profile"]}, env, work
    )
    res["bytes_after"] = store_bytes(store)
    res["sidecars_after"] = sidecar_bytes(work)
    if res["state"]["steps"] != n or res["state_after"]["steps"] != n + new:
        raise SystemExit(
            f"N = {n}: cube has {res['state']['steps']} steps after the build and "
            f"{res['state_after']['steps']} after the update, not {n} and {n + new}"
        )
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(work / "cube.icechunk.settings.json", ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--traced"]:
        return traced_cli(argv[1], argv[2], argv[3:])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[50, 100, 250, 500],
        help="cube lengths in time steps (default 50 100 250 500; two items a step)",
    )  # fmt: skip
    parser.add_argument("--new", type=int, default=10, help="steps each update adds (10)")
    parser.add_argument("--px", type=int, default=64, help="cube width in 10 m px (64)")
    parser.add_argument("--bands", type=int, default=1, choices=(1, 2), help="B04 [B08] (1)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: sizes 10 20, 2 new steps, no results file"
    )
    parser.add_argument(
        "--search-repeats", type=int, default=5,
        help="searches of every size in one warm process, in turns (5; 0 skips)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument(
        "--report-from", type=Path, help="only render the report of a run's WORKDIR/run.json"
    )
    add_common_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker[0], Path(args.worker[1]), WORKERS, IMPORTS)
        return 0
    if args.quick:
        args.sizes, args.new, args.no_results, args.search_repeats = [10, 20], 2, True, 2
    sizes = sorted(set(args.sizes))
    command = "bench/scale.py " + " ".join(argv)
    started = dt.datetime.now().astimezone()
    if args.report_from:
        text = report(json.loads(args.report_from.read_text()))
    else:
        text = benchmark(args, sizes, command.strip(), machine(), started)
    publish(text, RESULTS, write=not args.no_results)
    return 0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def benchmark(args, sizes: list[int], command: str, machine_line: str, started) -> str:
    base = args.workdir.resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    bands = BANDS[: args.bands]
    size = tile_size(args.px)
    n_days = sizes[-1] + args.new
    t_all = time.perf_counter()
    uptimes = [("start", uptime())]
    catalog, catalog_s, cog_bytes = write_catalog(base / "catalog", n_days, size, bands)
    bounds, epsg = grid_bounds(args.px)
    bbox, grid = checked_bbox(bounds, epsg)
    late_ids = {
        i["id"] for i in catalog.items if i["properties"]["datetime"] >= day(sizes[-1]).isoformat()
    }
    late = [i for i in catalog.items if i["id"] in late_ids]
    catalog.items = [i for i in catalog.items if i["id"] not in late_ids]
    data_line = (
        f"{len(catalog.items) + len(late)} items ({n_days} days from {day(0)}, 2 overlapping "
        f"tiles a day) x {len(bands)} band(s) ({' '.join(bands)}) x {size}x{size} px deflate COGs "
        f"({cog_bytes / 1e6:.1f} MB), written in {catalog_s:.1f} s; the API starts with "
        f"{len(catalog.items)} items, the last {len(late)} ({args.new} days) are loaded after the "
        f"{sizes[-1]}-step build; cube grid {grid.shape[0]}x{grid.shape[1]} px at 10 m, "
        f"EPSG:{epsg}"
    )
    print(f"catalog: {data_line}")
    env = worker_env(base / "prefect-home", log_level="WARNING")
    results = []
    with start_api(catalog) as api:
        job = {"url": api.url, "bbox": bbox, "epsg": epsg, "bands": bands, "profile": False}
        for n in sizes:
            t0 = time.perf_counter()
            res = measure_size(
                n, args.new, {**job, "profile": n == sizes[-1]}, env, base, api,
                late if n == sizes[-1] else [],
            )  # fmt: skip
            uptimes.append((f"after N = {n}", uptime()))
            results.append(res)
            print(
                f"N = {n}: search {res['search_stac2cube']['seconds']:.2f} s "
                f"({res['search_stac2cube']['items']} items, "
                f"{res['search_stac2cube']['requests']} requests), build "
                f"{res['build']['seconds']:.1f} s, info {res['info']['seconds']:.1f} s, update "
                f"{res['update']['seconds']:.1f} s ({time.perf_counter() - t0:.0f} s in all)"
            )
        search_repeats = None
        if args.search_repeats:
            search_repeats = run_worker(
                "search-repeats",
                {**job, "sizes": sizes, "reps": args.search_repeats},
                env,
                base / "search-repeats",
            )
            uptimes.append(("after the search repeats", uptime()))
    run = {
        "search_repeats": search_repeats,
        "new": args.new,
        "sizes": sizes,
        "results": results,
        "command": command,
        "machine_line": machine_line,
        "started": f"{started:%Y-%m-%d %H:%M %Z}",
        "data_line": data_line,
        "uptimes": uptimes,
        "total_s": time.perf_counter() - t_all,
    }
    (base / "run.json").write_text(json.dumps(run))  # --report-from renders it again
    return report(run)


# ------------------------------------------------------------------------------------------
# report


def mb(b: float) -> str:
    return f"{b / 2**20:.2f}"


def report(run: dict[str, Any]) -> str:
    new, results, command = run["new"], run["results"], run["command"]
    machine_line, started, data_line = run["machine_line"], run["started"], run["data_line"]
    uptimes, total_s = run["uptimes"], run["total_s"]
    rows = [
        "| steps | items | search s (stac2cube / pystac-client) | requests | build s | s/step "
        f"| update +{new} s | info s | info in-process ms | peak RSS MB: search / build / update "
        "/ info (process) | peak MB process tree: build / update / info |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, p = r["search_stac2cube"], r["search_pystac-client"]
        rows.append(
            f"| {r['n']} | {s['items']} | {s['seconds']:.2f} / {p['seconds']:.2f} "
            f"| {s['requests']} / {p['requests']} | {r['build']['seconds']:.1f} "
            f"| {r['build']['seconds'] / r['n']:.3f} | {r['update']['seconds']:.1f} "
            f"| {r['info']['seconds']:.2f} | {1000 * r['state']['info_s']:.0f} "
            f"| {s['peak_rss_mb']:.0f} / {r['build']['peak_rss_mb']:.0f} / "
            f"{r['update']['peak_rss_mb']:.0f} / {r['info']['peak_rss_mb']:.0f} "
            f"| {r['build']['peak_tree_mb']:.0f} / {r['update']['peak_tree_mb']:.0f} / "
            f"{r['info']['peak_tree_mb']:.0f} |"
        )
    marg = [
        "| from -> to steps | build s per added step | search ms per added item "
        "| info in-process ms per added step | ledger bytes per added step | store bytes per "
        "added step | update s change |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in itertools.pairwise(results):
        dn = b["n"] - a["n"]
        di = b["search_stac2cube"]["items"] - a["search_stac2cube"]["items"]
        marg.append(
            f"| {a['n']} -> {b['n']} | {(b['build']['seconds'] - a['build']['seconds']) / dn:.3f} "
            f"| {1000 * (b['search_stac2cube']['seconds'] - a['search_stac2cube']['seconds']) / di:.2f} "
            f"| {1000 * (b['state']['info_s'] - a['state']['info_s']) / dn:.3f} "
            f"| {(b['state']['ledger_bytes'] - a['state']['ledger_bytes']) / dn:.0f} "
            f"| {(sum(b['bytes'].values()) - sum(a['bytes'].values())) / dn:.0f} "
            f"| {b['update']['seconds'] - a['update']['seconds']:+.1f} |"
        )
    folders = sorted({k for r in results for k in r["bytes"]})
    sizes_rows = [
        "| steps | ledger attr KB | request attr KB | read_state ms | "
        + " | ".join(f"{f} MiB" for f in folders)
        + " | total MiB | after update: total MiB (steps) |",
        "|---:|---:|---:|---:|" + "---:|" * len(folders) + "---:|---:|",
    ]
    for r in results:
        sizes_rows.append(
            f"| {r['n']} | {r['state']['ledger_bytes'] / 1024:.1f} "
            f"| {r['state']['request_bytes'] / 1024:.1f} | {1000 * r['state']['read_state_s']:.1f} | "
            + " | ".join(mb(r["bytes"].get(f, 0)) for f in folders)
            + f" | {mb(sum(r['bytes'].values()))} | {mb(sum(r['bytes_after'].values()))} "
            f"({r['state_after']['steps']}) |"
        )
    upd_rows = [
        f"| steps before the update | bytes the update added: {' | '.join(folders)} "
        "| cube.collection.json KB (rewritten by every run) |",
        "|---:|" + "---:|" * len(folders) + "---:|",
    ]
    for r in results:
        added = {f: r["bytes_after"].get(f, 0) - r["bytes"].get(f, 0) for f in folders}
        coll = r.get("sidecars_after", {}).get("cube.collection.json")
        upd_rows.append(
            f"| {r['n']} | "
            + " | ".join(f"{added[f] / 1024:.1f} KB" for f in folders)
            + f" | {'-' if coll is None else f'{coll / 1024:.1f}'} |"
        )
    sizes_rows += [
        "",
        f"What one update (+{new} steps) added to the repository, and the STAC Collection file "
        "beside the cube after it:",
        "",
        *upd_rows,
    ]
    lo, hi = results[0], results[-1]
    ratio = hi["n"] / lo["n"]
    growth = [
        f"* steps x{ratio:g} ({lo['n']} -> {hi['n']}): "
        f"build x{fmt_ratio(hi['build']['seconds'], lo['build']['seconds'])}, "
        f"search x{fmt_ratio(hi['search_stac2cube']['seconds'], lo['search_stac2cube']['seconds'])}, "
        f"update x{fmt_ratio(hi['update']['seconds'], lo['update']['seconds'])}, "
        f"info (CLI) x{fmt_ratio(hi['info']['seconds'], lo['info']['seconds'])}, "
        f"info in-process x{fmt_ratio(hi['state']['info_s'], lo['state']['info_s'])}, "
        f"ledger x{fmt_ratio(hi['state']['ledger_bytes'], lo['state']['ledger_bytes'])}, "
        f"store x{fmt_ratio(sum(hi['bytes'].values()), sum(lo['bytes'].values()))}, "
        f"build peak RSS x{fmt_ratio(hi['build']['peak_rss_mb'], lo['build']['peak_rss_mb'])}, "
        f"update peak RSS x{fmt_ratio(hi['update']['peak_rss_mb'], lo['update']['peak_rss_mb'])}",
    ]
    for r in results:
        s, p = r["search_stac2cube"], r["search_pystac-client"]
        growth.append(
            f"* N = {r['n']}: search_items / pystac-client item_collection() = "
            f"{fmt_ratio(s['seconds'], p['seconds'])} ({s['items']} vs {p['items']} items, "
            f"{s['requests']} vs {p['requests']} requests; RSS growth during the search "
            f"{s['rss_growth_mb']:.0f} vs {p['rss_growth_mb']:.0f} MB); update / build = "
            f"{fmt_ratio(r['update']['seconds'], r['build']['seconds'])}"
        )
    lines = [
        "# Scale: a 1,000-item paginated search and a 500-step cube",
        "",
        f"Run {started} on {machine_line}.",
        "",
        f"Command: `.venv/bin/python {command}` (whole run {total_s / 60:.1f} min).",
        "",
        "Machine load (`uptime`) during the run; the machine is shared with other sessions, "
        "so absolute times are inflated and noisy:",
        "",
        *[f"* {when}: `{text}`" for when, text in uptimes],
        "",
        f"Data: {data_line}. Local STAC API (PostgreSQL + pgstac + stac-fastapi-pgstac on "
        "127.0.0.1).",
        "",
        f"Versions: {versions(VERSIONED)}.",
        "",
        "Each CLI figure is one fresh `stac2cube` process timed from outside (interpreter start, "
        "imports and Prefect's temporary server included: a fixed cost of several seconds); "
        "peak RSS (process) = `ru_maxrss` of the command; process tree = the largest sum of the "
        "RSS of the command and its children (the Prefect server), sampled every 50 ms. The "
        f"search runs in a worker process, timed in-process after imports (page size {PAGE_SIZE}; "
        "requests = landing page + pages). `info in-process` = `Cube.info()` (what "
        "`stac2cube info` prints) timed inside one process, median of 5. Every cube was checked to "
        f"hold N steps after the build and N + {new} after the update.",
        "",
        "| Build, update and info per cube length |",
        "",
        *rows,
        "",
        "Marginal cost between consecutive sizes (fixed costs cancel; constant columns mean "
        "linear growth):",
        "",
        *marg,
        "",
        "Growth and baselines:",
        "",
        *growth,
        "",
        "Sizes of the cube's metadata and of the store on disk (icechunk folders) after the build:",
        "",
        *sizes_rows,
    ]
    lines += ["", *search_lines(run.get("search_repeats")), *trace_lines(results)]
    prof = results[-1]["state_after"].get("profile")
    if prof:
        top = [ln for ln in prof.splitlines() if ln.strip()][:30]
        lines += [
            "",
            f"cProfile of one `Cube.info()` on the {results[-1]['state_after']['steps']}-step cube "
            "(cumulative, top 15):",
            "",
            "```",
            *top,
            "```",
        ]
    return "\n".join(lines).replace("| Build, update and info per cube length |\n\n", "")


def search_lines(rep: dict[str, Any] | None) -> list[str]:
    """The warm-process search repeats: median per size and per request."""
    if not rep:
        return []
    med = {int(n): t for n, t in rep["median_s"].items()}
    sizes = sorted(med)
    lo = sizes[0]
    out = [
        "### The search in one warm process",
        "",
        f"`search_items` of each size's days, {len(rep['all_s'][str(lo)])} times in turns in one "
        "process (client opened each time, as `search_items` does); median seconds, ms per item, "
        "and the median seconds of each request (landing page first, then the pages of "
        f"{PAGE_SIZE}):",
        "",
        "| steps | items | median s | ms per item | requests: median s each |",
        "|---:|---:|---:|---:|---|",
    ]
    for n in sizes:
        per = rep["page_median_s"][str(n)]
        out.append(
            f"| {n} | {2 * n} | {med[n]:.2f} | {1000 * med[n] / (2 * n):.2f} "
            f"| {' '.join(f'{x:.2f}' for x in per)} |"
        )
    return [*out, ""]


def phases(res: dict[str, Any]) -> dict[str, Any]:
    """Where a traced CLI command's wall time went."""
    t = res["trace"]
    calls, imports = t["calls"], t["imports_s"]
    first = min((c[1] for c in calls if c[0] == "search_items"), default=None)
    batches = t["batches"]
    known = sum(t["per"].get(k, 0.0) for k in ("search_items", "write_time_steps", "commit"))
    known += sum(t["per"].get(k, 0.0) for k in ("write_products", "publish_build_report"))
    q = max(1, min(4, len(batches) // 4 or 1))
    return {
        "wall": res["seconds"],
        "imports": imports,
        "until_search": (first - imports) if first is not None else None,
        "search": t["per"].get("search_items", 0.0),
        "n_batches": len(batches),
        "batches": sum(batches),
        "first_batches": statistics.mean(batches[:q]) if batches else None,
        "last_batches": statistics.mean(batches[-q:]) if batches else None,
        "commit": t["per"].get("commit", 0.0),
        "products": t["per"].get("write_products", 0.0),
        "reports": t["per"].get("publish_build_report", 0.0),
        "rest": res["seconds"] - imports - known,
    }


def trace_lines(results: list[dict[str, Any]], top: int = 12) -> list[str]:
    """Where the build's and update's time goes per size, and the profile of two write batches."""
    rows = [
        "| command | steps | wall s | imports s | start-up until the search s | search s "
        "| write batches: n, total s | s a batch: first 4 / last 4 | commit s | settings + "
        "collection files s | run reports s | the rest s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("build", "update"):
        for r in results:
            p = phases(r[kind])

            def f(v, d=2):
                return "-" if v is None else f"{v:.{d}f}"

            rows.append(
                f"| {kind} | {r['n']} | {f(p['wall'], 1)} | {f(p['imports'])} "
                f"| {f(p['until_search'])} | {f(p['search'])} | {p['n_batches']}, "
                f"{f(p['batches'])} | {f(p['first_batches'])} / {f(p['last_batches'])} "
                f"| {f(p['commit'])} | {f(p['products'])} | {f(p['reports'])} | {f(p['rest'])} |"
            )
    out = [
        "### Where the time goes (timing wrappers inside the CLI process)",
        "",
        "Build and update ran as `scale.py --traced ...`: the `stac2cube` CLI's `main` in a "
        "fresh process with cheap timing wrappers around `search_items`, `write_time_steps` "
        "(one call per batch of 8 steps), `Cube.commit`, `write_products` and "
        "`publish_build_report`. *Start-up until the search* is from `main` to the search: "
        "argument checks, Prefect's temporary server and the flow run; *the rest* is the wall "
        "time minus imports and the wrapped calls (Prefect start-up, interpreter start and exit, "
        "the Dask cluster, grouping and planning).",
        "",
        *rows,
    ]
    big = results[-1]["build"]["trace"]["profiles"]
    if len(big) == 2:
        (ka, a), (kb, b) = sorted(big.items(), key=lambda kv: int(kv[0]))
        ranked = sorted(set(a) | set(b), key=lambda k: b.get(k, 0.0) - a.get(k, 0.0), reverse=True)
        out += [
            "",
            f"cProfile of write batch {int(ka) + 1} and batch {int(kb) + 1} (the last) of the "
            f"{results[-1]['n']}-step build (cumulative s, main thread; the Dask threads reading "
            f"pixels are not profiled); the {top} functions that grew most:",
            "",
            f"| function | batch {int(ka) + 1} | batch {int(kb) + 1} | difference |",
            "|---|---:|---:|---:|",
        ]
        for name in ranked[:top]:
            x, y = a.get(name, 0.0), b.get(name, 0.0)
            out.append(f"| `{name}` | {x:.3f} | {y:.3f} | {y - x:+.3f} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
