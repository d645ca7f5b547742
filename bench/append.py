"""Benchmark: append one time step to cubes of growing length, stac2cube vs. rewriting the cube.

Run (from the repository root; about 10 minutes on 2 cores with the defaults)::

    .venv/bin/python bench/append.py                                  # N = 10 50 200, 3 repeats
    .venv/bin/python bench/append.py --sizes 5 20 --repeat 1          # quick smoke run

What is compared: adding ONE new scene (one time step after the cube's last) to an existing cube
of N time steps, for every N of ``--sizes``:

``stac2cube``       ``get_stac_layers(..., start=day N, end=day N, store=<copy of the N-step
                    cube>)``: the incremental append (search, plan against the ledger, load and
                    write the one new step, rewrite the ledger attribute, one icechunk commit),
                    with Prefect's default settings.
``stac2cube-nohb``  the same with Prefect's flow run heartbeats off
                    (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None``, default 180 s in Prefect 3.8):
                    the heartbeat thread sleeps in 1 s steps and is joined when the flow ends,
                    so with heartbeats on every flow call lasts a whole number of seconds plus
                    ~0.1 s; this variant shows the append's own cost.
``rewrite``         the obvious baseline without incremental stores: ``stac2cube.open_cube`` of the
                    N-step cube, the new step made by stac2cube's own stage functions (search,
                    group, ``load_raw``, ``build_dataset``; no Prefect), ``xr.concat`` along time
                    and ``to_zarr(mode="w", zarr_format=3)`` of everything into a fresh Zarr v3
                    store (the stored encoding, uint16 with CF scale/offset, is kept).

How:

1. Writes a synthetic ``sentinel-2-c1-l2a`` catalog (:mod:`stac2cube.testing.synthetic`): tile
   ``TILE_A`` (UTM 32N), ``max(--sizes) + 1`` acquisitions one day apart, ``--bands`` 10 m bands
   as deflate COGs of ``--px`` rounded up to a multiple of 6 (plus 4 px margin) pixels, served by
   a real local STAC API (:func:`stac2cube.testing.pgstac.start_local_stac_api`).
2. Builds each N-step base cube once (``get_stac_layers``, days 0..N-1, grid ``--px`` x ``--px``
   at 10 m inside the tile, so one ``(1, 512, 512)`` chunk per band and step with the default).
   Not timed as part of the comparison; the build times are reported.
3. For each repeat, N and method: a fresh subprocess (``PREFECT_HOME`` in the work directory,
   analytics off). ``stac2cube`` (and ``stac2cube-nohb``) appends to a pristine
   ``shutil.copytree`` copy of the base cube; before the clock starts it imports everything and
   warms Prefect up with the same flow on day 0 (already in the cube: "nothing new", so the
   ephemeral API server start-up is not timed); ``rewrite`` imports the same modules and warms up
   with a search of day 0. Measured: wall time of the append call only; peak RSS of the process
   (``ru_maxrss``); RSS growth during the call (``/proc/self/statm`` sampled every 10 ms by a
   thread: peak during the call minus RSS just before). All results are checked: N + 1 steps,
   and equal stored integers of the new step.
4. Diagnostics of what grows with N (outside the timing): the ledger attribute's size and the
   time of ``read_state`` on the appended cube, the bytes the append added to the icechunk
   repository (chunks, manifests, snapshots, transactions), Prefect's per-task run times of the
   append flow run, and what handing the ledger to a Prefect task costs (measured up to
   ``--extrapolate`` steps).
5. Prints a Markdown table (medians over ``--repeat``) and writes ``bench/RESULTS_append.md``;
   its ``## Interpretation`` section is kept from the previous file (edit it by hand).

Timing is never part of the pytest suite; this script is run by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from _common import (
    FIRST_DAY,
    RssSampler,
    add_common_arguments,
    checked_bbox,
    cube_store,
    file_sizes,
    flow_kwargs,
    fmt_ratio,
    grid_bounds,
    machine,
    prefect_init,
    publish,
    remove_subdirs,
    rss_result,
    run_worker,
    start_api,
    task_profile,
    uint_sum,
    versions,
    worker_env,
    worker_main,
    write_scenes_timed,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS_append.md"
DEFAULT_WORKDIR = HERE / "out" / "append"
#: 10 m bands of Sentinel-2 (what ``--bands`` picks from, in this order)
TEN_M_BANDS = ["B04", "B08", "B02", "B03"]
METHODS = ["stac2cube", "stac2cube-nohb", "rewrite"]
#: the incremental methods (compared with ``rewrite``)
INCREMENTAL = ["stac2cube", "stac2cube-nohb"]
#: packages whose versions the report names
VERSIONED = ["stac2cube", "icechunk", "zarr", "xarray", "dask", "prefect", "stackstac"]
#: modules every worker imports before its clock starts
IMPORTS = [
    "numpy",
    "xarray",
    "zarr",
    "icechunk",
    "stackstac",
    "pystac_client",
    "prefect",
    "stac2cube",
    "stac2cube.flows.build",
    "stac2cube.tasks.load",
    "stac2cube.tasks.preprocess",
]


def day(k: int) -> dt.date:
    """The acquisition day of scene ``k`` (scene k is the cube's step k)."""
    return FIRST_DAY + dt.timedelta(days=k)


# ------------------------------------------------------------------------------------------
# catalog and grid


def tile_size(px: int) -> int:
    """Tile width in 10 m px: ``px`` plus a 4 px margin, rounded up to a multiple of 6."""
    return 6 * math.ceil((px + 4) / 6)


# ------------------------------------------------------------------------------------------
# measurement helpers (run in the worker subprocess)


def last_step_sum(store, var: str) -> tuple[int, int]:
    """Length along time of ``var`` and the sum of its last step's stored integers."""
    import zarr

    array = zarr.open_group(store, mode="r")[var]
    return int(array.shape[0]), uint_sum(array[-1])


def median_s(fn, reps: int) -> float:
    """Median wall time of ``reps`` calls of ``fn``."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def state_stats(path: str, reps: int = 5) -> dict[str, Any]:
    """What reading the cube's state costs, and the sizes behind it.

    Times (median of ``reps``) of ``read_state`` and of ``open_cube`` with the ``time`` values
    (what every reader and the flow's run report do), the sizes of the JSON attributes, and the
    chunk shape of the per-step coordinates.
    """
    import zarr

    from stac2cube.store import LEDGER_ATTR, REQUEST_ATTR, open_cube, read_state

    state = read_state(path)
    read_state_s = median_s(lambda: read_state(path), reps)
    open_cube_s = median_s(lambda: open_cube(path).time.values, reps)
    group = zarr.open_group(cube_store(path), mode="r")
    attrs = group.attrs.asdict()
    coord_chunks = {
        name: list(array.chunks)
        for name, array in group.arrays()
        if array.ndim == 1 and name not in ("x", "y")
    }
    t0 = time.perf_counter()
    json.dumps(state.ledger)
    dumps_s = time.perf_counter() - t0
    return {
        "read_state_s": read_state_s,
        "open_cube_s": open_cube_s,
        "coord_chunks": coord_chunks,
        "ledger_bytes": len(attrs.get(LEDGER_ATTR, "")),
        "request_bytes": len(attrs.get(REQUEST_ATTR, "")),
        "ledger_dumps_s": dumps_s,
        "steps": len(state.ledger),
    }


# ------------------------------------------------------------------------------------------
# workers (each runs in a fresh subprocess)


def run_build(job: dict[str, Any]) -> dict[str, Any]:
    """Build every base cube (untimed for the comparison; build times are reported)."""
    from stac2cube import get_stac_layers

    out: dict[str, Any] = {"builds": {}}
    prefect_init(job)  # the ephemeral Prefect server starts here, not in the first build
    for n, path in job["cubes"].items():
        t0 = time.perf_counter()
        summary = get_stac_layers(**flow_kwargs(job, path, day(0).isoformat(), job["ends"][n]))
        seconds = time.perf_counter() - t0
        if summary["time_steps"] != int(n):
            raise RuntimeError(f"base cube {path} has {summary['time_steps']} steps, not {n}")
        out["builds"][n] = {"seconds": seconds, **state_stats(path)}
    out["ledger_cost"] = ledger_cost(job["cubes"], job["extrapolate"])
    return out


def ledger_cost(cubes: dict[str, str], extrapolate: int, reps: int = 5) -> dict[str, Any]:
    """What passing a cube's ledger to one Prefect task costs, per ledger length.

    The build flow hands the whole ledger to ``plan_task`` (default cache policy) and
    ``commit_task`` (``NO_CACHE``). This times a trivial task taking the ledger in a running
    flow, both ways and wrapped in ``prefect.utilities.annotations.quote`` (which tells Prefect
    not to walk the argument), for the ledgers of the base cubes and for a ledger of
    ``extrapolate`` steps made by repeating the longest one's entries (ten years of daily steps
    for the default 3650). Also the ledger's JSON size and ``json.loads`` time.
    """
    import copy

    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.utilities.annotations import quote

    from stac2cube.store import read_state

    ledgers = {n: read_state(path).ledger for n, path in cubes.items()}
    longest = ledgers[max(ledgers, key=int)]
    if extrapolate > len(longest):
        ledgers[str(extrapolate)] = [
            copy.deepcopy(longest[k % len(longest)]) for k in range(extrapolate)
        ]

    @task(cache_policy=NO_CACHE)
    def like_commit(ledger: list) -> int:
        return len(ledger)

    @task
    def like_plan(ledger: list) -> int:
        return len(ledger)

    def median_ms(fn) -> float:
        return 1000 * median_s(fn, reps)

    @flow(name="ledger-argument-cost")
    def probe() -> dict[str, Any]:
        out = {}
        for n, ledger in ledgers.items():
            text = json.dumps(ledger)
            out[n] = {
                "ledger_bytes": len(text),
                "loads_ms": median_ms(lambda text=text: json.loads(text)),
                "no_cache_ms": median_ms(lambda ledger=ledger: like_commit(ledger)),
                "default_policy_ms": median_ms(lambda ledger=ledger: like_plan(ledger)),
                "quoted_ms": median_ms(lambda ledger=ledger: like_commit(quote(ledger))),
                "quoted_default_policy_ms": median_ms(
                    lambda ledger=ledger: like_plan(quote(ledger))
                ),
            }
        return out

    like_commit([])  # outside a flow: warm the task machinery up
    return probe()


def run_stac2cube(job: dict[str, Any]) -> dict[str, Any]:
    """The incremental append: ``get_stac_layers`` of day N on a copy of the N-step cube.

    With ``job["heartbeat"]`` false, warm-up and append run with Prefect's flow run heartbeats
    off (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None``; an environment variable cannot say None).
    """
    if job.get("heartbeat", True):
        return _run_stac2cube(job)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return _run_stac2cube(job)


def _run_stac2cube(job: dict[str, Any]) -> dict[str, Any]:
    from stac2cube import get_stac_layers

    store, n = job["store"], job["n"]
    t0 = time.perf_counter()
    warm = get_stac_layers(**flow_kwargs(job, store, day(0).isoformat(), day(0).isoformat()))
    warmup_s = time.perf_counter() - t0
    if warm["snapshot"] is not None:
        raise RuntimeError(f"the warm-up wrote to the cube: {warm}")
    new = day(n).isoformat()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        state = get_stac_layers(**flow_kwargs(job, store, new, new), return_state=True)
        seconds = time.perf_counter() - t0
    summary = state.result()
    if (summary["added_time_steps"], summary["time_steps"]) != (1, n + 1):
        raise RuntimeError(f"append did not add one step to {n}: {summary}")
    result = {"seconds": seconds, "warmup_s": warmup_s, **rss_result(rss)}
    result.update(task_profile(state))
    result["steps"], result["checksum"] = last_step_sum(cube_store(store), job["bands"][0])
    result["state"] = state_stats(store)
    return result


def run_steady(job: dict[str, Any]) -> dict[str, Any]:
    """Appends to the shortest and the longest cube alternately in ONE process (heartbeats off).

    A fresh process per append (the main table) adds first-call noise of about +-0.15 s; here
    the same warm process appends ``job["reps"]`` times to fresh copies of each cube, so a
    difference between cube lengths stands out. Then ``job["profiled"]`` more appends of each
    run under cProfile: the cumulative time per call of the project's own functions (and a few
    library entry points) says where a difference comes from.
    """
    import cProfile
    import pstats

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from stac2cube import get_stac_layers

    cubes = {int(n): path for n, path in job["cubes"].items()}
    work = Path(job["work"])
    d0 = day(0).isoformat()
    times: dict[int, list[float]] = {n: [] for n in cubes}
    profiles = {n: cProfile.Profile() for n in cubes}

    def append(n: int, k: int, profile: bool = False) -> float:
        store = work / f"n{n}-{k}.icechunk"
        shutil.copytree(cubes[n], store)
        new = day(n).isoformat()
        t0 = time.perf_counter()
        if profile:
            profiles[n].enable()
        get_stac_layers(**flow_kwargs(job, str(store), new, new))
        if profile:
            profiles[n].disable()
        seconds = time.perf_counter() - t0
        shutil.rmtree(store)
        return seconds

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for path in cubes.values():
            get_stac_layers(**flow_kwargs(job, path, d0, d0))  # warm-up: nothing new
        order = sorted(cubes)
        for k in range(job["reps"]):
            for n in order if k % 2 else order[::-1]:
                times[n].append(append(n, k))
        for k in range(job["profiled"]):
            for n in order if k % 2 else order[::-1]:
                append(n, 1000 + k, profile=True)

    root = str(Path(job["repo"]).resolve())
    library = {"collect_task_run_inputs_sync", "hash_objects", "to_icechunk", "to_zarr"}
    functions: dict[str, dict[int, float]] = {}
    for n, prof in profiles.items():
        for (path, _line, name), row in pstats.Stats(prof).stats.items():
            own = path.startswith(root) and "/.venv/" not in path
            if not own and name not in library:
                continue
            label = f"{Path(path).parent.name}/{Path(path).name}:{name}" if own else name
            per_call = row[3] / max(job["profiled"], 1)
            functions.setdefault(label, {})[n] = functions.get(label, {}).get(n, 0.0) + per_call
    return {"times": {str(n): t for n, t in times.items()}, "functions": functions}


def new_step(job: dict[str, Any], start: str, end: str, *, load: bool = True):
    """The time steps of ``start..end`` as stac2cube makes them (decoded, lazy), no Prefect."""
    from stac2cube.dataset import build_dataset
    from stac2cube.load import load_raw
    from stac2cube.request import make_request
    from stac2cube.search import search_items
    from stac2cube.steps import deduplicate, group_by_solar_day

    kw = flow_kwargs(job, "", start, end)
    kw.pop("store")
    request = make_request(**kw)
    items = search_items(request)
    if not load:
        return None
    kept, _ = deduplicate(items)
    steps = group_by_solar_day(kept)
    raw = load_raw(request, [i for s in steps for i in s.items])
    ds, _ = build_dataset(request, steps, raw)
    return ds


def run_rewrite(job: dict[str, Any]) -> dict[str, Any]:
    """Baseline: open the N-step cube, concat the new step, write all to a fresh Zarr v3 store."""
    import xarray as xr

    from stac2cube import open_cube

    base, out, n = job["base_cube"], job["out"], job["n"]
    t0 = time.perf_counter()
    new_step(job, day(0).isoformat(), day(0).isoformat(), load=False)  # warm the catalog path
    open_cube(base).close()
    warmup_s = time.perf_counter() - t0
    new = day(n).isoformat()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        step = new_step(job, new, new)
        cube = open_cube(base)
        # per-step coordinates (item ids etc., object dtype) must be in memory for concat
        cube = cube.assign_coords(
            {k: c.compute() for k, c in cube.coords.items() if k not in cube.dims}
        )
        merged = xr.concat(
            [cube, step], dim="time", coords="minimal", compat="override", join="exact"
        )
        # the new step's per-step coordinates computed from its pixels (valid_fraction, ...)
        # are lazy: concatenated with the cube's in-memory values they become dask arrays in
        # several chunks inside one stored chunk (4096 steps), which to_zarr refuses; one chunk
        # per coordinate keeps them lazy, computed with the bands in the same dask graph
        merged = merged.assign_coords(
            {
                k: c.chunk({"time": -1})
                for k, c in merged.coords.items()
                if k not in merged.dims and c.chunks is not None and "time" in c.dims
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata is not part of the v3 spec
            merged.to_zarr(out, mode="w", zarr_format=3)
        seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "warmup_s": warmup_s, **rss_result(rss)}
    result["steps"], result["checksum"] = last_step_sum(out, job["bands"][0])
    return result


WORKERS = {
    "build": run_build,
    "stac2cube": run_stac2cube,
    "stac2cube-nohb": lambda job: run_stac2cube({**job, "heartbeat": False}),
    "rewrite": run_rewrite,
    "prefect-init": prefect_init,
    "steady": run_steady,
}


# ------------------------------------------------------------------------------------------
# orchestration


def added_bytes(before: dict[str, int], after: Path) -> dict[str, dict[str, int]]:
    """Files and bytes an append added to an icechunk repository, per top-level folder."""
    out: dict[str, dict[str, int]] = {}
    for rel, size in file_sizes(after).items():
        if rel in before and before[rel] == size:
            continue
        top = rel.split("/", 1)[0]
        entry = out.setdefault(top, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
    return out


# ------------------------------------------------------------------------------------------
# report


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in runs]
    return {
        "median": statistics.median(secs),
        "min": min(secs),
        "max": max(secs),
        "growth": statistics.median(r["rss_growth_mb"] for r in runs),
        "peak": max(r["peak_rss_mb"] for r in runs),
        "warmup": statistics.median(r["warmup_s"] for r in runs),
    }


def main_table(summary: dict[str, dict[int, dict[str, Any]]], sizes: list[int]) -> str:
    rows = [
        "| N (steps before) | method | median s | min-max s | RSS growth MB (median) "
        "| peak RSS MB (max) | t / t(rewrite) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for method in METHODS:
            s = summary[method].get(n)
            if s is None:
                continue
            other = summary["rewrite"].get(n)
            rel = fmt_ratio(s["median"], other and other["median"]) if method != "rewrite" else ""
            rows.append(
                f"| {n} | {method} | {s['median']:.2f} | {s['min']:.2f}-{s['max']:.2f} "
                f"| {s['growth']:.0f} | {s['peak']:.0f} | {rel} |"
            )
    return "\n".join(rows)


def growth_lines(summary: dict[str, dict[int, dict[str, Any]]], sizes: list[int]) -> list[str]:
    lo, hi = sizes[0], sizes[-1]
    out = []
    for method in METHODS:
        a, b = summary[method].get(lo), summary[method].get(hi)
        if a and b:
            out.append(
                f"* {method}: t({hi}) / t({lo}) = {fmt_ratio(b['median'], a['median'])} "
                f"({b['median']:.2f} s / {a['median']:.2f} s); RSS growth {a['growth']:.0f} -> "
                f"{b['growth']:.0f} MB"
            )
    for method in INCREMENTAL:
        for n in sizes:
            a, b = summary[method].get(n), summary["rewrite"].get(n)
            if a and b:
                out.append(
                    f"* N = {n}: {method} / rewrite = {fmt_ratio(a['median'], b['median'])} "
                    f"(rewrite / {method} = {fmt_ratio(b['median'], a['median'], 1)}x)"
                )
    return out


def diagnostics_table(
    builds: dict[str, Any], runs: dict[str, dict[int, list[dict]]], sizes: list[int]
) -> str:
    rows = [
        "| N | base build s | ledger attr KB (after append) | read_state ms "
        "| open_cube + time ms | json.dumps(ledger) ms | append adds: chunks | manifests "
        "| snapshots | transactions |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        s2c = runs["stac2cube"].get(n, [])
        if not s2c:
            continue
        st = s2c[-1]["state"]
        added = s2c[-1].get("added", {})

        def cell(top: str, added=added) -> str:
            e = added.get(top)
            return f"{e['files']} files, {e['bytes'] / 1024:.1f} KB" if e else "-"

        rows.append(
            f"| {n} | {builds[str(n)]['seconds']:.1f} | {st['ledger_bytes'] / 1024:.1f} "
            f"| {1000 * statistics.median(r['state']['read_state_s'] for r in s2c):.1f} "
            f"| {1000 * statistics.median(r['state']['open_cube_s'] for r in s2c):.1f} "
            f"| {1000 * statistics.median(r['state']['ledger_dumps_s'] for r in s2c):.2f} "
            f"| {cell('chunks')} | {cell('manifests')} | {cell('snapshots')} "
            f"| {cell('transactions')} |"
        )
    return "\n".join(rows)


def task_table(runs: dict[str, dict[int, list[dict]]], sizes: list[int], method: str) -> str:
    per_n = {n: [r for r in runs[method].get(n, []) if "tasks" in r] for n in sizes}
    names = list(dict.fromkeys(t for rs in per_n.values() for r in rs for t in r["tasks"]))
    if not names:
        return "(Prefect task run times unavailable)"
    head = (
        f"| {method}: task (Prefect run time, median s) | "
        + " | ".join(f"N = {n}" for n in sizes)
        + " |"
    )
    rows = [head, "|---|" + "---:|" * len(sizes)]

    def med(n: int, fn) -> str:
        values = [fn(r) for r in per_n[n]]
        return f"{statistics.median(values):.3f}" if values else "-"

    for name in names:
        rows.append(
            f"| {name} | "
            + " | ".join(med(n, lambda r, k=name: r["tasks"].get(k, 0.0)) for n in sizes)
            + " |"
        )
    rows.append(
        "| flow body outside tasks + Prefect overhead | "
        + " | ".join(med(n, lambda r: r["seconds"] - sum(r["tasks"].values())) for n in sizes)
        + " |"
    )
    rows.append(
        "| whole append call | " + " | ".join(med(n, lambda r: r["seconds"]) for n in sizes) + " |"
    )
    return "\n".join(rows)


def ledger_cost_table(cost: dict[str, Any], sizes: list[int]) -> str:
    rows = [
        "| ledger steps | ledger JSON KB | json.loads ms | task(ledger), NO_CACHE (like commit) ms "
        "| task(ledger), default cache policy (like plan) ms | task(quote(ledger)), NO_CACHE ms "
        "| task(quote(ledger)), default cache policy ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, c in sorted(cost.items(), key=lambda kv: int(kv[0])):
        label = n if int(n) in sizes else f"{n} (entries repeated)"
        rows.append(
            f"| {label} | {c['ledger_bytes'] / 1024:.1f} | {c['loads_ms']:.2f} "
            f"| {c['no_cache_ms']:.1f} | {c['default_policy_ms']:.1f} | {c['quoted_ms']:.1f} "
            f"| {c['quoted_default_policy_ms']:.1f} |"
        )
    return "\n".join(rows)


def steady_lines(steady: dict[str, Any], top: int = 15) -> list[str]:
    times = {int(n): t for n, t in steady["times"].items()}
    lo, hi = min(times), max(times)
    med = {n: statistics.median(t) for n, t in times.items()}
    out = [
        f"One warm process, heartbeats off, {len(times[lo])} appends to fresh copies of each "
        "cube, alternating: "
        + "; ".join(
            f"N = {n}: median {med[n]:.3f} s ({' '.join(f'{x:.2f}' for x in times[n])})"
            for n in sorted(times)
        )
        + f"; t({hi}) / t({lo}) = {fmt_ratio(med[hi], med[lo])}.",
        "",
        f"Where the difference comes from (cProfile, main thread only, cumulative s per append; "
        f"the {top} functions that grow most; dask's worker threads are not profiled):",
        "",
        f"| function | N = {lo} | N = {hi} | difference |",
        "|---|---:|---:|---:|",
    ]
    rows = steady["functions"]
    ranked = sorted(
        rows, key=lambda k: rows[k].get(str(hi), 0.0) - rows[k].get(str(lo), 0.0), reverse=True
    )
    for name in ranked[:top]:
        a, b = rows[name].get(str(lo), 0.0), rows[name].get(str(hi), 0.0)
        out.append(f"| `{name}` | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    return out


def tree_state() -> str:
    """The git commit measured and whether the working tree differed from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    import hashlib

    head = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    if not changed:
        return f"git {head}, clean"
    digest = hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()[:12]
    return (
        f"git {head} plus uncommitted changes to {len(changed)} tracked files "
        f"(`git diff HEAD | sha256sum` starts {digest})"
    )


# ------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Methods: stac2cube (incremental append), stac2cube-nohb (the same with "
        "Prefect flow run heartbeats off), rewrite (open_cube + concat + to_zarr of everything).",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10, 50, 200],
        help="cube lengths N (time steps before the append) to measure (default 10 50 200)",
    )
    parser.add_argument(
        "--bands",
        type=int,
        default=2,
        choices=range(1, len(TEN_M_BANDS) + 1),
        help=f"number of 10 m bands, taken from {' '.join(TEN_M_BANDS)} (default 2)",
    )
    parser.add_argument(
        "--px", type=int, default=512, help="cube width and height in 10 m pixels (default 512)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per method and N; medians reported (3)"
    )
    parser.add_argument(
        "--extrapolate",
        type=int,
        default=3650,
        help="also time the ledger diagnostics for a ledger of this many steps, made by "
        "repeating the longest cube's entries (default 3650: ten years of daily steps)",
    )
    parser.add_argument(
        "--steady",
        type=int,
        default=5,
        help="appends per cube in the one-process steady-state run of the shortest and longest "
        "cube, plus 2 profiled ones (default 5; 0 skips it)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="catalog, cubes and logs (git-ignored default bench/out/append; emptied first)",
    )
    add_common_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker[0], Path(args.worker[1]), WORKERS, IMPORTS)
        return 0
    sizes = sorted(set(args.sizes))
    if sizes[0] < 1 or args.px < 8 or args.repeat < 1:
        parser.error("--sizes must be >= 1, --px >= 8 and --repeat >= 1")
    command = ".venv/bin/python bench/append.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    started = dt.datetime.now().astimezone()
    machine_line = machine()
    report = benchmark(args, sizes, command.strip(), machine_line, started)
    publish(report, RESULTS, write=not args.no_results)
    return 0


def benchmark(args, sizes: list[int], command: str, machine_line: str, started) -> str:
    base = args.workdir.resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    bands = TEN_M_BANDS[: args.bands]
    size = tile_size(args.px)
    n_scenes = sizes[-1] + 1
    t_all = time.perf_counter()
    tree = tree_state()

    catalog, catalog_s, cog_bytes = write_scenes_timed(base / "catalog", n_scenes, size, bands)
    bounds, epsg = grid_bounds(args.px)
    bbox, grid = checked_bbox(bounds, epsg)
    data_line = (
        f"{n_scenes} scenes (one a day from {day(0)}) x {len(bands)} bands ({' '.join(bands)}) "
        f"x {size}x{size} px deflate COGs ({cog_bytes / 1e6:.0f} MB), written in "
        f"{catalog_s:.1f} s; cube grid {grid.shape[0]}x{grid.shape[1]} px at 10 m, EPSG:{epsg}, "
        f"chunks (1, 512, 512): {len(bands) * grid.shape[0] * grid.shape[1] * 2 / 2**20:.1f} MiB "
        f"of uint16 per time step"
    )
    print(f"catalog: {data_line}")

    env = worker_env(base / "prefect-home", log_level="WARNING")
    with start_api(catalog) as api:
        job = {"url": api.url, "bbox": bbox, "epsg": epsg, "bands": bands}
        init = run_worker("prefect-init", job, env, base / "logs")
        print(f"Prefect database initialised ({init['seconds']:.1f} s)")

        cubes = {str(n): str(base / "cubes" / f"n{n}.icechunk") for n in sizes}
        ends = {str(n): day(n - 1).isoformat() for n in sizes}
        t0 = time.perf_counter()
        built = run_worker(
            "build",
            {**job, "cubes": cubes, "ends": ends, "extrapolate": args.extrapolate},
            env,
            base / "logs",
        )
        builds = built["builds"]
        for n in sizes:
            b = builds[str(n)]
            print(f"base cube N = {n}: built in {b['seconds']:.1f} s")
        build_total = time.perf_counter() - t0

        runs: dict[str, dict[int, list[dict]]] = {m: {} for m in METHODS}
        for r in range(args.repeat):
            for n in sizes:
                for method in METHODS:
                    work = base / "runs" / f"{method}-n{n}-r{r}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir(parents=True)
                    if method in INCREMENTAL:
                        store = work / "cube.icechunk"
                        shutil.copytree(cubes[str(n)], store)
                        before = file_sizes(store)
                        res = run_worker(method, {**job, "store": str(store), "n": n}, env, work)
                        res["added"] = added_bytes(before, store)
                    else:
                        out = work / "rewrite.zarr"
                        res = run_worker(
                            method,
                            {**job, "base_cube": cubes[str(n)], "out": str(out), "n": n},
                            env,
                            work,
                        )
                        res["written_bytes"] = sum(file_sizes(out).values())
                    remove_subdirs(work)  # free the disk; logs stay
                    runs[method].setdefault(n, []).append(res)
                    print(
                        f"repeat {r + 1}/{args.repeat} N = {n:>4} {method:<14} "
                        f"{res['seconds']:6.2f} s  RSS +{res['rss_growth_mb']:.0f} MB "
                        f"(peak {res['peak_rss_mb']:.0f} MB)"
                    )

        steady = None
        if args.steady and len(sizes) > 1:
            t0 = time.perf_counter()
            steady_work = base / "runs" / "steady"
            steady_work.mkdir(parents=True)
            steady = run_worker(
                "steady",
                {
                    **job,
                    "cubes": {str(k): cubes[str(k)] for k in (sizes[0], sizes[-1])},
                    "reps": args.steady,
                    "profiled": 2,
                    "work": str(steady_work),
                    "repo": str(HERE.parent),
                },
                env,
                steady_work,
            )
            print(f"steady-state appends in one process: {time.perf_counter() - t0:.0f} s")

    # both methods must have written the same new step
    for n in sizes:
        got = {(m, res["steps"], res["checksum"]) for m in METHODS for res in runs[m].get(n, [])}
        if len({(s, c) for _, s, c in got}) != 1 or next(iter(got))[1] != n + 1:
            raise SystemExit(f"N = {n}: the methods disagree on the appended cube: {sorted(got)}")

    summary = {m: {n: summarise(rs) for n, rs in runs[m].items()} for m in METHODS}
    total_s = time.perf_counter() - t_all
    written = {n: statistics.median(r["written_bytes"] for r in runs["rewrite"][n]) for n in sizes}
    lines = [
        "# Appending one time step: stac2cube vs. rewriting the cube",
        "",
        f"Run {started:%Y-%m-%d %H:%M %Z} on {machine_line}.",
        "",
        f"Command: `{command}` (whole run {total_s / 60:.1f} min: catalog {catalog_s:.0f} s, "
        f"base cubes {build_total:.0f} s, measurements the rest).",
        "",
        f"Data: {data_line}. Local STAC API (PostgreSQL + pgstac + stac-fastapi-pgstac on "
        "127.0.0.1). Base cubes of N steps (days 0..N-1) built once with `get_stac_layers`, one "
        "commit each; every stac2cube repeat appends day N to a fresh `copytree` copy.",
        "",
        f"Versions: {versions(VERSIONED)}; tree measured: {tree}"
        + ("." if tree == tree_state() else " (it changed during the run!)."),
        "",
        "Each cell: a fresh subprocess per (method, N, repeat), the append call alone timed "
        "(after imports and a warm-up: Prefect's ephemeral server is running, the catalog was "
        "searched once); RSS growth = peak RSS sampled every 10 ms during the call minus RSS just "
        "before it; peak RSS = `ru_maxrss` of the whole worker (imports and warm-up included; "
        "the Prefect server is a separate process, not counted). Medians over "
        f"{args.repeat} repeats. Both methods were checked to produce N + 1 steps with the same "
        "stored integers in the new step. `stac2cube-nohb` is `stac2cube` with Prefect's flow run "
        "heartbeats off (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` None instead of Prefect 3.8's "
        "default 180 s): with them on, the flow waits on exit for its heartbeat thread, which "
        "sleeps in whole seconds, so every flow call rounds up to about a whole second.",
        "",
        main_table(summary, sizes),
        "",
        "Growth with cube length and speed-up:",
        "",
        *growth_lines(summary, sizes),
        "",
        "Bytes the rewrite baseline writes per append (Zarr v3 directory, all steps): "
        + ", ".join(f"N = {n}: {written[n] / 2**20:.1f} MiB" for n in sizes)
        + ".",
        "",
        "### What grows with N inside the stac2cube append",
        "",
        "Measured on the appended cube (N + 1 steps) after the timed call; `append adds` is what "
        "the one append commit added to the icechunk repository (new or changed files).",
        "",
        diagnostics_table(builds, runs, sizes),
        "",
        f"Chunk shapes of the 1-D arrays along time in the appended N = {sizes[-1]} cube: "
        + ", ".join(
            f"`{k}` {tuple(v)}"
            for k, v in runs["stac2cube"][sizes[-1]][-1]["state"]["coord_chunks"].items()
        )
        + ".",
        "",
        *(
            [
                "### Steady state: the same appends in one warm process",
                "",
                *steady_lines(steady),
                "",
            ]
            if steady
            else []
        ),
        task_table(runs, sizes, "stac2cube"),
        "",
        task_table(runs, sizes, "stac2cube-nohb"),
        "",
        "Cost of handing the ledger to one Prefect task inside a running flow, plain and wrapped "
        "in `prefect.utilities.annotations.quote` (`flows/build.py` hands it to `plan` and "
        "`commit`; median of 5 calls of a trivial task):",
        "",
        ledger_cost_table(built["ledger_cost"], sizes),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
