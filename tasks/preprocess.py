"""Preprocess stage: per-item radiometry, then one mosaic per time step.

Each item's DN become physical values by its own :class:`~stac2cube.radiometry.Radiometry`
(decided from the item's metadata and recorded). The scenes of a time step are mosaicked in the
step's order: the first scene with a valid pixel provides it. Nodata is NaN in reflectance;
classification bands keep their integer classes, 0 meaning nodata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from prefect import task
from prefect.cache_policies import NO_CACHE
from pyproj import CRS
from stac2cube.tasks.group import TimeStep

from stac2cube.grid import Grid
from stac2cube.items import item_datetime
from stac2cube.radiometry import Radiometry, decide_radiometry
from stac2cube.request import CubeRequest

# Largest reflectance the uint16 storage (scale 1e-4, offset -0.1) can hold
MAX_STORED_REFLECTANCE = 65535 * 1e-4 - 0.1


def to_physical(raw: xr.DataArray, radiometry: Sequence[Radiometry]) -> xr.DataArray:
    """float32 physical values of a raw ``(item, ...)`` DN array; NaN where DN == 0.

    Example:
        >>> raw = xr.DataArray(np.array([[0, 1000, 2500]], "uint16"), dims=("item", "x"))
        >>> to_physical(raw, [Radiometry("s2-offset-1000", 1e-4, -0.1)]).values.round(4)
        array([[   nan, 0.    , 0.15  ]], dtype=float32)
    """
    scale = xr.DataArray(np.array([r.scale for r in radiometry], "float32"), dims="item")
    offset = xr.DataArray(np.array([r.offset for r in radiometry], "float32"), dims="item")
    values = raw.astype("float32") * scale + offset
    return values.where(raw != 0).clip(max=MAX_STORED_REFLECTANCE)


def mosaic_first_valid(
    data: xr.DataArray, steps: Sequence[Sequence[int]], *, nodata: float | int | None = None
) -> xr.DataArray:
    """Combine the items of each step (positions along ``item``): first valid value wins.

    Valid means not NaN (``nodata=None``) or not equal to ``nodata``.
    """
    out = []
    for positions in steps:
        acc = data.isel(item=positions[0])
        for pos in positions[1:]:
            missing = acc.isnull() if nodata is None else acc == nodata
            acc = xr.where(missing, data.isel(item=pos), acc, keep_attrs=True)
        out.append(acc.drop_vars("item", errors="ignore"))
    return xr.concat(out, dim="time", coords="minimal", join="exact")


def spatial_ref(grid: Grid) -> xr.DataArray:
    """The CF grid-mapping coordinate rioxarray and odc-geo read the CRS from."""
    crs = CRS.from_epsg(grid.epsg)
    attrs = crs.to_cf()
    attrs["spatial_ref"] = crs.to_wkt()
    attrs["GeoTransform"] = " ".join(
        str(v)
        for v in (grid.bounds[0], grid.resolution, 0.0, grid.bounds[3], 0.0, -grid.resolution)
    )
    return xr.DataArray(np.int32(0), attrs=attrs)


def ledger_entries(
    steps: Sequence[TimeStep], radiometry: Sequence[Sequence[Radiometry]]
) -> list[dict[str, Any]]:
    """JSON-ready record of each step: its items and the radiometry applied to each."""
    out = []
    for step, rads in zip(steps, radiometry, strict=True):
        out.append(
            {
                "time": step.time.isoformat(),
                "solar_day": step.solar_day.isoformat(),
                "items": [
                    {
                        "id": item["id"],
                        "collection": item.get("collection"),
                        "datetime": item_datetime(item).isoformat(),
                        "processing_baseline": rad.baseline,
                        "rule": rad.rule,
                        "scale": rad.scale,
                        "offset": rad.offset,
                        "warnings": list(rad.warnings),
                    }
                    for item, rad in zip(step.items, rads, strict=True)
                ],
            }
        )
    return out


def _joined(values) -> str:
    return ",".join(dict.fromkeys(str(v) for v in values))


def build_dataset(
    request: CubeRequest, steps: Sequence[TimeStep], raw: dict[str, xr.DataArray]
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """The cube's variables for ``steps`` (lazy) and their ledger entries.

    ``raw`` holds the stacks of :func:`stac2cube.tasks.load.load_raw` for the items of
    ``steps``, in step order.
    """
    rads = [[decide_radiometry(request.mission.id, i) for i in s.items] for s in steps]
    flat = [r for step_rads in rads for r in step_rads]
    positions, k = [], 0
    for step in steps:
        positions.append(list(range(k, k + len(step.items))))
        k += len(step.items)

    variables = {}
    if "reflectance" in raw:
        refl = mosaic_first_valid(to_physical(raw["reflectance"], flat), positions)
        for name in refl.band.values:
            variables[str(name)] = refl.sel(band=name, drop=True).assign_attrs(
                long_name=f"{request.mission.band(str(name)).name} surface reflectance",
                units="1",
                grid_mapping="spatial_ref",
            )
    if "classification" in raw:
        classes = mosaic_first_valid(raw["classification"], positions, nodata=0)
        for name in classes.band.values:
            variables[str(name)] = classes.sel(band=name, drop=True).assign_attrs(
                long_name=f"{name} classification", nodata=0, grid_mapping="spatial_ref"
            )
    ds = xr.Dataset(variables)
    ds = ds.assign_coords(
        time=pd.DatetimeIndex([s.time for s in steps]).astype("datetime64[ns]"),
        spatial_ref=spatial_ref(request.grid),
        n_scenes=("time", np.array([len(s.items) for s in steps], "int16")),
        item_ids=("time", np.array([_joined(s.item_ids) for s in steps], object)),
        radiometry_rule=("time", np.array([_joined(r.rule for r in sr) for sr in rads], object)),
        processing_baseline=(
            "time",
            np.array([_joined(r.baseline for r in sr) for sr in rads], object),
        ),
    )
    warnings = [w for r in flat for w in r.warnings]
    if warnings:
        from stac2cube._log import get_logger

        log = get_logger()
        for w in dict.fromkeys(warnings):
            log.warning("radiometry: %s", w)
    return ds, ledger_entries(steps, rads)


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(
    request: CubeRequest, steps: list[TimeStep], raw: dict[str, xr.DataArray]
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """Prefect task: :func:`build_dataset` (lazy)."""
    return build_dataset(request, steps, raw)
