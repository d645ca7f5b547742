"""Helpers shared by the benchmark scripts in ``bench/`` (not a benchmark itself).

* catalog and grid: :func:`write_scenes` / :func:`write_scenes_timed` (a synthetic
  ``sentinel-2-c1-l2a`` catalog of tile A), :func:`start_api` (a local STAC API serving it),
  :func:`effective_size`, :func:`grid_bounds` / :func:`tile_bounds`, :func:`bbox_for_bounds` and
  :func:`checked_bbox` (the WGS 84 bbox whose stac2cube grid is exactly the given bounds),
  :func:`flow_kwargs` (the ``get_stac_layers`` call of a worker's job), :func:`plain_stack`
  (plain stackstac on the same grid);
* measuring inside a process: :class:`RssSampler`, :func:`rss_result`, :func:`peak_rss_mb`,
  :func:`uint_sum`, :func:`cube_store`, :func:`task_durations` / :func:`task_profile` (Prefect's per-task run
  times), :func:`prefect_init`;
* worker subprocesses: :func:`worker_env`, :func:`run_worker` (parent side),
  :func:`add_common_arguments` and :func:`worker_main` (child side), :func:`remove_subdirs`;
  :func:`run_measured` (any command, e.g. the ``stac2cube`` CLI: wall time and the peak RSS of
  its whole process tree); :func:`file_sizes` (the files of a store);
* the report: :func:`machine`, :func:`versions`, :func:`fmt_ratio`, :func:`write_results` (keeps
  the previous file's ``## Interpretation`` section) and :func:`publish`.

The scripts import it as ``_common`` (``bench/`` is ``sys.path[0]`` when one of them runs).
Heavy libraries are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

COLLECTION = "sentinel-2-c1-l2a"
FIRST_DAY = dt.date(2024, 6, 1)
INTERPRETATION_START = "## Interpretation"
#: packages named by :func:`versions` unless told otherwise
VERSIONED = ["stac2cube", "stackstac", "xarray", "zarr", "dask", "icechunk", "prefect", "rasterio"]

Bounds = tuple[float, float, float, float]


# ------------------------------------------------------------------------------------------
# catalog and grid


def effective_size(size: int) -> int:
    """``size`` rounded down to a multiple of 6 (the synthetic writer's 60 m pixels need it)."""
    return max(6, size - size % 6)


def write_scenes(
    root: Path,
    n_scenes: int,
    size: int,
    bands: list[str],
    *,
    collection: str = COLLECTION,
    first_day: dt.date = FIRST_DAY,
    days_apart: int = 1,
    scene: Callable[[int], dict[str, Any]] | None = None,
):
    """A synthetic catalog of tile A (:mod:`stac2cube.testing.synthetic`): ``n_scenes`` scenes.

    Scene ``k`` is acquired at 10:30:21 UTC on ``first_day + k * days_apart`` days, from
    Sentinel-2A for even ``k`` and 2B for odd ``k``, with texture seed ``k``, in the Earth Search
    Collection-1 style; ``scene(k)`` may add or override :class:`SceneSpec` fields. Returns what
    ``write_catalog`` returns.
    """
    from stac2cube.testing.synthetic import TILE_A, SceneSpec, write_catalog

    tile, epsg, origin = TILE_A
    scenes = [
        SceneSpec(
            **{
                "tile": tile,
                "epsg": epsg,
                "origin": origin,
                "datetime": dt.datetime.combine(
                    first_day + dt.timedelta(days=k * days_apart),
                    dt.time(10, 30, 21),
                    tzinfo=dt.UTC,
                ),
                "platform": "sentinel-2a" if k % 2 == 0 else "sentinel-2b",
                "style": "earth-search-c1",
                "collection": collection,
                "size": size,
                "seed": k,
                **(scene(k) if scene else {}),
            }
        )
        for k in range(n_scenes)
    ]
    return write_catalog(root, scenes, bands=bands)


def write_scenes_timed(root: Path, *args: Any, **kwargs: Any):
    """:func:`write_scenes`; returns the catalog, the seconds it took and the bytes of its COGs.

    A catalog written before under ``root`` with the same arguments (a kept ``--workdir``) is
    reused: ``root / "catalog.pickle"`` records the arguments, the catalog and the seconds.
    """
    import pickle

    record = root / "catalog.pickle"
    key = repr((args, sorted(kwargs.items())))
    if record.exists() and "scene" not in kwargs:
        saved = pickle.loads(record.read_bytes())
        if saved["key"] == key:
            catalog, seconds = saved["catalog"], saved["seconds"]
            return catalog, seconds, sum(p.stat().st_size for p in root.rglob("*.tif"))
    t0 = time.perf_counter()
    catalog = write_scenes(root, *args, **kwargs)
    seconds = time.perf_counter() - t0
    if "scene" not in kwargs:
        saved = {"key": key, "catalog": catalog, "seconds": seconds}
        record.write_bytes(pickle.dumps(saved))
    return catalog, seconds, sum(p.stat().st_size for p in root.rglob("*.tif"))


def start_api(catalog):
    """Start a local STAC API serving ``catalog`` and print where and how fast.

    The API (:func:`stac2cube.testing.pgstac.start_local_stac_api`) stops with ``.stop()`` or at
    the end of a ``with`` block.
    """
    from stac2cube.testing.pgstac import start_local_stac_api

    t0 = time.perf_counter()
    api = start_local_stac_api(collections=catalog.collections, items=catalog.items)
    print(f"local STAC API at {api.url} (started in {time.perf_counter() - t0:.1f} s)")
    return api


def grid_bounds(px: int, inset_px: int = 2) -> tuple[Bounds, int]:
    """Projected bounds (``px`` x ``px`` at 10 m, ``inset_px`` inside tile A's corner) and EPSG."""
    from stac2cube.testing.synthetic import TILE_A

    _, epsg, (x0, y1) = TILE_A
    left, top = x0 + 10.0 * inset_px, y1 - 10.0 * inset_px
    return (left, top - 10.0 * px, left + 10.0 * px, top), epsg


def tile_bounds(size: int) -> tuple[Bounds, int]:
    """Projected bounds and EPSG code of tile A at ``size`` 10 m pixels (the whole tile)."""
    return grid_bounds(size, inset_px=0)


def bbox_for_bounds(bounds: Bounds, epsg: int) -> list[float]:
    """A WGS 84 bbox whose stac2cube grid (10 m, ``epsg``) is exactly ``bounds``.

    stac2cube projects the bbox's densified outline and snaps its envelope outward to 10 m; this
    solves (Newton, numeric Jacobian) for the bbox whose projected envelope lies 5 m inside each
    edge of ``bounds``, so the grid covers them and nothing beyond.
    """
    import numpy as np
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    to_geo = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    target = np.array(bounds) + np.array([5.0, 5.0, -5.0, -5.0])

    def envelope(b: np.ndarray) -> np.ndarray:
        return np.array(to_utm.transform_bounds(*b, densify_pts=21))

    bbox = np.array(to_geo.transform_bounds(*target, densify_pts=21))
    for _ in range(20):
        err = envelope(bbox) - target
        if np.abs(err).max() < 0.5:
            break
        step = 1e-5
        jac = np.column_stack(
            [(envelope(bbox + step * np.eye(4)[k]) - envelope(bbox)) / step for k in range(4)]
        )
        bbox = bbox - np.linalg.solve(jac, err)
    return [round(float(v), 9) for v in bbox]


def checked_bbox(bounds: Bounds, epsg: int):
    """:func:`bbox_for_bounds` and stac2cube's grid of it; exit if the grid is not ``bounds``."""
    from stac2cube.grid import grid_for_bbox

    bbox = bbox_for_bounds(bounds, epsg)
    grid = grid_for_bbox(tuple(bbox), 10.0, epsg)
    if not all(math.isclose(a, b) for a, b in zip(grid.bounds, bounds, strict=True)):
        raise SystemExit(f"bbox {bbox} gives grid {grid.bounds}, not {bounds}")
    return bbox, grid


def flow_kwargs(
    job: dict[str, Any],
    store: str | Path,
    start: str | None = None,
    end: str | None = None,
    *,
    bbox: list[float] | None = None,
) -> dict[str, Any]:
    """``get_stac_layers`` keywords for the worker's job (its catalog URL, bands, EPSG).

    ``start``, ``end`` and ``bbox`` default to the job's.
    """
    return {
        "mission": "sentinel-2-l2a",
        "bbox": bbox or job["bbox"],
        "start": start or job["start"],
        "end": end or job["end"],
        "catalog": job["url"],
        "collection": COLLECTION,
        "bands": job["bands"],
        "crs": f"EPSG:{job['epsg']}",
        "store": str(store),
    }


def plain_stack(
    job: dict[str, Any], collection: str, assets: list[str], datetime: str | None = None
):
    """What a user writes by hand: pystac-client search, plain ``stackstac.stack``.

    Searches ``collection`` at the job's catalog URL and bbox (and ``datetime`` if given), and
    stacks ``assets`` on the job's grid (``epsg``, ``bounds``, 10 m) as uint16 without rescaling,
    nodata 0, in 512 px chunks: a lazy ``(time, band, y, x)`` DataArray.
    """
    import numpy as np
    import stackstac
    from pystac_client import Client

    search = Client.open(job["url"]).search(
        collections=[collection], bbox=job["bbox"], datetime=datetime, limit=100
    )
    return stackstac.stack(
        list(search.items_as_dicts()),
        assets=assets,
        epsg=job["epsg"],
        resolution=10,
        bounds=tuple(job["bounds"]),
        rescale=False,
        dtype=np.dtype("uint16"),
        fill_value=np.uint16(0),
        xy_coords="center",
        chunksize=512,
    )


# ------------------------------------------------------------------------------------------
# measuring inside a process

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds in a thread; ``peak`` is the max.

    ``before`` is the RSS when the block is entered.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.before = rss_bytes()
        self.peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def rss_result(rss: RssSampler) -> dict[str, float]:
    """RSS before the sampled block and its peak growth during it, in MiB."""
    return {
        "rss_before_mb": rss.before / 2**20,
        "rss_growth_mb": (rss.peak - rss.before) / 2**20,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def uint_sum(array) -> int:
    """Exact sum of an integer array (a checksum for comparing methods)."""
    import numpy as np

    return int(np.asarray(array).astype("uint64").sum())


def cube_store(path: str | Path):
    """The read-only zarr store of a stac2cube cube's latest snapshot."""
    from stac2cube.store import open_repo

    return open_repo(path).readonly_session("main").store


def task_durations(flow_run_id) -> dict[str, float]:
    """Prefect's own run time of each task of a flow run, summed by task name."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flt)

    out: dict[str, float] = {}
    for run in sorted(asyncio.run(read()), key=lambda r: r.start_time or r.expected_start_time):
        name = run.name.rsplit("-", 1)[0]
        out[name] = out.get(name, 0.0) + run.total_run_time.total_seconds()
    return out


def task_profile(state) -> dict[str, Any]:
    """``{"tasks": task_durations(...)}`` of a flow run's final state, or ``{"tasks_error": ...}``.

    The profile is a bonus: reading it never fails the run.
    """
    try:
        return {"tasks": task_durations(state.state_details.flow_run_id)}
    except Exception as exc:
        return {"tasks_error": f"{type(exc).__name__}: {exc}"}


def prefect_init(job: dict[str, Any]) -> dict[str, Any]:
    """Run a trivial flow once so that PREFECT_HOME holds a migrated database."""
    from prefect import flow

    @flow
    def noop() -> int:
        return 1

    t0 = time.perf_counter()
    noop()
    return {"seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------
# worker subprocesses


def worker_env(prefect_home: Path, *, log_level: str | None = None) -> dict[str, str]:
    """The environment of a worker: its own ``PREFECT_HOME`` (created), analytics off, no API URL.

    ``log_level`` sets ``PREFECT_LOGGING_LEVEL`` (Prefect's default when None).
    """
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        # the default 20 s is too short on a busy 2-core machine
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PYTHONWARNINGS="ignore",
    )
    if log_level is not None:
        env["PREFECT_LOGGING_LEVEL"] = log_level
    return env


def run_worker(
    kind: str,
    job: dict[str, Any],
    env: dict[str, str],
    work: Path,
    *,
    script: str | Path | None = None,
    timeout: float = 900,
) -> dict:
    """Run worker ``kind`` of ``script`` in a fresh interpreter; return its result dict.

    Calls ``script --worker KIND WORK/KIND.job.json`` (``script`` defaults to the running one,
    ``__main__``) in ``work``, with ``job`` plus ``result`` (where the worker writes its JSON)
    in the job file and the output in ``WORK/KIND.log``. The worker gets its own session, which
    is killed when it ends (the ephemeral Prefect server it starts goes with it). Raises with
    the log's tail if the worker fails.
    """
    script = Path(script or sys.modules["__main__"].__file__).resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = {**job, "result": str(work / f"{kind}.result.json")}
    job_path = work / f"{kind}.job.json"
    job_path.write_text(json.dumps(job))
    log = work / f"{kind}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--worker", kind, str(job_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    if returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker {kind} failed (exit {returncode}):\n{tail}")
    return json.loads(Path(job["result"]).read_text())


def add_common_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    """``--no-results`` (print only, do not write ``results``) and the hidden ``--worker KIND JOB``
    (how :func:`run_worker` calls the script; hand it to :func:`worker_main`)."""
    parser.add_argument(
        "--no-results", action="store_true", help=f"do not write {results.name}, only print"
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)


def worker_main(
    kind: str,
    job_path: Path,
    workers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]],
    imports: Iterable[str],
) -> None:
    """Entry point of a worker subprocess: import ``imports``, run ``workers[kind]``.

    Writes the worker's result dict to the job's ``result`` path, with ``import_seconds`` (the
    imports, before the work), ``load_before`` (the 1-minute load average before the work) and
    ``peak_rss_mb`` (of the whole worker) added.
    """
    job = json.loads(job_path.read_text())
    t0 = time.perf_counter()
    for name in imports:
        importlib.import_module(name)
    import_seconds = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    result = workers[kind](job)
    result.update(import_seconds=import_seconds, load_before=load_before, peak_rss_mb=peak_rss_mb())
    Path(job["result"]).write_text(json.dumps(result))


def run_measured(
    cmd: list[str], env: dict[str, str], log: Path, *, timeout: float = 900, interval: float = 0.05
) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log``); its wall time and peak memory.

    Returns ``seconds``, ``peak_tree_mb`` (the largest sum of the RSS of the process and all its
    descendants, sampled every ``interval`` s with psutil: a Prefect server or Dask workers it
    starts count) and ``peak_rss_mb`` (``ru_maxrss`` of the process itself, from ``wait4``).
    Raises with the log's tail if it fails.
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    peak, status, usage = 0, None, None
    root = psutil.Process(proc.pid)
    try:
        while True:  # wait4, not Popen.poll: the child's rusage is wanted
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            total = 0
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            peak = max(peak, total)
            if time.perf_counter() - t0 > timeout:
                raise subprocess.TimeoutExpired(cmd, timeout)
            time.sleep(interval)
        seconds = time.perf_counter() - t0
    finally:
        proc.returncode = 0 if status is None else os.waitstatus_to_exitcode(status)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what it left running (a Prefect server)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}):\n{tail}")
    return {"seconds": seconds, "peak_tree_mb": peak / 2**20, "peak_rss_mb": usage.ru_maxrss / 1024}


def file_sizes(root: Path) -> dict[str, int]:
    """``relative path -> size`` of every file under ``root``."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def remove_subdirs(work: Path) -> None:
    """Remove the folders in ``work`` (the cubes a worker measured), keeping its files (logs)."""
    for child in work.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# the report


def machine() -> str:
    """Cores, CPU model, RAM, the current load average and the Python version, in one line."""
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as fh:
        cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kib / 1024**2:.1f} GiB RAM, load average "
        f"{os.getloadavg()[0]:.2f} at start; Python {platform.python_version()}"
    )


def versions(names: Iterable[str] = VERSIONED) -> str:
    """``name version`` of each installed package of ``names``, comma-separated."""
    from importlib.metadata import version

    return ", ".join(f"{n} {version(n)}" for n in names)


def fmt_ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    """``a / b`` with ``digits`` decimals, or ``-`` where either is missing or zero."""
    return f"{a / b:.{digits}f}" if a and b else "-"


def previous_interpretation(results: Path) -> str:
    """The ``## Interpretation`` section of ``results`` to its end (empty if there is none)."""
    if not results.exists():
        return ""
    text = results.read_text()
    at = text.find(INTERPRETATION_START)
    return text[at:].strip() if at >= 0 else ""


def write_results(results: Path, report: str) -> None:
    """Write ``report`` to ``results``, followed by the previous file's interpretation section.

    The section is written by hand after a run; a placeholder stands in for a missing one.
    """
    interpretation = previous_interpretation(results) or (
        f"{INTERPRETATION_START}\n\n(To be written by hand after a run; kept across runs.)"
    )
    results.write_text(f"{report}\n\n{interpretation}\n")


def publish(report: str, results: Path, *, write: bool = True) -> None:
    """Print ``report`` and, with ``write``, :func:`write_results` it to ``results``."""
    print(report)
    if write:
        write_results(results, report)
        print(f"\nwrote {results}")
