"""Load stage: the scenes of some time steps as lazy dask arrays on the cube's fixed grid.

stackstac reads each asset window-by-window with GDAL; nothing is read until the write stage
computes. Items are fed as raw dicts with ``proj:epsg`` (stackstac 0.5 ignores ``proj:code``),
DN are kept as integers (``rescale=False``: radiometry is decided per item in preprocess), and
pixel-centre coordinates are used (``xy_coords="center"``).

Resampling: continuous bands use the request's method (default ``nearest``, which keeps every
value a real measurement); classification bands (SCL) always use ``nearest``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.errors import ReadError
from stac2cube.grid import Grid
from stac2cube.missions import BandSpec, find_asset
from stac2cube.request import CubeRequest


def canonical_items(
    items: Sequence[dict[str, Any]], bands: Sequence[BandSpec]
) -> list[dict[str, Any]]:
    """Copies of ``items`` whose assets are keyed by canonical band name (``B04``).

    Raises:
        ReadError: an item lacks one of the bands.
    """
    out = []
    for item in items:
        assets = {}
        for band in bands:
            key = find_asset(item, band)
            if key is None:
                raise ReadError(
                    f"item {item.get('id')} has no asset for band {band.name} "
                    f"(assets: {', '.join(sorted(item.get('assets', {})))})"
                )
            assets[band.name] = copy.deepcopy(item["assets"][key])
        new = {k: v for k, v in item.items() if k != "assets"}
        new["properties"] = dict(item.get("properties", {}))
        new["assets"] = assets
        out.append(new)
    return out


def stack_items(
    items: Sequence[dict[str, Any]],
    bands: Sequence[BandSpec],
    grid: Grid,
    *,
    dtype: str,
    resampling: str = "nearest",
    chunksize: int = 1024,
) -> xr.DataArray:
    """A lazy ``(item, band, y, x)`` array of raw DN on ``grid``; 0 where there is no data."""
    import stackstac
    from rasterio.enums import Resampling

    data = stackstac.stack(
        canonical_items(items, bands),
        assets=[b.name for b in bands],
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=grid.bounds,
        snap_bounds=False,
        xy_coords="center",
        rescale=False,
        dtype=np.dtype(dtype),
        fill_value=np.dtype(dtype).type(0),
        resampling=Resampling[resampling],
        chunksize=chunksize,
        properties=False,
        band_coords=False,
        sortby_date=False,
    )
    data = data.drop_vars([c for c in data.coords if c not in ("band", "y", "x")])
    data = data.rename(time="item")
    data.attrs = {}  # stackstac's RasterSpec etc.: the cube records its own grid
    # stackstac's centres are computed in float; pin them to the grid's exact values
    return data.assign_coords(item=np.arange(len(items)), x=grid.x, y=grid.y)


def load_raw(
    request: CubeRequest, items: Sequence[dict[str, Any]], chunksize: int = 1024
) -> dict[str, xr.DataArray]:
    """Raw DN stacks of ``items`` for the request's bands, one array per band kind.

    Returns:
        ``{"reflectance": (item, band, y, x) uint16, "classification": ... uint8}``, each key
        present only when the request has bands of that kind.
    """
    out = {}
    for kind, dtype, resampling in (
        ("reflectance", request.mission.dtype, request.resampling),
        ("classification", "uint8", "nearest"),
    ):
        bands = [b for b in request.bands if b.kind == kind]
        if bands:
            out[kind] = stack_items(
                items, bands, request.grid, dtype=dtype, resampling=resampling, chunksize=chunksize
            )
    return out


@task(name="load", cache_policy=NO_CACHE)
def load_task(request: CubeRequest, items: list[dict[str, Any]]) -> dict[str, xr.DataArray]:
    """Prefect task: :func:`load_raw` (lazy; pixels are read when the cube is written)."""
    return load_raw(request, items)
