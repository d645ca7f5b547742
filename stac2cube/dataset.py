"""The cube's variables for a batch of time steps, and their ledger entries.

:func:`build_dataset` runs the pixel stages of one batch, lazily, in order: the raw stacks
(load) -> physical values (:mod:`stac2cube.pixels`, radiometry) -> cloud masks per item
(:mod:`stac2cube.masks`) -> one mosaic per time step (:mod:`stac2cube.mosaic`: the first scene
with a valid pixel provides it) -> spectral indices (:mod:`stac2cube.indices`, derive) -> the
per-step fractions the coverage and cloud filters read. Requested spectral indices are computed
from the mosaicked physical values and stored like bands; with ``clip`` every variable is nodata
outside the AOI polygon. How each variable is stored: :mod:`stac2cube.encoding`; the per-step
coordinates: :mod:`stac2cube.scene_metadata`.

Static products (the DEM) become a single time step at :data:`STATIC_TIME` (1970-01-01T00:00:00,
the Unix epoch: a fixed sentinel, not an acquisition time), mosaicking every tile; the
variables carry the attribute ``static = 1``. A fixed time keeps the store's time-based
machinery (chunking, ledger, update planning) unchanged and makes re-runs idempotent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

from stac2cube.encoding import variable_attrs, variable_encoding
from stac2cube.grid import Grid
from stac2cube.indices import INDICES, compute_index
from stac2cube.items import item_datetime
from stac2cube.load import options_of
from stac2cube.masks import (
    aoi_mask,
    apply_cloud_mask,
    clip_to_aoi,
    cloud_masks,
    qa_flag_variables,
    step_fractions,
)
from stac2cube.missions import DISCRETE_KINDS, MissionSpec
from stac2cube.mosaic import mosaic_first_valid, step_positions
from stac2cube.pixels import apply_radiometry, integer_shifts, stored_mosaic
from stac2cube.radiometry import ProcessingOptions, Radiometry, decide_radiometry
from stac2cube.scene_metadata import scene_coords, step_coords
from stac2cube.steps import TimeStep

if TYPE_CHECKING:
    from stac2cube.request import CubeRequest

#: The time of the single step of a static product (DEM).
STATIC_TIME = dt.datetime(1970, 1, 1)


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


def static_step(items: Sequence[dict[str, Any]]) -> TimeStep:
    """All ``items`` of a static product as one time step at :data:`STATIC_TIME`.

    Use in place of solar-day grouping for missions with ``time_series=False``; the items keep
    their order (the mosaic order: the first valid pixel wins).
    """
    return TimeStep(STATIC_TIME, STATIC_TIME.date(), tuple(items))


def static_steps(items: Sequence[dict[str, Any]]) -> list[TimeStep]:
    """``[static_step(items sorted by id)]``, or ``[]`` without items."""
    return [static_step(sorted(items, key=lambda i: i["id"]))] if items else []


def ledger_entries(
    steps: Sequence[TimeStep],
    radiometry: Sequence[Sequence[Radiometry]],
    catalog: str | None = None,
) -> list[dict[str, Any]]:
    """JSON-ready record of each step: its items, the radiometry applied to each, and the
    metadata contradictions its radiometry decisions met (``contradictions``)."""
    out = []
    for step, rads in zip(steps, radiometry, strict=True):
        entry: dict[str, Any] = {
            "time": step.time.isoformat(),
            "solar_day": step.solar_day.isoformat(),
            "items": [
                {
                    "id": item["id"],
                    "collection": item.get("collection"),
                    "datetime": item_datetime(item).isoformat(),
                    **rad.record(),
                }
                for item, rad in zip(step.items, rads, strict=True)
            ],
            "contradictions": list(dict.fromkeys(w for rad in rads for w in rad.warnings)),
        }
        if catalog:
            entry["catalog"] = catalog
        out.append(entry)
    return out


def build_dataset(
    request: CubeRequest,
    steps: Sequence[TimeStep],
    raw: dict[str, xr.DataArray],
    *,
    options: ProcessingOptions | None = None,
    integers: bool = False,
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """The cube's variables for ``steps`` (lazy) and their ledger entries.

    Args:
        request: the validated request.
        steps: the time steps; for a static mission their items are merged into one step at
            :data:`STATIC_TIME` (keeping their order).
        raw: the stacks of :func:`stac2cube.load.load_raw` for the items of ``steps``,
            in step order, loaded with the same ``options``.
        options: processing options (cloud masking, SAR scale); default: the request's, if it
            carries them, else :class:`~stac2cube.radiometry.ProcessingOptions` defaults.
        integers: the write path's form: requested bands whose stored integers equal the DN
            shifted (Sentinel-2 reflectance) are given as those ``uint16`` integers with their
            CF attributes (``scale_factor``, ``add_offset``, ``_FillValue``), computed without a
            float round trip; default: every band as physical values.

    Returns:
        ``(dataset, ledger entries)``; each variable's ``encoding`` says how it is stored.
    """
    options = options_of(request, options)
    mission = request.mission
    if mission.static and steps:
        steps = [static_step([i for s in steps for i in s.items])]
    rads = [[decide_radiometry(mission.id, i, options=options) for i in s.items] for s in steps]
    inside = aoi_mask(request, raw) if request.intersects is not None else None
    # radiometry, mask, mosaic (float32 physical values; stored integers where they are DN)
    mosaics, stored = _mosaics(request, steps, raw, rads, inside, options, integers=integers)
    ds = _stored_variables(request, mosaics, options, stored)
    ds = _with_indices(ds, request, mosaics, options)  # derive
    ds = ds.assign_coords(
        time=pd.DatetimeIndex([s.time for s in steps]).astype("datetime64[ns]"),
        spatial_ref=spatial_ref(request.grid),
        **step_coords(steps, rads),
        **step_fractions(request, mosaics, inside, options, stored),  # what the filters read
        **scene_coords(steps, tiles=request.tile_mode == "separate"),
    )
    _log_warnings(rads)
    return ds, ledger_entries(steps, rads, request.catalog.name)


def _mosaics(
    request: CubeRequest,
    steps: Sequence[TimeStep],
    raw: dict[str, xr.DataArray],
    radiometry: Sequence[Sequence[Radiometry]],
    inside: xr.DataArray | None,
    options: ProcessingOptions,
    *,
    integers: bool = False,
) -> tuple[dict[str, xr.DataArray], dict[str, xr.DataArray]]:
    """Every band read, decoded and mosaicked per step, by name (clipped to the AOI with
    ``request.clip``): radiometry -> mask -> mosaic, one raw stack (one band kind) at a time.

    Returns:
        ``(physical, stored)``: float32 physical mosaics of every band read (what indices and
        the per-step fractions use), and with ``integers``, for the requested bands whose
        stored integers equal the DN shifted (:func:`~stac2cube.pixels.integer_shifts`),
        those integers mosaicked directly, with no float round trip (the dask graph shares
        the reads of both).
    """
    mission = request.mission
    flat = [r for step_rads in radiometry for r in step_rads]
    positions = step_positions(steps)
    drop = cloud_masks(mission, raw, options)
    wanted = {b.name for b in request.bands}
    out: dict[str, xr.DataArray] = {}
    stored: dict[str, xr.DataArray] = {}
    for kind, stack in raw.items():
        bands = [mission.band(str(b)) for b in stack.band.values]
        shifts = integer_shifts(mission, kind, stack, flat, options) if integers else None
        if shifts is not None and wanted & {b.name for b in bands}:
            missing = np.array([[b.name in r.missing for b in bands] for r in flat], bool)
            mosaic = stored_mosaic(stack, flat, shifts, positions, missing=missing, drop=drop)
            for band in bands:
                if band.name in wanted:
                    var = mosaic.sel(band=band.name, drop=True)
                    if request.clip and inside is not None:
                        var = var.where(inside, np.uint16(0)).astype("uint16")
                    stored[band.name] = var
        values = apply_radiometry(mission, kind, stack, flat, options)
        values, valid = apply_cloud_mask(kind, values, drop)
        nodata = mission.band_nodata(bands[0]) if kind in DISCRETE_KINDS else None
        mosaic = mosaic_first_valid(values, positions, nodata=nodata, valid=valid)
        for band in bands:
            var = mosaic.sel(band=band.name, drop=True)
            if request.clip and inside is not None:
                var = clip_to_aoi(var, inside, mission.band_nodata(band), kind)
            out[band.name] = var
    return out, stored


def _stored_variables(
    request: CubeRequest,
    mosaics: dict[str, xr.DataArray],
    options: ProcessingOptions,
    integers: dict[str, xr.DataArray] | None = None,
) -> xr.Dataset:
    """The requested bands in the request's order, with their attributes and encodings, then
    the ``qa_<flag>`` masks of a requested QA_PIXEL band. A band in ``integers`` is stored as
    those (already encoded) integers, its CF attributes (``scale_factor``, ``add_offset``,
    ``_FillValue``) set as the float path's encoding would write them."""
    mission: MissionSpec = request.mission
    wanted = {b.name for b in request.bands}
    integers = integers or {}
    variables: dict[str, xr.DataArray] = {}
    for name, var in mosaics.items():
        if name not in wanted:
            continue  # read for indices, masking or the cloud fraction only
        band = mission.band(name)
        encoding = variable_encoding(mission, band, options)
        if name in integers:
            var = integers[name].assign_attrs(
                {**variable_attrs(mission, band, options), **_cf_attrs(encoding)}
            )
            var.encoding = {"dtype": encoding["dtype"]}
        else:
            var = var.assign_attrs(variable_attrs(mission, band, options))
            var.encoding = encoding
        variables[name] = var
        if band.kind == "bitfield":
            variables.update(qa_flag_variables(var))
    ds = xr.Dataset({b.name: variables[b.name] for b in request.bands if b.name in variables})
    for name, var in variables.items():  # derived layers (qa_* masks) after the bands
        if name not in ds:
            ds[name] = var
    return ds


def _cf_attrs(encoding: dict[str, Any]) -> dict[str, Any]:
    """The attributes a scaled-integer ``encoding`` stores beside its integers."""
    return {k: encoding[k] for k in ("scale_factor", "add_offset", "_FillValue") if k in encoding}


def _with_indices(
    ds: xr.Dataset,
    request: CubeRequest,
    mosaics: dict[str, xr.DataArray],
    options: ProcessingOptions,
) -> xr.Dataset:
    """``ds`` with the request's spectral indices, computed from the mosaics."""
    for name in request.indices:
        index = compute_index(name, request.mission, mosaics, sar_scale=options.sar_scale)
        index = index.assign_attrs(grid_mapping="spatial_ref")
        index.encoding = INDICES[name].encoding
        ds[name] = index
    return ds


def _log_warnings(radiometry: Sequence[Sequence[Radiometry]]) -> None:
    """Log each distinct radiometry warning of the batch once."""
    warnings = [w for rads in radiometry for r in rads for w in r.warnings]
    if warnings:
        from stac2cube._log import get_logger

        log = get_logger()
        for w in dict.fromkeys(warnings):
            log.warning("radiometry: %s", w)
