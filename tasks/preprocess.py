"""Preprocess stage: per-item radiometry and masking, then one mosaic per time step.

Each item's raw values become physical values by its own
:class:`~stac2cube.radiometry.Radiometry` (decided from the item's metadata and recorded).
Optional cloud masking (:class:`~stac2cube.radiometry.ProcessingOptions`) removes pixels per
item *before* mosaicking. The scenes of a time step are then mosaicked in the step's order: the
first scene with a valid pixel provides it.

How each variable is stored: :mod:`stac2cube.encoding`.

Per time step, besides ``n_scenes``, ``item_ids``, ``radiometry_rule`` and ``processing_baseline``,
these coordinates describe the scenes (several scenes of a step: comma-joined distinct strings,
means of numbers; NaN or empty where the items do not say):

======================  ======================================================================
``datetimes``           acquisition datetimes (UTC, ISO) of the step's scenes
``platform``            ``sentinel-2a``, ``landsat-9``, ...
``relative_orbit``      ``sat:relative_orbit``; Sentinel-2 ``R065`` of the product name;
                        Landsat WRS-2 path
``orbit_state``         ``ascending``/``descending`` (``sat:orbit_state``, Sentinel-1)
``sun_elevation``       degrees (``view:sun_elevation``, or 90 - ``s2:mean_solar_zenith``)
``sun_azimuth``         degrees (``view:sun_azimuth`` or ``s2:mean_solar_azimuth``)
``view_angle``          degrees (``view:incidence_angle``, else ``view:off_nadir``)
``eo_cloud_cover``      the catalog's whole-scene cloud cover, percent
``valid_fraction``      share of the area's pixels (inside the AOI polygon, else the grid)
                        where the step has data (first requested band)
``cloud_fraction``      share of those valid pixels the QA layer flags as cloud (SCL classes
                        or QA_PIXEL flags of the processing options); NaN where the QA
                        band is not read (see ``bands_to_load``).
                        With cloud masking, masked pixels are not valid, so this is what
                        the mask left
``tile``                the step's tile (``tile_mode="separate"`` only; always there then)
======================  ======================================================================

``valid_fraction`` and ``cloud_fraction`` are lazy: written with the pixels, or computed first
when a coverage or scene-cloud filter needs them. Requested spectral indices
(:mod:`stac2cube.indices`) are computed from the mosaicked physical values and stored like bands;
with ``clip`` every variable is nodata outside the AOI polygon.

Static products (the DEM) become a single time step at :data:`STATIC_TIME` (1970-01-01T00:00:00,
the Unix epoch: a fixed sentinel, not an acquisition time), mosaicking every tile; the
variables carry the attribute ``static = 1``. A fixed time keeps the store's time-based
machinery (chunking, ledger, update planning) unchanged and makes re-runs idempotent.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from prefect import task
from prefect.cache_policies import NO_CACHE
from pyproj import CRS

from stac2cube.encoding import (
    stored_range,
    variable_attrs,
    variable_encoding,
)
from stac2cube.grid import Grid
from stac2cube.indices import INDICES, compute_index
from stac2cube.items import item_datetime
from stac2cube.missions import MissionSpec
from stac2cube.radiometry import (
    QA_MASK_FLAGS,
    QA_PIXEL_BITS,
    ProcessingOptions,
    Radiometry,
    decide_radiometry,
)
from stac2cube.request import CubeRequest
from stac2cube.tasks.group import TimeStep

#: The time of the single step of a static product (DEM).
STATIC_TIME = dt.datetime(1970, 1, 1)


def to_physical(
    raw: xr.DataArray,
    radiometry: Sequence[Radiometry],
    *,
    clip: tuple[float, float] | None = None,
) -> xr.DataArray:
    """float32 physical values of a raw ``(item, [band,] ...)`` array; NaN for nodata.

    Nodata: each item's ``Radiometry.nodata`` (0 for integer data when unset), its
    ``Radiometry.saturated`` value (Sentinel-2 DN 65535) and NaN. With a
    ``band`` dimension each band gets its own scale/offset (:meth:`Radiometry.scaling`). Items
    whose ``transform`` is ``db`` get 10 * log10 of the value (NaN where it is <= 0).

    Example:
        >>> raw = xr.DataArray(np.array([[0, 1500, 2500]], "uint16"), dims=("item", "x"))
        >>> to_physical(raw, [Radiometry("s2-offset-1000", 1e-4, -0.1)]).values.round(4)
        array([[ nan, 0.05, 0.15]], dtype=float32)
    """
    n = len(radiometry)
    if "band" in raw.dims:
        names = [str(b) for b in raw.band.values]
        scale = np.array([[r.scaling(b)[0] for b in names] for r in radiometry], "float64")
        offset = np.array([[r.scaling(b)[1] for b in names] for r in radiometry], "float64")
        scale_da = xr.DataArray(scale.astype("float32"), dims=("item", "band"))
        offset_da = xr.DataArray(offset.astype("float32"), dims=("item", "band"))
    else:
        scale_da = xr.DataArray(np.array([r.scale for r in radiometry], "float32"), dims="item")
        offset_da = xr.DataArray(np.array([r.offset for r in radiometry], "float32"), dims="item")
    integer = raw.dtype.kind in "iu"
    default_nodata = 0.0 if integer else math.nan
    nodata = np.array(
        [default_nodata if r.nodata is None else float(r.nodata) for r in radiometry], "float64"
    )
    values = raw.astype("float32")
    invalid = xr.zeros_like(raw, dtype=bool)
    saturated = np.array(
        [math.nan if r.saturated is None else float(r.saturated) for r in radiometry], "float64"
    )
    for marker in (nodata, saturated):
        finite = ~np.isnan(marker)
        if finite.any():
            nd = xr.DataArray(np.where(finite, marker, 0.0), dims="item")
            hit = values == nd.astype("float32")
            invalid = invalid | (hit & xr.DataArray(finite, dims="item"))
    if not integer:
        invalid = invalid | values.isnull()
    values = values * scale_da + offset_da
    db = np.array([r.transform == "db" for r in radiometry], bool)
    if db.any():
        as_db = 10.0 * np.log10(values.where(values > 0))
        values = xr.where(xr.DataArray(db, dims="item"), as_db, values).astype("float32")
    values = values.where(~invalid)
    if clip is not None:
        values = values.clip(min=clip[0], max=clip[1])
    assert values.sizes["item"] == n
    return values


def mosaic_first_valid(
    data: xr.DataArray,
    steps: Sequence[Sequence[int]],
    *,
    nodata: float | int | None = None,
    valid: xr.DataArray | None = None,
) -> xr.DataArray:
    """Combine the items of each step (positions along ``item``): first valid value wins.

    Valid means not NaN (``nodata=None``) or not equal to ``nodata``; with ``valid`` (a boolean
    ``(item, ...)`` array) an item's pixel counts only where ``valid`` is true as well, and
    where no item is valid the first value that is not nodata is kept (so a classification
    layer shows why a masked pixel is empty).
    """

    def present(pos: int) -> xr.DataArray:
        layer = data.isel(item=pos)
        return layer.notnull() if nodata is None else layer != nodata

    out = []
    for positions in steps:
        acc = data.isel(item=positions[0])
        have = present(positions[0])
        if valid is not None:
            have = have & valid.isel(item=positions[0])
        for pos in positions[1:]:
            cand = present(pos) if valid is None else present(pos) & valid.isel(item=pos)
            take = ~have & cand
            acc = xr.where(take, data.isel(item=pos), acc, keep_attrs=True)
            have = have | cand
        if valid is not None:
            fallback = mosaic_first_valid(data, [positions], nodata=nodata).isel(time=0)
            acc = xr.where(have, acc, fallback, keep_attrs=True)
        out.append(acc.drop_vars("item", errors="ignore").astype(data.dtype))
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


def _joined(values) -> str:
    return ",".join(dict.fromkeys("" if v is None else str(v) for v in values))


def cloud_masks(
    mission: MissionSpec, raw: dict[str, xr.DataArray], options: ProcessingOptions
) -> xr.DataArray | None:
    """Per-item ``(item, y, x)`` boolean: pixels to drop (clouds, shadows) or None.

    Sentinel-2 L2A: SCL in ``options.scl_classes``; Landsat: any QA_PIXEL flag of
    ``options.qa_flags`` set.
    """
    if not options.mask_clouds or not mission.qa_band:
        return None
    qa = mission.band(mission.qa_band)
    stack = raw.get(qa.kind)
    if stack is None or qa.name not in stack.band.values:
        raise ValueError(f"cloud masking needs band {qa.name}; load it with the same options")
    layer = stack.sel(band=qa.name, drop=True)
    if qa.kind == "classification":
        return layer.isin(list(options.scl_classes))
    return (layer & np.uint16(options.qa_mask_bits)) != 0


def qa_flag_masks(qa: xr.DataArray) -> dict[str, xr.DataArray]:
    """``qa_<flag>`` uint8 0/1 layers decoded from QA_PIXEL (see ``QA_MASK_FLAGS``)."""
    out = {}
    for flag in QA_MASK_FLAGS:
        bit = QA_PIXEL_BITS[flag]
        out[f"qa_{flag}"] = ((qa >> bit) & 1).astype("uint8")
    return out


def _aoi_mask(request: CubeRequest, raw: dict[str, xr.DataArray]) -> xr.DataArray:
    """``(y, x)`` boolean DataArray: pixel centres inside the request's AOI polygon."""
    from stac2cube.aoi import polygon_mask

    stack = next(iter(raw.values()))
    mask = polygon_mask(request.grid, request.intersects)
    return xr.DataArray(mask, dims=("y", "x"), coords={"y": stack.y, "x": stack.x})


def _clipped(var: xr.DataArray, inside: xr.DataArray, nodata: float, kind: str) -> xr.DataArray:
    """``var`` with pixels outside the AOI set to nodata (NaN, or the band's integer nodata)."""
    if kind in ("classification", "bitfield"):
        return var.where(inside, var.dtype.type(nodata)).astype(var.dtype)
    return var.where(inside)


def _valid_layer(mission: MissionSpec, mosaics: dict[str, xr.DataArray], request) -> xr.DataArray:
    """Where a step has data: the first requested band that is not a QA layer (else any)."""
    order = [b for b in request.bands if b.kind not in ("classification", "bitfield")]
    order += [mission.band(n) for n in mosaics if mission.band(n) not in order]
    band = order[0]
    var = mosaics[band.name]
    if band.kind in ("classification", "bitfield"):
        return var != mission.band_nodata(band)
    return var.notnull()


def step_fractions(
    request: CubeRequest,
    mosaics: dict[str, xr.DataArray],
    inside: xr.DataArray | None,
    options: ProcessingOptions,
) -> dict[str, tuple[str, Any]]:
    """Lazy per-step ``valid_fraction`` and ``cloud_fraction`` coordinates (see the module docs).

    ``valid_fraction``: the share of the area's pixels (inside the AOI polygon, else the whole
    grid) where the step has data. ``cloud_fraction``: of those valid pixels that have a QA
    value, the share the step's QA layer flags as cloud (SCL in ``options.scl_classes``;
    QA_PIXEL bits of ``options.qa_flags``); NaN without a QA band or such pixels.
    """
    mission = request.mission
    valid = _valid_layer(mission, mosaics, request)
    if inside is not None:
        valid = valid & inside
        area = float(inside.sum()) or np.nan
    else:
        area = float(valid.sizes["y"] * valid.sizes["x"])
    n_valid = valid.sum(("y", "x"))
    out: dict[str, tuple[str, Any]] = {
        "valid_fraction": ("time", (n_valid / area).astype("float32").data)
    }
    qa_name = mission.qa_band
    if qa_name and qa_name in mosaics:
        qa = mosaics[qa_name]
        if mission.band(qa_name).kind == "classification":
            cloud = qa.isin(list(options.scl_classes))
        else:
            cloud = (qa & np.uint16(options.qa_mask_bits)) != 0
        judged = valid & (qa != mission.band_nodata(mission.band(qa_name)))
        n_judged = judged.sum(("y", "x"))
        n_cloud = (cloud & judged).sum(("y", "x"))
        fraction = (n_cloud / n_judged.where(n_judged > 0)).astype("float32")
        out["cloud_fraction"] = ("time", fraction.data)
    else:
        out["cloud_fraction"] = ("time", np.full(valid.sizes["time"], np.nan, "float32"))
    return out


_ORBIT_IN_NAME = re.compile(r"_R(\d{3})_")


def relative_orbit(item: dict[str, Any]) -> str | None:
    """Relative orbit (track) of an item: ``sat:relative_orbit``, the ``R065`` of a Sentinel-2
    product name, or the WRS-2 path of Landsat."""
    props = item.get("properties", {})
    if props.get("sat:relative_orbit") is not None:
        return str(int(props["sat:relative_orbit"]))
    if props.get("landsat:wrs_path") is not None:
        return str(int(props["landsat:wrs_path"]))
    for text in (props.get("s2:product_uri"), props.get("s2:granule_id"), item.get("id")):
        match = _ORBIT_IN_NAME.search(text or "")
        if match:
            return str(int(match.group(1)))
    return None


def _angles(item: dict[str, Any]) -> tuple[float, float, float]:
    """(sun elevation, sun azimuth, view angle) in degrees from ``view:`` or ``s2:`` fields."""
    p = item.get("properties", {})

    def num(*keys: str) -> float:
        for key in keys:
            if p.get(key) is not None:
                return float(p[key])
        return math.nan

    elevation = num("view:sun_elevation")
    if math.isnan(elevation) and p.get("s2:mean_solar_zenith") is not None:
        elevation = 90.0 - float(p["s2:mean_solar_zenith"])
    azimuth = num("view:sun_azimuth", "s2:mean_solar_azimuth")
    view = num("view:incidence_angle", "view:off_nadir")
    return elevation, azimuth, view


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def scene_coords(
    steps: Sequence[TimeStep], *, tiles: bool = False
) -> dict[str, tuple[str, np.ndarray]]:
    """Per-step scene metadata coordinates (see the module docs) from the items' properties.

    ``tile`` is added when ``tiles`` (a ``tile_mode="separate"`` cube: every batch written to
    it must have the same coordinates) or when some step has a tile.
    """

    def joined(fn) -> np.ndarray:
        return np.array([_joined(fn(i) for i in s.items) for s in steps], object)

    def mean(fn) -> np.ndarray:
        return np.array([_mean([fn(i) for i in s.items]) for s in steps], "float32")

    def prop(key: str):
        return lambda i: i.get("properties", {}).get(key)

    cloud = prop("eo:cloud_cover")
    out = {
        "datetimes": joined(lambda i: item_datetime(i).isoformat()),
        "platform": joined(lambda i: (prop("platform")(i) or "").lower() or None),
        "relative_orbit": joined(relative_orbit),
        "orbit_state": joined(prop("sat:orbit_state")),
        "sun_elevation": mean(lambda i: _angles(i)[0]),
        "sun_azimuth": mean(lambda i: _angles(i)[1]),
        "view_angle": mean(lambda i: _angles(i)[2]),
        "eo_cloud_cover": mean(lambda i: math.nan if cloud(i) is None else float(cloud(i))),
    }
    if tiles or any(s.tile is not None for s in steps):
        out["tile"] = np.array([s.tile or "" for s in steps], object)
    return {name: ("time", values) for name, values in out.items()}


def build_dataset(
    request: CubeRequest,
    steps: Sequence[TimeStep],
    raw: dict[str, xr.DataArray],
    *,
    options: ProcessingOptions | None = None,
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """The cube's variables for ``steps`` (lazy) and their ledger entries.

    Args:
        request: the validated request.
        steps: the time steps; for a static mission their items are merged into one step at
            :data:`STATIC_TIME` (keeping their order).
        raw: the stacks of :func:`stac2cube.tasks.load.load_raw` for the items of ``steps``,
            in step order, loaded with the same ``options``.
        options: processing options (cloud masking, SAR scale); default: the request's, if it
            carries them, else :class:`~stac2cube.radiometry.ProcessingOptions` defaults.

    Returns:
        ``(dataset, ledger entries)``; each variable's ``encoding`` says how it is stored.
    """
    from stac2cube.tasks.load import options_of

    options = options_of(request, options)
    mission = request.mission
    if mission.static and steps:
        steps = [static_step([i for s in steps for i in s.items])]
    rads = [[decide_radiometry(mission.id, i, options=options) for i in s.items] for s in steps]
    flat = [r for step_rads in rads for r in step_rads]
    positions, k = [], 0
    for step in steps:
        positions.append(list(range(k, k + len(step.items))))
        k += len(step.items)

    masked = cloud_masks(mission, raw, options)
    wanted = {b.name for b in request.bands}
    inside = _aoi_mask(request, raw) if request.intersects is not None else None
    mosaics: dict[str, xr.DataArray] = {}  # every band read, decoded, by name
    variables: dict[str, xr.DataArray] = {}
    for kind, stack in raw.items():
        bands = [mission.band(str(b)) for b in stack.band.values]
        if kind in ("classification", "bitfield"):
            nodata = mission.band_nodata(bands[0])
            if kind == "bitfield":
                present = (stack & np.uint16(1)) == 0  # fill bit unset
                values = stack.where(present, np.uint16(nodata)).astype(stack.dtype)
            else:
                values = stack
            mosaic = mosaic_first_valid(
                values, positions, nodata=nodata, valid=None if masked is None else ~masked
            )
        else:
            ranges = [stored_range(variable_encoding(mission, b, options)) for b in bands]
            lo = xr.DataArray([r[0] if r else -np.inf for r in ranges], dims="band")
            hi = xr.DataArray([r[1] if r else np.inf for r in ranges], dims="band")
            phys = to_physical(stack, flat)
            absent = np.array([[b.name in r.missing for b in bands] for r in flat], bool)
            if absent.any():  # e.g. lwir11 of L2SR items: nodata even if an asset exists
                phys = phys.where(~xr.DataArray(absent, dims=("item", "band")))
            if any(ranges):  # valid values beyond the storage range are clipped to it
                phys = phys.clip(min=lo.astype("float32"), max=hi.astype("float32"))
            if masked is not None and kind in ("reflectance", "temperature"):
                phys = phys.where(~masked)
            mosaic = mosaic_first_valid(phys, positions)
        for band in bands:
            var = mosaic.sel(band=band.name, drop=True)
            if request.clip and inside is not None:
                var = _clipped(var, inside, mission.band_nodata(band), kind)
            mosaics[band.name] = var
            if band.name not in wanted:
                continue  # read for indices, masking or the cloud fraction only
            var = var.assign_attrs(variable_attrs(mission, band, options))
            var.encoding = variable_encoding(mission, band, options)
            variables[band.name] = var
            if band.kind == "bitfield":
                for name, flag in qa_flag_masks(var).items():
                    flag = flag.assign_attrs(
                        long_name=f"QA_PIXEL {name.removeprefix('qa_')} flag",
                        flag_values=[0, 1],
                        flag_meanings="no yes",
                        grid_mapping="spatial_ref",
                    )
                    flag.encoding = {"dtype": "uint8"}
                    variables[name] = flag
    ds = xr.Dataset({b.name: variables[b.name] for b in request.bands if b.name in variables})
    for name, var in variables.items():  # derived layers (qa_* masks) after the bands
        if name not in ds:
            ds[name] = var
    for name in getattr(request, "indices", ()):
        index = compute_index(name, mission, mosaics, sar_scale=options.sar_scale)
        index = index.assign_attrs(grid_mapping="spatial_ref")
        index.encoding = INDICES[name].encoding
        ds[name] = index
    fractions = step_fractions(request, mosaics, inside, options)
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
        **fractions,
        **scene_coords(steps, tiles=getattr(request, "tile_mode", "mosaic") == "separate"),
    )
    warnings = [w for r in flat for w in r.warnings]
    if warnings:
        from stac2cube._log import get_logger

        log = get_logger()
        for w in dict.fromkeys(warnings):
            log.warning("radiometry: %s", w)
    return ds, ledger_entries(steps, rads, request.catalog.name)


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(
    request: CubeRequest,
    steps: list[TimeStep],
    raw: dict[str, xr.DataArray],
    options: ProcessingOptions | None = None,
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """Prefect task: :func:`build_dataset` (lazy)."""
    return build_dataset(request, steps, raw, options=options)
