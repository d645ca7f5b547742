"""Benchmark: co-registration cost per time step, against its baselines in the same run.

A synthetic Sentinel-2 cube (stac2cube.testing.coreg: one white-noise ground, each step moved
by a known sub-pixel shift; B04, B08, SCL) is built through a local STAC API. Then, on copies
of its store:

* **estimate**: stac2cube's estimation of a step (clear-pixel cells read strip by strip from
  the store, window placement, AROSICS on each window, consensus) against **AROSICS called
  directly** on the same windows' arrays, already in memory (the same ``COREG`` calls, nothing
  else): the ratio is stac2cube's overhead;
* **apply**: shifting every layer of a step in place (Lanczos-6 / nearest, strip by strip)
  against a **plain read + write** of the same arrays of the same step (same strips);
* **flow**: ``coregister_scenes`` end to end (reference, estimation, apply, commit, Prefect),
  seconds per step.

Usage: ``python bench/coreg.py [--size PX] [--steps N] [--no-write]``; writes
``bench/RESULTS_coreg.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

RESULTS = Path(__file__).resolve().parent / "RESULTS_coreg.md"
SHIFTS = [(0.0, 0.0), (0.3, -1.7), (-1.7, 0.3), (0.8, -0.4), (-1.2, 1.1), (0.45, 0.9)]


def build(root: Path, size: int, steps: int) -> Path:
    from stac2cube import get_stac_layers
    from stac2cube.testing.coreg import coreg_scene
    from stac2cube.testing.synthetic import TILE_A, make_collection, write_catalog

    scenes = [
        coreg_scene(
            dt.datetime(2024, 1, 5 + 5 * k, 10, 30, tzinfo=dt.UTC),
            shift=SHIFTS[k % len(SHIFTS)],
            size=size,
        )
        for k in range(steps)
    ]
    cat = write_catalog(root / "catalog", scenes, bands=["B04", "B08", "SCL"])
    cat.collections = [make_collection("earth-search-c1", "coreg-s2", cat.items)]
    x0, y1 = TILE_A[2]
    bounds = (x0 + 20, y1 - (size - 2) * 10, x0 + (size - 2) * 10, y1 - 20)
    bbox = _common.bbox_for_bounds(bounds, 32632)
    store = root / "cube.icechunk"
    with _common.start_api(cat) as api:
        get_stac_layers(
            mission="sentinel-2-l2a", bbox=bbox, start="2024-01-01", end="2024-12-31",
            catalog=api.url, collection="coreg-s2", bands=["B04", "B08", "SCL"], store=str(store),
        )  # fmt: skip
    return store


def measure_steps(store: Path, window: int) -> dict[str, list[float]]:
    """estimate / direct AROSICS / apply / plain read+write seconds per (non-reference) step."""
    from arosics import COREG
    from geoarray import GeoArray

    from stac2cube.coreg_shift import from_stored, to_stored
    from stac2cube.coregistration import (
        NODATA,
        CubeReader,
        _layers,
        _stored_image,
        apply_shift,
        cell_counts,
        check_cube,
        estimate_step,
        make_reference,
        make_settings,
        margin,
    )
    from stac2cube.cube import Cube

    cube = Cube(store)
    record = cube.state.request
    session = cube.repository().writable_session("main")
    ds = cube.open_dataset()
    settings = check_cube(
        record, list(ds.data_vars), cube.state.times, (ds.sizes["y"], ds.sizes["x"]),
        make_settings(window=window), None,
    )  # fmt: skip
    reader = CubeReader(session, record, settings.band)
    cell = settings.window // 4
    share = [
        cell_counts(
            lambda r, t=t: reader.clear(t, r, exact=False), reader.height, reader.width, cell
        ).sum()
        / (reader.height * reader.width)
        for t in range(len(reader.times))
    ]
    t0 = time.perf_counter()
    _info, done = make_reference(session, reader, settings, share)
    out: dict[str, list[float]] = {"reference": [time.perf_counter() - t0]}
    ref = _stored_image(session)
    t0 = time.perf_counter()
    ref_cells = cell_counts(lambda r: ref.valid(r, slice(None)), reader.height, reader.width, cell)
    out["ref_cells"] = [time.perf_counter() - t0]
    m, win = margin(settings), settings.window
    for t in range(len(reader.times)):
        if t in done:
            continue
        t0 = time.perf_counter()
        sx, sy, _, _, origins = estimate_step(reader, ref, t, settings, ref_cells=ref_cells)
        out.setdefault("estimate", []).append(time.perf_counter() - t0)
        # the same windows' arrays in memory, then AROSICS directly
        arrays = []
        for r, c in origins:
            rows, cols = slice(r - m, r + win + m), slice(c - m, c + win + m)
            rv, tv = ref.read(rows, cols), reader.values(t, rows, cols)
            ok_t = reader.clear(t, rows, cols)
            gt = reader.geotransform(r - m, c - m)
            wp = (
                reader.west + (c + win / 2) * reader.res,
                reader.north - (r + win / 2) * reader.res,
            )
            arrays.append((rv, tv, ok_t, gt, wp))
        wkt = reader.wkt
        t0 = time.perf_counter()
        for rv, tv, ok_t, gt, wp in arrays:
            ok_r = np.isfinite(rv)
            cr = COREG(
                GeoArray(np.where(ok_r, rv, NODATA).astype("float32"), gt, wkt, nodata=NODATA),
                GeoArray(np.where(ok_t, tv, NODATA).astype("float32"), gt, wkt, nodata=NODATA),
                wp=wp, ws=(win, win), max_shift=math.ceil(settings.max_shift),
                nodata=(NODATA, NODATA), mask_baddata_ref=GeoArray(~ok_r, gt, wkt),
                mask_baddata_tgt=GeoArray(~ok_t, gt, wkt), CPUs=1, q=True, progress=False,
            )  # fmt: skip
            cr.calculate_spatial_shifts()
        out.setdefault("direct", []).append(time.perf_counter() - t0)
        # plain read + write of every layer of the step, the same strips
        t0 = time.perf_counter()
        for array, _, fill, _ in _layers(session, None):
            for y0 in range(0, array.shape[1], 512):
                sl = (t, slice(y0, min(array.shape[1], y0 + 512)), slice(None))
                values = from_stored(np.asarray(array[sl]), fill)
                array[sl] = to_stored(values, array.dtype, fill)
        out.setdefault("readwrite", []).append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        apply_shift(session, t, reader.times[t], sx, sy)
        out.setdefault("apply", []).append(time.perf_counter() - t0)
    return out


def run_flow(store: Path, window: int) -> tuple[float, int]:
    from stac2cube import coregister_scenes

    t0 = time.perf_counter()
    summary = coregister_scenes(store=str(store), window=window)
    return time.perf_counter() - t0, summary["coregistered_steps"] + len(summary["failed_steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=600, help="scene edge in 10 m pixels")
    parser.add_argument("--steps", type=int, default=5, help="time steps")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    size = _common.effective_size(args.size)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    load_start = os.getloadavg()
    header = _common.machine()
    root = Path(tempfile.mkdtemp(prefix="bench-coreg-"))
    try:
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            t0 = time.perf_counter()
            store = build(root, size, args.steps)
            t_build = time.perf_counter() - t0
            copy = root / "copy.icechunk"
            shutil.copytree(store, copy)
            steps = measure_steps(copy, args.window)
            t_flow, n_flow = run_flow(store, args.window)
        load_end = os.getloadavg()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mean = {k: float(np.mean(v)) for k, v in steps.items()}
        n = len(steps["estimate"])
        px = (size - 4) ** 2
        report = f"""# Co-registration benchmark (`bench/coreg.py`)

Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {header}.
**Shared machine**: load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at the end (2
cores shared with other sessions' tests); absolute seconds are inflated, ratios within this run
are what to read. Versions: {_common.versions([*_common.VERSIONED, "arosics", "geoarray"])}.

Cube: {args.steps} steps of {size - 4} x {size - 4} px ({px / 1e6:.2f} Mpx), bands B04, B08
(uint16) and SCL (uint8), built through a local STAC API in {t_build:.1f} s. Window
{args.window} px, up to 5 windows a step; median reference of the clearest steps.

| per non-reference step (mean of {n}) | seconds | ratio |
|---|---|---|
| stac2cube estimate (cells, placement, AROSICS on each window, consensus) | {mean["estimate"]:.3f} | {_common.fmt_ratio(mean["estimate"], mean["direct"])} x direct |
| AROSICS called directly on the same windows' arrays (in memory) | {mean["direct"]:.3f} | 1 |
| apply the shift to every layer (Lanczos-6 / nearest, strips of 512 rows) | {mean["apply"]:.3f} | {_common.fmt_ratio(mean["apply"], mean["readwrite"])} x read+write |
| plain read + write of the same layers, same strips | {mean["readwrite"]:.3f} | 1 |

Once per run: the reference (median of the clearest steps, aligned to the anchor)
{mean["reference"]:.2f} s (first run only); counting its valid pixels per cell
{mean["ref_cells"]:.3f} s.
Flow `coregister_scenes` end to end (reference, {n_flow} steps, commit, Prefect):
{t_flow:.1f} s, {t_flow / max(n_flow, 1):.2f} s per step. Peak RSS of the process (build and
all runs): {peak:.0f} MiB.
"""
        _common.publish(report, RESULTS, write=not args.no_write)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
