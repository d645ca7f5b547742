"""Benchmark: build one Sentinel-2 L2A cube with stac2cube, plain stackstac -> Zarr, raw rasterio.

Run (from the repository root; about 3-4 minutes on 2 cores with the defaults)::

    .venv/bin/python bench/build_cube.py                       # 20 scenes, 1020 px, 3 repeats
    .venv/bin/python bench/build_cube.py --scenes 5 --size 510 --repeat 1   # quick smoke run

The large case (one full Sentinel-2 tile, 6 dates; ~25 minutes on 2 cores, ~4 GB of COGs)::

    .venv/bin/python bench/build_cube.py --scenes 6 --size 10980 --repeat 1 \
        --methods rasterio-threads,stackstac-zarr,stac2cube-cli-b1,stac2cube-cli-b8,stac2cube-cli-b32 \
        --results bench/RESULTS_large.md

``--size`` is rounded down to a multiple of 6 (the synthetic writer also writes 60 m bands in
its tile geometry), so ``--size 1024`` runs with 1020 px: two 512 px chunks per axis.

What it does:

1. Writes a synthetic ``sentinel-2-c1-l2a`` catalog with :mod:`stac2cube.testing.synthetic`: one
   tile (``TILE_A``, UTM 32N), ``--scenes`` acquisitions one day apart (so as many time steps),
   bands B02 B03 B04 B08 (all 10 m) of ``--size`` x ``--size`` px, as deflate COGs.
2. Serves it from a real local STAC API (PostgreSQL + pgstac + stac-fastapi-pgstac,
   :func:`stac2cube.testing.pgstac.start_local_stac_api`).
3. Builds the same cube, the full tile extent at 10 m in EPSG:32632, with each method, each run
   in a fresh subprocess (so the peak RSS, ``ru_maxrss``, is that method's alone):

   ``rasterio``            floor: open every COG, read band 1 into one preallocated numpy array,
                           one thread; nothing written.
   ``rasterio-threads``    the same with one reader thread per core (dask's parallelism).
   ``stackstac-zarr``      baseline: pystac-client search, ``stackstac.stack`` (uint16,
                           ``rescale=False``, chunks 512), ``to_zarr`` (Zarr v3 directory store)
                           on dask's default threaded scheduler.
   ``stackstac-icechunk``  the baseline written to an icechunk repository and committed: the
                           store cost alone, without stac2cube's processing.
   ``stac2cube-flow``      ``get_stac_layers(...)``, the first flow call of the process: includes
                           Prefect's ephemeral API server start-up.
   ``stac2cube-warm``      the same call after an untimed warm-up build of a small area in the
                           same process (Prefect server running, modules imported).
   ``stac2cube-stages``    stac2cube's pure stage functions without Prefect, timed per stage
                           (the profile in RESULTS.md).
   ``stac2cube-threads``   the warm call on Prefect's thread pool and dask's threaded
                           scheduler (the ``threads`` runner, the default outside SLURM).
   ``stac2cube-local``     the warm call on a ``LocalCluster`` of threads (``--runner local``).
   ``stac2cube-processes`` the warm call on a ``LocalCluster`` of 2 worker processes.
   ``stac2cube-cli``       ``stac2cube build`` in a child process, end to end (``-b1``, ``-b8``,
                           ``-b32``: ``--batch-size``; ``-local``: ``--runner local``).

   The time reported is the wall time of the work itself, after imports (imports are listed
   separately). Every method reads the COGs from the page cache: this measures CPU, not disk.
4. Prints a Markdown table (median over ``--repeat`` runs, peak RSS, ratios to the floor and to
   the baseline) and writes ``bench/RESULTS.md`` (the interpretation section is kept from the
   previous file: edit it by hand after a run).

Timing is never part of the pytest suite; this script is run by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from _common import (
    COLLECTION,
    FIRST_DAY,
    add_common_arguments,
    bbox_for_bounds,
    checked_bbox,
    cube_store,
    effective_size,
    flow_kwargs,
    fmt_ratio,
    machine,
    plain_stack,
    prefect_init,
    publish,
    remove_subdirs,
    run_worker,
    start_api,
    task_profile,
    tile_bounds,
    uint_sum,
    versions,
    worker_env,
    worker_main,
    write_scenes_timed,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BANDS = ["B02", "B03", "B04", "B08"]
#: Earth Search asset keys of BANDS (what plain stackstac is given)
ASSETS = ["blue", "green", "red", "nir"]
METHODS = [
    "rasterio",
    "rasterio-threads",
    "stackstac-zarr",
    "stackstac-icechunk",
    "stac2cube-flow",
    "stac2cube-warm",
    "stac2cube-stages",
    "stac2cube-threads",
    "stac2cube-local",
    "stac2cube-processes",
    "stac2cube-cli",
    "stac2cube-cli-b1",
    "stac2cube-cli-b8",
    "stac2cube-cli-b32",
    "stac2cube-cli-local",
    "stac2cube-cli-local-b1",
]
FLOOR, BASELINE = "rasterio-threads", "stackstac-zarr"


# ------------------------------------------------------------------------------------------
# measurement helpers (run in the worker subprocess)


@contextmanager
def timed(stages: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``stages[name]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0


class TreeRss:
    """Samples the summed RSS of this process and all its descendants (Dask worker processes,
    a CLI child) every ``interval`` seconds in a thread; ``peak_mb`` is the largest sum."""

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            with suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def zarr_checksum(store, var: str) -> tuple[list[int], int]:
    """Shape of ``var`` (time, y, x) and the sum of its first time step's stored integers."""
    import zarr

    array = zarr.open_group(store, mode="r")[var]
    return list(array.shape), uint_sum(array[0])


# ------------------------------------------------------------------------------------------
# the methods (each runs in a fresh worker subprocess)


def run_rasterio(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """Floor: read band 1 of every COG (the grid's window) into one uint16 array."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import rasterio
    from rasterio.windows import from_bounds

    paths = job["cogs"]  # [time][band]
    height, width = job["shape"]
    cube = np.zeros((len(paths), len(BANDS), height, width), "uint16")

    def read(tb: tuple[int, int]) -> None:
        t, b = tb
        with rasterio.open(paths[t][b]) as src:
            window = from_bounds(*job["bounds"], transform=src.transform)
            src.read(1, window=window, out=cube[t, b])

    jobs = [(t, b) for t in range(len(paths)) for b in range(len(BANDS))]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, jobs))
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "shape": list(cube.shape),
        "checksum": uint_sum(cube[0, BANDS.index("B04")]),
    }


def stackstac_cube(job: dict[str, Any]):
    """pystac-client search + plain ``stackstac.stack`` -> ``(time, band, y, x)`` Dataset."""
    period = f"{job['start']}/{job['end']}T23:59:59Z"
    data = plain_stack(job, COLLECTION, ASSETS, period)
    data = data.drop_vars([n for n, c in data.coords.items() if c.dtype == object])
    data.attrs = {}  # stackstac's RasterSpec / Affine are not JSON attributes
    return data.to_dataset("band")


def run_stackstac(job: dict[str, Any], writer: Callable[[Path], Callable]) -> dict[str, Any]:
    """Search and stack (:func:`stackstac_cube`) and write the Dataset, timed together.

    ``writer(work)`` imports what it needs (before the clock starts) and returns the writing
    function; that returns a function giving the written zarr store, to check the result after
    the clock stops.
    """
    write = writer(Path(job["work"]))
    t0 = time.perf_counter()
    with TreeRss() as tree:
        written = write(stackstac_cube(job))
    seconds = time.perf_counter() - t0
    shape, checksum = zarr_checksum(written(), "red")
    return {"seconds": seconds, "shape": shape, "checksum": checksum, "tree_rss_mb": tree.peak_mb}


def zarr_writer(work: Path) -> Callable:
    """Baseline: ``to_zarr`` (Zarr v3 directory store, threaded dask)."""
    import warnings

    store = work / "stackstac.zarr"

    def write(ds) -> Callable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata is not part of the v3 spec
            ds.to_zarr(store, mode="w", zarr_format=3)
        return lambda: str(store)

    return write


def icechunk_writer(work: Path) -> Callable:
    """The baseline's array written to a new icechunk repository and committed."""
    import icechunk
    from icechunk.xarray import to_icechunk

    store = work / "stackstac.icechunk"

    def write(ds) -> Callable:
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(store)))
        session = repo.writable_session("main")
        to_icechunk(ds, session, mode="w")
        session.commit("bench")
        return lambda: repo.readonly_session("main").store

    return write


def cube_checksum(store: Path) -> tuple[list[int], int]:
    """:func:`zarr_checksum` of B04 in the stac2cube cube at ``store``."""
    return zarr_checksum(cube_store(store), "B04")


def run_stac2cube_flow(job: dict[str, Any], warm: bool) -> dict[str, Any]:
    """``get_stac_layers``; with ``warm``, after an untimed build of a small area."""
    from stac2cube import get_stac_layers

    work = Path(job["work"])
    result: dict[str, Any] = {}
    if warm:
        t0 = time.perf_counter()
        get_stac_layers(**flow_kwargs(job, work / "warmup.icechunk", bbox=job["small_bbox"]))
        result["warmup_seconds"] = time.perf_counter() - t0
    store = work / "stac2cube.icechunk"
    t0 = time.perf_counter()
    with TreeRss() as tree:
        state = get_stac_layers(**flow_kwargs(job, store), return_state=True)
    result["seconds"] = time.perf_counter() - t0
    result["tree_rss_mb"] = tree.peak_mb
    state.result()  # raises if the flow failed
    if warm:
        result.update(task_profile(state))
    result["shape"], result["checksum"] = cube_checksum(store)
    return result


def run_stac2cube_runner(job: dict[str, Any], runner: str) -> dict[str, Any]:
    """The warm flow (after an untimed small build) on another task runner: ``threads`` (no
    Dask cluster: Prefect's thread pool, dask's local threaded scheduler), ``local`` (a
    ``LocalCluster`` of threads) or ``processes`` (a ``LocalCluster`` of 2 single-threaded
    worker processes that write through the run's fork).
    """
    from stac2cube import get_stac_layers
    from stac2cube.blocks import DaskCluster
    from stac2cube.flows.runner import task_runner_for

    if runner in ("threads", "local"):
        task_runner = task_runner_for(runner)
    else:
        block = DaskCluster(kind="local", local_processes=True, n_workers=2, threads_per_worker=1)
        task_runner = task_runner_for("local", block)
    flow = get_stac_layers.with_options(task_runner=task_runner)
    work = Path(job["work"])
    t0 = time.perf_counter()
    flow(**flow_kwargs(job, work / "warmup.icechunk", bbox=job["small_bbox"]))
    result: dict[str, Any] = {"warmup_seconds": time.perf_counter() - t0}
    store = work / "stac2cube.icechunk"
    t0 = time.perf_counter()
    with TreeRss() as tree:
        flow(**flow_kwargs(job, store))
    result["seconds"] = time.perf_counter() - t0
    result["tree_rss_mb"] = tree.peak_mb
    result["shape"], result["checksum"] = cube_checksum(store)
    return result


def run_stac2cube_cli(
    job: dict[str, Any], batch_size: int | None = None, runner: str | None = None
) -> dict[str, Any]:
    """``stac2cube build`` end to end in a child process (its own Prefect start-up, imports and
    all), with ``--batch-size`` and ``--runner`` if given; the time is the child's wall time,
    the peak RSS the summed RSS of the child and its descendants."""
    import resource
    import subprocess

    kw = flow_kwargs(job, Path(job["work"]) / "cli.icechunk")
    argv = [sys.executable, "-m", "stac2cube.cli", "build", "--mission", kw["mission"]]
    argv += ["--bbox", *map(str, kw["bbox"]), "--start", kw["start"][:10]]
    argv += ["--end", kw["end"][:10], "--catalog", kw["catalog"], "--collection"]
    argv += [kw["collection"], "--bands", *kw["bands"], "--crs", kw["crs"], "--store", kw["store"]]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    if runner is not None:
        argv += ["--runner", runner]
    t0 = time.perf_counter()
    with TreeRss() as tree:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"stac2cube build failed: {proc.stderr[-2000:]}")
    shape, checksum = cube_checksum(Path(kw["store"]))
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "shape": shape, "checksum": checksum, "child_rss_mb": child_rss,
            "tree_rss_mb": tree.peak_mb, "stderr_lines": len(proc.stderr.splitlines())}  # fmt: skip


def run_stac2cube_stages(job: dict[str, Any]) -> dict[str, Any]:
    """stac2cube's stage functions in flow order, without Prefect, timed per stage.

    Mirrors ``flows.build.write_plan`` for a new cube (no staging directory, no lock). Reading,
    radiometry, mosaic and writing stream together chunk by chunk, so they are timed as one
    stage; a second, untimed-in-total read of the raw stacks gives the read share.
    """
    import dask

    from stac2cube import __version__
    from stac2cube.dataset import build_dataset
    from stac2cube.load import load_raw
    from stac2cube.plan import plan_changes, stamp_ledger
    from stac2cube.request import make_request
    from stac2cube.search import search_items
    from stac2cube.spec import DEFAULT_BATCH_SIZE
    from stac2cube.steps import deduplicate, group_by_solar_day
    from stac2cube.store import open_repo, steps_per_batch, write_metadata, write_time_steps

    kw = flow_kwargs(job, Path(job["work"]) / "stages.icechunk")
    store = Path(kw.pop("store"))
    stages: dict[str, float] = {}
    tree = TreeRss().__enter__()
    t0 = time.perf_counter()
    with timed(stages, "request"):
        request = make_request(**kw)
    with timed(stages, "search"):
        items = search_items(request)
    with timed(stages, "group + plan"):
        kept, _ = deduplicate(items)
        plan = plan_changes(group_by_solar_day(kept), [])
        batch_size = steps_per_batch(DEFAULT_BATCH_SIZE, request.grid.shape, len(request.bands))
    with timed(stages, "open store"):
        session = open_repo(store, create=True).writable_session("main")
    entries: list[dict] = []
    steps = plan.steps
    for k in range(0, len(steps), batch_size):
        batch = steps[k : k + batch_size]
        with timed(stages, "load (lazy)"):
            raw = load_raw(request, [i for s in batch for i in s.items])
        with timed(stages, "preprocess (lazy)"):
            ds, batch_entries = build_dataset(request, batch, raw, integers=True)
            stamp_ledger(batch_entries, batch)
            entries.extend(batch_entries)
        with timed(stages, "read + radiometry + mosaic + write (streamed by chunk)"):
            write_time_steps(session, ds, first=k == 0, batch_size=batch_size)
    with timed(stages, "commit"):
        write_metadata(session, request=request.describe(), ledger=entries, version=__version__)
        session.commit("bench")
    seconds = time.perf_counter() - t0
    tree.__exit__(None, None, None)
    # not part of the total: the raw read alone, to split the compute stage
    t1 = time.perf_counter()
    for k in range(0, len(steps), batch_size):
        raw = load_raw(request, [i for s in steps[k : k + batch_size] for i in s.items])
        dask.compute(*raw.values())
    stages["(extra, not in total) raw read of the same stacks"] = time.perf_counter() - t1
    shape, checksum = cube_checksum(store)
    return {"seconds": seconds, "stages": stages, "shape": shape, "checksum": checksum,
            "tree_rss_mb": tree.peak_mb}  # fmt: skip


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "rasterio": lambda job: run_rasterio(job, threads=1),
    "rasterio-threads": lambda job: run_rasterio(job, threads=os.cpu_count() or 1),
    "stackstac-zarr": lambda job: run_stackstac(job, zarr_writer),
    "stackstac-icechunk": lambda job: run_stackstac(job, icechunk_writer),
    "stac2cube-flow": lambda job: run_stac2cube_flow(job, warm=False),
    "stac2cube-warm": lambda job: run_stac2cube_flow(job, warm=True),
    "stac2cube-stages": run_stac2cube_stages,
    "stac2cube-threads": lambda job: run_stac2cube_runner(job, "threads"),
    "stac2cube-local": lambda job: run_stac2cube_runner(job, "local"),
    "stac2cube-processes": lambda job: run_stac2cube_runner(job, "processes"),
    "stac2cube-cli": run_stac2cube_cli,
    "stac2cube-cli-b1": lambda job: run_stac2cube_cli(job, 1),
    "stac2cube-cli-b8": lambda job: run_stac2cube_cli(job, 8),
    "stac2cube-cli-b32": lambda job: run_stac2cube_cli(job, 32),
    "stac2cube-cli-local": lambda job: run_stac2cube_cli(job, runner="local"),
    "stac2cube-cli-local-b1": lambda job: run_stac2cube_cli(job, 1, runner="local"),
    "prefect-init": prefect_init,
}

#: modules each worker imports before the clock starts (their import time is reported apart)
IMPORTS: dict[str, list[str]] = {
    "rasterio": ["numpy", "rasterio"],
    "rasterio-threads": ["numpy", "rasterio"],
    "stackstac-zarr": ["numpy", "xarray", "zarr", "dask.array", "stackstac", "pystac_client"],
    "stackstac-icechunk": ["xarray", "icechunk", "stackstac", "pystac_client"],
    "stac2cube-flow": ["stac2cube", "stac2cube.tasks.load", "icechunk", "stackstac"],
    "stac2cube-warm": ["stac2cube", "stac2cube.tasks.load", "icechunk", "stackstac"],
    "stac2cube-stages": ["stac2cube", "stac2cube.tasks.load", "icechunk", "stackstac"],
    "stac2cube-threads": ["stac2cube", "stac2cube.tasks.load", "icechunk", "stackstac"],
    "stac2cube-processes": ["stac2cube", "stac2cube.tasks.load", "icechunk", "stackstac"],
    "stac2cube-local": ["stac2cube", "stac2cube.tasks.load", "icechunk", "stackstac"],
    "stac2cube-cli": ["stac2cube"],
    "stac2cube-cli-b1": ["stac2cube"],
    "stac2cube-cli-b8": ["stac2cube"],
    "stac2cube-cli-b32": ["stac2cube"],
    "stac2cube-cli-local": ["stac2cube"],
    "stac2cube-cli-local-b1": ["stac2cube"],
    "prefect-init": ["prefect"],
}


# ------------------------------------------------------------------------------------------
# orchestration


def run_method(method: str, job: dict[str, Any], env: dict[str, str], tag: str) -> dict:
    """Run ``method`` in a fresh worker in the new folder ``runs/TAG``; return its result.

    The cubes it wrote are removed once measured (its job file, result and log stay).
    """
    work = Path(job["base"]) / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result = run_worker(method, {**job, "work": str(work)}, env, work)
    remove_subdirs(work)  # free the disk
    return result


def summarise(results: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    out = {}
    for method, runs in results.items():
        secs = [r["seconds"] for r in runs]
        out[method] = {
            "median": statistics.median(secs),
            "min": min(secs),
            "max": max(secs),
            # the work's own peak: sampled over the process tree during the work where measured
            # (the check of the result afterwards, e.g. a checksum, must not count), else the
            # worker's ru_maxrss
            "rss": max(r.get("tree_rss_mb") or r["peak_rss_mb"] for r in runs),
            "imports": statistics.median(r["import_seconds"] for r in runs),
            "shape": runs[0]["shape"],
            "checksum": runs[0]["checksum"],
        }
    return out


def table(summary: dict[str, dict[str, Any]], pixels: int) -> str:
    """The results table; ``pixels``: pixels read (scenes x bands x size^2), for Mpix/s."""
    floor = summary.get(FLOOR, {}).get("median")
    base = summary.get(BASELINE, {}).get("median")
    rows = [
        "| method | median s | min-max s | Mpix/s | x floor | x stackstac->zarr | peak RSS MB "
        "| imports s | output shape | B04[t0] sum |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for method, s in summary.items():
        rows.append(
            f"| {method} | {s['median']:.2f} | {s['min']:.2f}-{s['max']:.2f} "
            f"| {pixels / 1e6 / s['median']:.1f} "
            f"| {fmt_ratio(s['median'], floor)} | {fmt_ratio(s['median'], base)} | {s['rss']:.0f} "
            f"| {s['imports']:.1f} | {'x'.join(map(str, s['shape']))} | {s['checksum']} |"
        )
    return "\n".join(rows)


def stage_table(runs: list[dict], key: str, title: str) -> str:
    names = list(dict.fromkeys(n for r in runs for n in r.get(key, {})))
    if not names:
        return ""
    total = statistics.median(r["seconds"] for r in runs)
    rows = [f"| {title} | median s | share of total |", "|---|---:|---:|"]
    for name in names:
        med = statistics.median(r[key].get(name, 0.0) for r in runs)
        share = "" if name.startswith("(") else f"{100 * med / total:.0f}%"
        rows.append(f"| {name} | {med:.2f} | {share} |")
    rows.append(f"| total ({'flow call' if key == 'tasks' else 'pipeline'}) | {total:.2f} | |")
    return "\n".join(rows)


def derived(summary: dict[str, dict[str, Any]], results: dict[str, list[dict]]) -> list[str]:
    """Differences between methods that say where the time goes (medians; noisy, +-10%)."""
    med = {m: s["median"] for m, s in summary.items()}
    out = []
    if {"stac2cube-flow", "stac2cube-warm"} <= med.keys():
        out.append(
            "Prefect start-up in the first flow call of a process (ephemeral API server): "
            f"{med['stac2cube-flow'] - med['stac2cube-warm']:.1f} s "
            "(`stac2cube-flow` - `stac2cube-warm`)"
        )
    if {"stac2cube-warm", "stac2cube-stages"} <= med.keys():
        out.append(
            "Prefect overhead of a warm flow call (flow and task runs, parameter handling): "
            f"{med['stac2cube-warm'] - med['stac2cube-stages']:.1f} s "
            "(`stac2cube-warm` - `stac2cube-stages`)"
        )
    stage_runs = results.get("stac2cube-stages", [])
    if stage_runs:

        def stage(name: str) -> float:
            return statistics.median(r["stages"].get(name, 0.0) for r in stage_runs)

        raw = stage("(extra, not in total) raw read of the same stacks")
        streamed = stage("read + radiometry + mosaic + write (streamed by chunk)")
        # the pipeline streams read, radiometry, mosaic and write chunk by chunk: compute and
        # store are not timed apart, so what is added on top of the raw read is reported whole
        out.append(
            "radiometry + mosaic (float32) + store (CF encoding float -> uint16, compression, "
            f"icechunk write) on top of the raw read: {streamed - raw:.1f} s "
            f"(streamed read to write {streamed:.1f} s - raw read {raw:.1f} s)"
        )
    if {"stac2cube-stages", BASELINE} <= summary.keys():
        out.append(
            f"peak RSS: stac2cube {summary['stac2cube-stages']['rss']:.0f} MB vs "
            f"stackstac->zarr {summary[BASELINE]['rss']:.0f} MB"
        )
    return [f"* {line}" for line in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Methods: " + ", ".join(METHODS),
    )
    parser.add_argument(
        "--scenes", type=int, default=20, help="acquisitions = time steps (default 20)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=1020,
        help="tile width/height in 10 m px, rounded down to a multiple of 6 (default 1020)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per method; the median is reported (3)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated subset of the methods (default: all)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where catalog and cubes go (default: a temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="the Markdown file the results go to (default bench/RESULTS.md; e.g. "
        "bench/RESULTS_large.md for the full-tile case)",
    )
    add_common_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    if args.worker:
        method = args.worker[0]
        worker_main(method, Path(args.worker[1]), WORKERS, IMPORTS[method])
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {METHODS}")
    size = effective_size(args.size)
    if size != args.size:
        print(f"note: --size {args.size} is not a multiple of 6; using {size}")
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    command = f"{python} bench/build_cube.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    base = args.workdir or Path(tempfile.mkdtemp(prefix="stac2cube-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now().astimezone()
    machine_line = machine()
    try:
        report = benchmark(args, methods, size, base, command.strip(), machine_line, started)
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    publish(report, args.results, write=not args.no_results)
    return 0


def benchmark(args, methods, size, base, command, machine_line, started) -> str:
    catalog, catalog_s, cog_bytes = write_scenes_timed(base / "catalog", args.scenes, size, BANDS)
    bounds, epsg = tile_bounds(size)
    bbox, grid = checked_bbox(bounds, epsg)
    x0, _, _, y1 = bounds
    small = bbox_for_bounds((x0 + 600, y1 - 1200, x0 + 1200, y1 - 600), epsg)
    days = [FIRST_DAY + dt.timedelta(days=k) for k in range(args.scenes)]
    cogs = [
        [str(base / "catalog" / "cogs" / COLLECTION / s.id / f"{b}.tif") for b in BANDS]
        for s in catalog.scenes
    ]
    print(
        f"catalog: {args.scenes} scenes x {len(BANDS)} bands x {size}x{size} px "
        f"({cog_bytes / 1e6:.0f} MB of COGs) written in {catalog_s:.1f} s; grid {grid.shape} "
        f"EPSG:{epsg} bounds {grid.bounds}; bbox {bbox}"
    )

    env = worker_env(base / "prefect-home")
    api = start_api(catalog)
    job = {
        "base": str(base / "runs"),
        "url": api.url,
        "bbox": bbox,
        "small_bbox": small,
        "bands": BANDS,
        "bounds": list(grid.bounds),
        "shape": list(grid.shape),
        "epsg": epsg,
        "start": days[0].isoformat(),
        "end": days[-1].isoformat(),
        "cogs": cogs,
    }
    results: dict[str, list[dict]] = {m: [] for m in methods}
    try:
        if any(m.startswith("stac2cube-") for m in methods):
            init = run_method("prefect-init", job, env, "prefect-init")
            print(f"Prefect home initialised ({init['seconds']:.1f} s, untimed)")
        for r in range(args.repeat):  # interleaved, so that machine noise hits every method
            for method in methods:
                res = run_method(method, job, env, f"{method}-{r}")
                results[method].append(res)
                print(
                    f"  run {r + 1}/{args.repeat} {method:20s} {res['seconds']:7.2f} s  "
                    f"peak RSS {res['peak_rss_mb']:6.0f} MB  shape {res['shape']}",
                    flush=True,
                )
    finally:
        api.stop()

    summary = summarise(results)
    raw_mb = args.scenes * len(BANDS) * size * size * 2 / 1e6
    lines = [
        "# Benchmark: building a cube (bench/build_cube.py)",
        "",
        f"* date: {started:%Y-%m-%d %H:%M %Z}",
        f"* machine: {machine_line}",
        f"* versions: {versions()}",
        f"* data: {args.scenes} Sentinel-2 L2A scenes (Earth Search Collection-1 style, one tile, "
        f"one per day = {args.scenes} time steps) x {len(BANDS)} bands ({' '.join(BANDS)}, 10 m) "
        f"x {size} x {size} px, deflate COGs with 256 px tiles: {cog_bytes / 1e6:.0f} MB on disk, "
        f"{raw_mb:.0f} MB as uint16; served by a local stac-fastapi-pgstac",
        f"* grid: the full tile, EPSG:{epsg}, 10 m, bounds {list(grid.bounds)}, "
        f"{grid.shape[0]} x {grid.shape[1]} px; stac2cube bbox (WGS 84) {bbox}",
        f"* command: `{command}` ({args.repeat} runs per method, interleaved, each in a fresh "
        "subprocess; times are medians of the work after imports; peak RSS is the max over runs)",
        "",
        table(summary, args.scenes * len(BANDS) * size * size),
        "",
        f"Ratios use the medians; floor = `{FLOOR}`, baseline = `{BASELINE}`. "
        "`B04[t0] sum` is the sum of the stored integers of B04 at the first time step "
        "(equal sums: same pixels, same stored values).",
    ]
    notes = derived(summary, results)
    if notes:
        lines += ["", "### Derived (differences of medians)", "", *notes]
    stage_runs = results.get("stac2cube-stages", [])
    if stage_runs:
        lines += [
            "",
            "### stac2cube stages (pure functions, no Prefect)",
            "",
            stage_table(stage_runs, "stages", "stage"),
        ]
    warm_runs = [r for r in results.get("stac2cube-warm", []) if "tasks" in r]
    if warm_runs:
        lines += [
            "",
            "### stac2cube flow: Prefect task run times (`stac2cube-warm`)",
            "",
            stage_table(warm_runs, "tasks", "task"),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
