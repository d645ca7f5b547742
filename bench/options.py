"""Benchmark: what each build option costs, against a plain build and plain-xarray baselines.

Run (from the repository root; about 3 minutes on 2 cores with the defaults)::

    .venv/bin/python bench/options.py                 # 12 scenes, 1020 px, 3 repeats
    .venv/bin/python bench/options.py --scenes 4 --size 510 --repeat 1   # smoke run

One synthetic ``sentinel-2-c1-l2a`` tile (B02 B03 B04 B08 B11 SCL, deflate COGs) with
``--scenes`` daily acquisitions is served by a real local STAC API. In one process, after an
untimed warm-up build (Prefect's server started, modules imported), each variant builds the same
cube (bands B02 B03 B04 B08) into a fresh store:

``plain``        ``get_stac_layers`` with ``statistics=False``: the reference.
``stats``        + the statistics CSV (the default).
``indices``      + NDVI, NDMI, EVI (B11 read for NDMI, not stored).
``filters``      + ``min_coverage=0.5, max_scene_cloud=50`` (fractions computed before the write).
``composites``   + ``median:month`` and ``mean:all``.
``quicklook``    + a GIF.
``everything``   all of the above.

Baselines in the same run: ``xarray-ndvi`` is plain stackstac -> reflectance -> NDVI, NDMI, EVI
-> ``to_zarr`` (what a user writes by hand); ``xarray-median`` is ``resample(time="MS").median()``
and ``mean("time")`` of the ``plain`` cube's B02-B08 -> ``to_zarr``.

Wall time (median of ``--repeat``) and the process's peak RSS growth during the call (sampled
every 10 ms) are reported; ratios are to ``plain``. The table is printed and written to
``bench/RESULTS_options.md``, whose ``## Interpretation`` section is kept from the previous file
(edit it by hand after a run). Timing is never part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RssSampler,
    bbox_for_bounds,
    effective_size,
    fmt_ratio,
    machine,
    plain_stack,
    publish,
    rss_result,
    tile_bounds,
    write_scenes,
)

COLLECTION = "bench-options"
BANDS = ["B02", "B03", "B04", "B08", "B11", "SCL"]
FIRST_DAY = dt.date(2024, 3, 1)
RESULTS = Path(__file__).resolve().parent / "RESULTS_options.md"
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"statistics": False},
    "stats": {"statistics": True},
    "indices": {"statistics": False, "indices": ["NDVI", "NDMI", "EVI"]},
    "filters": {"statistics": False, "min_coverage": 0.5, "max_scene_cloud": 50},
    "composites": {"statistics": False, "composites": ["median:month", "mean:all"]},
    "quicklook": {"statistics": False, "quicklook": "gif"},
    "everything": {
        "statistics": True,
        "indices": ["NDVI", "NDMI", "EVI"],
        "min_coverage": 0.5,
        "max_scene_cloud": 50,
        "composites": ["median:month", "mean:all"],
        "quicklook": "gif",
    },
}


def timed(fn) -> tuple[float, float]:
    with RssSampler() as rss:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    return seconds, rss_result(rss)["rss_growth_mb"]


def xarray_ndvi(job: dict[str, Any], out: Path) -> None:
    """The hand-written baseline: stackstac, reflectance by the documented formula, 3 indices."""
    data = plain_stack(job, COLLECTION, ["blue", "green", "red", "nir", "swir16"])
    refl = ((data.astype("float32") - 1000) / 10000).where(data != 0)
    b, r, n, s = (refl.sel(band=k) for k in ("blue", "red", "nir", "swir16"))
    import xarray as xr

    ds = xr.Dataset(
        {
            "NDVI": (n - r) / (n + r),
            "NDMI": (n - s) / (n + s),
            "EVI": 2.5 * (n - r) / (n + 6 * r - 7.5 * b + 1),
        }
    )
    ds = ds.drop_vars([c for c in ds.coords if c not in ("time", "x", "y")])
    ds.attrs = {}
    for var in ds.variables.values():  # stackstac's RasterSpec / Affine are not JSON
        var.attrs = {}
    ds.to_zarr(out, mode="w", consolidated=False)


def xarray_median(store: Path, out: Path) -> None:
    from stac2cube import open_cube

    cube = open_cube(store)[["B02", "B03", "B04", "B08"]]
    cube = cube.drop_vars([c for c in cube.coords if c not in ("time", "x", "y")])
    monthly = cube.chunk({"time": -1}).resample(time="MS").median()
    monthly.to_zarr(out / "month", mode="w", consolidated=False)
    cube.mean("time").to_zarr(out / "all", mode="w", consolidated=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--size", type=int, default=1020)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    size = effective_size(args.size)

    import warnings

    warnings.filterwarnings("ignore")
    from stac2cube import get_stac_layers
    from stac2cube.testing.pgstac import start_local_stac_api

    work = Path(tempfile.mkdtemp(prefix="stac2cube-bench-options-"))
    cat = write_scenes(
        work / "catalog",
        args.scenes,
        size,
        BANDS,
        collection=COLLECTION,
        first_day=FIRST_DAY,
        days_apart=7,
        # one platform; every fourth scene is all cloud
        scene=lambda k: {"platform": "sentinel-2a", "cloud_rows": size if k % 4 == 3 else 0},
    )
    bounds, epsg = tile_bounds(size)
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        job = {"url": api.url, "bbox": bbox_for_bounds(bounds, epsg), "epsg": epsg,
               "bounds": list(bounds)}  # fmt: skip
        base = dict(mission="sentinel-2-l2a", bbox=job["bbox"], start=str(FIRST_DAY),
                    end=str(FIRST_DAY + dt.timedelta(days=7 * args.scenes)), catalog=api.url,
                    collection=COLLECTION, bands=["B02", "B03", "B04", "B08"])  # fmt: skip
        get_stac_layers(**base, store=str(work / "warm.icechunk"), statistics=False)
        results: dict[str, list[tuple[float, float]]] = {}
        for rep in range(args.repeat):
            for name, extra in VARIANTS.items():
                store = work / f"{name}-{rep}.icechunk"
                results.setdefault(name, []).append(
                    timed(lambda s=store, e=extra: get_stac_layers(**base, **e, store=str(s)))
                )
            results.setdefault("xarray-ndvi", []).append(
                timed(lambda r=rep: xarray_ndvi(job, work / f"ndvi-{r}.zarr"))
            )
            results.setdefault("xarray-median", []).append(
                timed(lambda r=rep: xarray_median(work / f"plain-{r}.icechunk", work / f"med-{r}"))
            )
    plain = statistics.median(s for s, _ in results["plain"])
    lines = [
        f"# Build options: {args.scenes} scenes x 4 bands x {size}^2 px, {args.repeat} repeats",
        "",
        f"Machine: {machine()}",
        "",
        "| variant | wall s (median) | / plain | peak RSS growth MB (max) |",
        "|---|---:|---:|---:|",
    ]
    for name, runs in results.items():
        wall = statistics.median(s for s, _ in runs)
        lines.append(
            f"| {name} | {wall:.2f} | {fmt_ratio(wall, plain)} | {max(m for _, m in runs):.0f} |"
        )
    report = "\n".join(lines)
    publish(report, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
