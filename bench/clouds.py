"""Benchmark of the cloud-layers stage (stac2cube.clouds), in one process run.

1. Overhead: the stage's window computation (s2cloudless probability, uint8 quantisation,
   masks at two thresholds with the 40 m / 20 m kernels, shadows) against calling
   ``S2PixelCloudDetector().get_cloud_probability_maps`` directly on the same in-memory TOA
   arrays, at 10 m.
2. Processing resolution: seconds per megapixel of the cube grid (10 m) and agreement of the
   40 % mask with the one made at 10 m, at 10, 20, 60, 120 and 160 m, on a synthetic scene
   with smooth cloud fields (thick cores, thin edges) over textured land.
3. Memory: peak traced memory of the stage's block loop (lazy L1C reads, per-block halo,
   writes) on a grid and on a grid 4x larger, at the default processing resolution.

Run: ``.venv/bin/python bench/clouds.py [--size 600]``; writes ``bench/RESULTS_clouds.md``
(keeping its ``## Interpretation`` section).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stac2cube.clouds import (  # noqa: E402
    CloudSettings,
    cloud_probability,
    upsample_probability,
    window_layers,
)
from stac2cube.testing.clouds import CLEAR_TOA, CLOUD_TOA  # noqa: E402

BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")


def scene(size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 10) TOA at 10 m: textured land, smooth cloud fields of varying opacity."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    clear = np.array([CLEAR_TOA[b] for b in BANDS], "float32")
    cloud = np.array([CLOUD_TOA[b] for b in BANDS], "float32")
    land = clear * (1 + 0.25 * rng.standard_normal((size, size, 1)).astype("float32"))
    field = gaussian_filter(rng.standard_normal((size, size)), sigma=25)
    field = (field - field.mean()) / field.std()
    alpha = np.clip((field - 0.3) / 1.2, 0, 1)[..., None].astype("float32")  # ~35 % cloudy
    return np.clip(land * (1 - alpha) + cloud * alpha, 0.0001, 1.5).astype("float32")


def downsample(toa: np.ndarray, f: int) -> np.ndarray:
    """Block average by ``f`` (what GDAL's ``average`` resampling does on aligned grids)."""
    if f == 1:
        return toa
    h, w, b = toa.shape
    h2, w2 = h // f, w // f
    return toa[: h2 * f, : w2 * f].reshape(h2, f, w2, f, b).mean(axis=(1, 3))


def layers_at(toa10: np.ndarray, res: float, settings: CloudSettings):
    """The stage's layers at processing resolution ``res``, brought back to the 10 m grid."""
    f = round(res / 10)
    toa = downsample(toa10, f)
    out = window_layers(toa, settings, res, None)
    n = toa10.shape[0] // f * f
    centres = (np.arange(n) + 0.5) / f - 0.5
    if f == 1:
        return out.percent, out.masks[0]
    percent = upsample_probability(out.percent, centres, centres)
    idx = np.floor(centres + 0.5).astype(int).clip(0, out.masks.shape[1] - 1)
    return percent, out.masks[0][np.ix_(idx, idx)]


def timed(fn, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


class Sink:
    """Stands in for the zarr group: accepts writes, keeps nothing (memory of the loop only)."""

    def __getitem__(self, name):
        return self

    def __setitem__(self, key, value):
        pass


def memory_peak(size: int, res: float, block: int) -> float:
    """Peak traced MB of the stage's block loop over a ``size`` x ``size`` 10 m grid, with a
    lazy (dask) L1C stack standing in for stackstac."""
    import dask
    import dask.array as da
    import xarray as xr

    from stac2cube.clouds_store import CloudPlan, compute_block, to_cube
    from stac2cube.clouds_store import blocks as cube_blocks
    from stac2cube.grid import Grid

    grid = Grid(32632, 10.0, (690000.0, 5340000.0 - size * 10, 690000.0 + size * 10, 5340000.0))
    from stac2cube.clouds import processing_grid

    settings = CloudSettings.make(thresholds=[40, 60], resolution=res, shadows=True)
    pgrid = processing_grid(grid, settings.processing_resolution(10.0))

    def make(block_info=None):
        loc = block_info[None]["array-location"]
        shape = block_info[None]["chunk-shape"]
        rng = np.random.default_rng(loc[2][0] * 7 + loc[3][0])
        return (1500 + rng.integers(0, 3000, shape)).astype("uint16")

    ph, pw = pgrid.shape
    lazy = da.map_blocks(make, chunks=((1,), (10,), (256,) * (ph // 256) + ((ph % 256,) if ph % 256 else ()),
                                        (256,) * (pw // 256) + ((pw % 256,) if pw % 256 else ())),
                         dtype="uint16")  # fmt: skip
    stack = xr.DataArray(lazy, dims=("item", "band", "y", "x"))
    plan = CloudPlan(settings, grid, pgrid, "average", "", None)
    sink = Sink()
    sun = (160.0, 30.0)
    tracemalloc.start()
    with dask.config.set(scheduler="threads"):
        for box in cube_blocks(grid, block):
            layers, fy, fx, wy0, wx0 = compute_block(stack, [-0.1], sun, plan, box)
            to_cube(sink, 0, layers, fy - wy0, fx - wx0, box, plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=480, help="scene side in 10 m pixels")
    parser.add_argument("--out", default=str(HERE / "RESULTS_clouds.md"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    size = args.size
    toa = scene(size)
    mpix = size * size / 1e6
    from s2cloudless import S2PixelCloudDetector

    det = S2PixelCloudDetector()
    det.get_cloud_probability_maps(toa[:8, :8][None])  # model loaded before timing
    cloud_probability(toa[:8, :8])
    settings10 = CloudSettings.make(thresholds=[40, 60], resolution=10, shadows=True)
    sub = toa[: size // 2, : size // 2].copy()  # overhead: alternating runs, medians
    nosh = CloudSettings.make(thresholds=[40, 60], resolution=10)
    runs: dict[str, list[float]] = {"bare": [], "stage": [], "stage+shadows": []}
    for _ in range(3):
        runs["bare"].append(timed(lambda: det.get_cloud_probability_maps(sub[None]))[0])
        runs["stage"].append(timed(lambda: window_layers(sub, nosh, 10.0, None))[0])
        runs["stage+shadows"].append(
            timed(lambda: window_layers(sub, settings10, 10.0, (160.0, 30.0)))[0]
        )
    med = {k: float(np.median(v)) for k, v in runs.items()}
    spread = {k: (min(v), max(v)) for k, v in runs.items()}
    omp = sub.shape[0] * sub.shape[1] / 1e6
    rows = []
    settings = {
        r: CloudSettings.make(thresholds=[40], resolution=r) for r in (10, 20, 60, 120, 160)
    }
    ref_percent, ref_mask = layers_at(toa, 10, settings[10])
    for res, s in settings.items():
        sec, (percent, mask) = timed(lambda s=s, res=res: layers_at(toa, res, s))
        n = mask.shape[0]
        agree = float((mask == ref_mask[:n, :n]).mean())
        valid = (percent != 255) & (ref_percent[:n, :n] != 255)
        diff = np.abs(percent[valid].astype(int) - ref_percent[:n, :n][valid].astype(int))
        rows.append((res, sec / mpix, agree, float(diff.mean()) / 100, s.kernel_px(40, res),
                     s.kernel_px(20, res)))  # fmt: skip
    small, large = 1024, 2048
    mem_small = memory_peak(small, 60, 512)
    mem_large = memory_peak(large, 60, 512)
    mem_small10 = memory_peak(256, 10, 256)
    mem_large10 = memory_peak(512, 10, 256)
    load_after = os.getloadavg()
    lines = [
        "# Cloud layers benchmark (`bench/clouds.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} cores), Python {platform.python_version()}. **Shared machine**: "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (six helpers on "
        "2 cores): absolute seconds are inflated and noisy; ratios within this run are the "
        "figures to read.",
        "",
        f"Synthetic scene: {size} x {size} px at 10 m ({mpix:.2f} Mpx), textured land, smooth "
        "cloud fields (thick cores, thin edges, ~35 % cloud).",
        "",
        "## Stage overhead against bare s2cloudless (same in-memory TOA, 10 m)",
        "",
        f"{sub.shape[0]} x {sub.shape[1]} px, three alternating runs each; median "
        "(min-max) seconds.",
        "",
        "| what | s median (min-max) | s/Mpx | ratio to bare |",
        "|---|---:|---:|---:|",
        *[
            f"| {label} | {med[k]:.2f} ({spread[k][0]:.2f}-{spread[k][1]:.2f}) | "
            f"{med[k] / omp:.1f} | {med[k] / med['bare']:.2f} |"
            for k, label in (
                ("bare", "`S2PixelCloudDetector().get_cloud_probability_maps`"),
                ("stage", "stage window: probability, uint8, masks at 2 thresholds"),
                ("stage+shadows", "the same + shadows (sun elevation 30 degrees)"),
            )
        ],
        "",
        "## Processing resolution: speed and agreement with 10 m",
        "",
        "Seconds per megapixel of the 10 m cube grid (downsampling, s2cloudless, masks, "
        "upsampling); agreement = share of pixels whose 40 % mask (kernels 40 m / 20 m "
        "converted to the processing grid) equals the 10 m mask; mean |prob difference|.",
        "",
        "| resolution (m) | s/Mpx (cube grid) | speed-up vs 10 m | mask agreement | mean abs "
        "prob diff | average_over px | dilation px |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows[0][1]
    for res, spm, agree, diff, a_px, d_px in rows:
        lines.append(
            f"| {res} | {spm:.2f} | {base / spm:.0f}x | {agree:.3f} | {diff:.3f} | {a_px} | {d_px} |"
        )
    lines += [
        "",
        "## Peak memory of the block loop (traced, lazy reads, 512 px blocks)",
        "",
        "| grid (10 m px) | processing | peak MB |",
        "|---|---|---:|",
        f"| {small} x {small} | 60 m | {mem_small:.1f} |",
        f"| {large} x {large} (4x) | 60 m | {mem_large:.1f} |",
        f"| 256 x 256 | 10 m, 256 px blocks | {mem_small10:.1f} |",
        f"| 512 x 512 (4x) | 10 m, 256 px blocks | {mem_large10:.1f} |",
        "",
    ]
    out = Path(args.out)
    keep = ""
    if out.exists() and "## Interpretation" in out.read_text():
        keep = out.read_text()[out.read_text().index("## Interpretation") :]
    out.write_text("\n".join(lines) + "\n" + (keep or "## Interpretation\n\n(to write)\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
