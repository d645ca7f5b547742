"""Benchmark: the super-resolution stage against the bare model, and its memory against steps.

1. **Throughput.** 128 px patches per second through :func:`stac2cube.superres.super_resolve`
   (windows, nodata fill, blending, masking) against the bare SEN2SRLite model called on the
   same windows in the same batches, in one process, alternating, best of ``--repeat``.
2. **Memory flat in steps.** A cube of 1, 4, 8 ... time steps (``--steps``) super-resolved by
   :func:`stac2cube.superres.write_superres` in a fresh child process each; the peak RSS above
   the RSS after loading the model must not grow with the number of steps.
3. **GPU** (``--device cuda``, where a GPU is present): patches/s and peak GPU memory against
   the batch size, fp32 against fp16.

The model is the RGBN architecture with random weights (:mod:`stac2cube.testing.superres`):
the real weights cannot be fetched here; speed and memory do not depend on the values.

Usage::

    python bench/superres.py --threads 2                  # CPU, writes RESULTS_superres.md
    python bench/superres.py --device cuda --no-write     # the GPU part, printed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, publish, versions

RESULTS = Path(__file__).with_name("RESULTS_superres.md")


def texture(c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = 0.2 + 0.1 * np.sin(0.11 * yy)[None] * np.cos(0.07 * xx)[None]
    return (out + rng.normal(0, 0.01, (c, h, w))).astype(np.float32)


def model_dir() -> Path:
    from stac2cube.testing.superres import write_test_model

    root = Path(tempfile.mkdtemp(prefix="sen2sr-bench-"))
    write_test_model(root, "rgbn", seed=1)
    return root


def throughput(device: str, grid: int, batch: int, repeat: int, precision: str) -> dict:
    import torch

    from stac2cube.superres import resolve_device, super_resolve, tile_starts
    from stac2cube.superres_models import load_model

    dev = resolve_device(device)
    model = load_model(model_dir(), "rgbn", device=dev, precision=precision)
    data = texture(4, grid, grid)
    ys, xs = tile_starts(grid), tile_starts(grid)
    windows = np.stack([data[:, y : y + 128, x : x + 128] for y in ys for x in xs])

    def bare() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for k in range(0, len(windows), batch):
                out = model(torch.from_numpy(windows[k : k + batch]).to(dev))
                out.float().cpu().numpy()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def stage() -> float:
        t = time.perf_counter()
        super_resolve(data, model, batch_size=batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    bare()  # warm-up (allocator, kernels)
    times = {"bare": [], "stage": []}
    for _ in range(repeat):
        times["bare"].append(bare())
        times["stage"].append(stage())
    n = len(windows)
    best = {k: min(v) for k, v in times.items()}
    return {
        "patches": n,
        "grid": grid,
        "batch": batch,
        "bare_patches_s": n / best["bare"],
        "stage_patches_s": n / best["stage"],
        "overhead": best["stage"] / best["bare"] - 1,
        "all_times": times,
    }


BANDS = ["B02", "B03", "B04", "B08"]


def make_cube(n_steps: int, grid: int) -> tuple[Path, dict]:
    """A cube store of ``n_steps`` steps of ``grid`` x ``grid`` px (made in the parent, so the
    child's peak RSS is the stage's alone). Returns its path and its request record."""
    import icechunk
    import pandas as pd
    import xarray as xr

    from stac2cube.encoding import S2_REFLECTANCE_ENCODING
    from stac2cube.grid import Grid
    from stac2cube.store import write_metadata

    path = Path(tempfile.mkdtemp(prefix="sr-bench-cube-")) / "cube.icechunk"
    g = Grid(32632, 10.0, (690000.0, 5340000.0 - 10 * grid, 690000.0 + 10 * grid, 5340000.0))
    times = pd.date_range("2024-01-01T10:30", periods=n_steps, freq="5D")
    ds = xr.Dataset(
        {b: (("time", "y", "x"), np.stack([texture(1, grid, grid, k)[0] for k in range(n_steps)]))
         for b in BANDS},
        coords={"time": times, "y": g.y, "x": g.x},
    )  # fmt: skip
    enc = {b: {**S2_REFLECTANCE_ENCODING, "chunks": (1, grid, grid)} for b in BANDS}
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    ds.to_zarr(session.store, mode="w", consolidated=False, encoding=enc)
    record = {"mission": "sentinel-2-l2a", "grid": g.to_attrs(), "resampling": "nearest"}
    ledger = [{"time": t.isoformat(), "items": [{"id": f"item-{k}"}]} for k, t in enumerate(times)]
    write_metadata(session, request=record, ledger=ledger, version="bench")
    session.commit("bench cube")
    return path, record


def machinery(grid: int, batch: int, repeat: int) -> dict:
    """Seconds of the stage's own work per patch: ``super_resolve`` with the model replaced by a
    nearest-neighbour x4 upsampler, minus that upsampler on the same windows."""
    import torch

    from stac2cube.superres import super_resolve, tile_starts

    data = texture(4, grid, grid)
    ys = tile_starts(grid)
    windows = np.stack([data[:, y : y + 128, x : x + 128] for y in ys for x in ys])

    def trivial(t):
        return torch.nn.functional.interpolate(t, scale_factor=4, mode="nearest")

    per_patch = []
    for _ in range(repeat):
        t = time.perf_counter()
        super_resolve(data, trivial, scale=4, batch_size=batch)
        a = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(0, len(windows), batch):
            trivial(torch.from_numpy(windows[k : k + batch])).numpy()
        b = time.perf_counter() - t
        per_patch.append((a - b) / len(windows))
    return {"seconds_per_patch": min(per_patch), "all": per_patch}


def child_steps(path: str, batch: int) -> dict:
    """In a fresh process: super-resolve every step of the cube at ``path``; RSS in MB."""
    from stac2cube.cube import Cube
    from stac2cube.superres import SuperresSettings, prepare, write_superres

    cube = Cube(path)
    record = cube.require().request
    settings = SuperresSettings(model_dir=str(model_dir()), device="cpu", batch_size=batch)
    prepared = prepare(record, BANDS, settings, "bench")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    session = cube.repository().writable_session("main")
    t = time.perf_counter()
    summary = write_superres(session, cube, None, settings, prepared=prepared)
    seconds = time.perf_counter() - t
    session.commit("superres")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "steps": summary["time_steps"],
        "computed": summary["computed"],
        "rss_before_mb": base,
        "peak_mb": peak,
        "growth_mb": peak - base,
        "seconds": seconds,
    }


def gpu_sweep(batches: list[int], grid: int) -> list[dict]:
    """Patches/s and peak GPU memory against batch size, fp32 and fp16 (CUDA only)."""
    import torch

    rows = []
    for precision in ("fp32", "fp16"):
        for b in batches:
            torch.cuda.reset_peak_memory_stats()
            r = throughput("cuda", grid, b, 2, precision)
            r["precision"] = precision
            r["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            rows.append(r)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", type=int, default=300, help="10 m pixels a side (throughput)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--step-grid", type=int, default=128)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child-cube", help=argparse.SUPPRESS)
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child_cube:
        print(json.dumps(child_steps(args.child_cube, args.batch)))
        return
    load0 = os.getloadavg()
    lines = [
        "# Super-resolution benchmark (bench/superres.py)",
        "",
        f"Machine: {machine()}. torch threads: {args.threads}. {versions(['stac2cube', 'torch', 'sen2sr'])}.",
        "The machine is shared by several sessions: the load average (1/5/15 min) at start was "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} on 2 cores, so absolute times are slow "
        "and noisy; the ratios compare the two methods in one process, alternating.",
        "Model: SEN2SRLite RGBN x4 architecture (572,336 parameters), random weights.",
        "",
    ]
    if args.device == "cuda":
        rows = gpu_sweep([8, 16, 32, 64, 128], args.grid)
        lines += [
            "## GPU",
            "",
            "| precision | batch | patches | bare patches/s | stage patches/s | overhead | peak GPU MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['precision']} | {r['batch']} | {r['patches']} | {r['bare_patches_s']:.1f} | "
                f"{r['stage_patches_s']:.1f} | {r['overhead']:+.1%} | {r['peak_gpu_mb']:.0f} |"
            )
        publish(
            "\n".join(lines), RESULTS.with_name("RESULTS_superres_gpu.md"), write=not args.no_write
        )
        return
    r = throughput("cpu", args.grid, args.batch, args.repeat, "fp32")
    mach = machinery(args.grid, args.batch, args.repeat)
    lines += [
        "## Throughput: stage against the bare model (CPU)",
        "",
        f"Grid {r['grid']} x {r['grid']} px at 10 m -> {r['patches']} windows of 128 px "
        f"(overlap 32), batch {r['batch']}, best of {args.repeat}.",
        "",
        "| method | patches/s | seconds (each repeat) |",
        "|---|---|---|",
        f"| bare model (same windows, same batches) | {r['bare_patches_s']:.3f} | "
        f"{', '.join(f'{t:.1f}' for t in r['all_times']['bare'])} |",
        f"| stage (`super_resolve`) | {r['stage_patches_s']:.3f} | "
        f"{', '.join(f'{t:.1f}' for t in r['all_times']['stage'])} |",
        "",
        f"Stage overhead over the bare model: **{r['overhead']:+.1%}** "
        f"(ratio {r['bare_patches_s'] / r['stage_patches_s']:.3f}).",
        "",
        "The stage's own work (windows, nodata fill, blending, masking, streaming rows), measured "
        "with the model replaced by a nearest-neighbour upsampler: "
        f"**{mach['seconds_per_patch'] * 1000:.0f} ms per patch** (each repeat: "
        f"{', '.join(f'{x * 1000:.0f}' for x in mach['all'])} ms), i.e. "
        f"{mach['seconds_per_patch'] * r['bare_patches_s']:.1%} of the bare model's time per "
        "patch.",
        "",
        "## Peak memory against the number of time steps (CPU)",
        "",
        f"Each row is a fresh process: a {args.step_grid} x {args.step_grid} px cube of N steps "
        "(B02 B03 B04 B08), all super-resolved by `write_superres` into its group. Growth = peak "
        "RSS minus the RSS after the model was loaded (before the first step).",
        "",
        "| steps | computed | RSS before (MB) | peak (MB) | growth (MB) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for n in args.steps:
        path, _ = make_cube(n, args.step_grid)
        out = subprocess.run(
            [sys.executable, __file__, "--child-cube", str(path), "--threads", str(args.threads),
             "--batch", str(args.batch)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        m = json.loads(out.stdout.strip().splitlines()[-1])
        lines.append(
            f"| {m['steps']} | {m['computed']} | {m['rss_before_mb']:.0f} | {m['peak_mb']:.0f} | "
            f"{m['growth_mb']:.0f} | {m['seconds']:.1f} |"
        )
    load1 = os.getloadavg()
    lines += [
        "",
        f"Load average at the end: {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}.",
        "",
        "GPU: not run (no GPU in this session); `python bench/superres.py --device cuda` is the "
        "prepared path (patches/s and peak GPU memory against batch size, fp32 and fp16).",
    ]
    publish("\n".join(lines), RESULTS, write=not args.no_write)


if __name__ == "__main__":
    main()
