"""Mask stage: cloud masks per item, QA_PIXEL flag layers, the AOI mask, and the per-step
``valid_fraction`` and ``cloud_fraction`` the coverage and scene-cloud filters read.

Optional cloud masking (:class:`~stac2cube.radiometry.ProcessingOptions`) removes pixels per
item *before* mosaicking (see :mod:`stac2cube.mosaic`). With ``clip`` every variable is nodata
outside the AOI polygon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from stac2cube.missions import DISCRETE_KINDS, MissionSpec
from stac2cube.radiometry import QA_MASK_FLAGS, QA_PIXEL_BITS, ProcessingOptions

if TYPE_CHECKING:
    from stac2cube.request import CubeRequest


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
    return _flagged(stack.sel(band=qa.name, drop=True), qa.kind, options)


def _flagged(qa: xr.DataArray, kind: str, options: ProcessingOptions) -> xr.DataArray:
    """Where the QA layer ``qa`` (SCL or QA_PIXEL) flags what ``options`` mask as cloud."""
    if kind == "classification":
        return qa.isin(list(options.scl_classes))
    return (qa & np.uint16(options.qa_mask_bits)) != 0


def apply_cloud_mask(
    kind: str, values: xr.DataArray, drop: xr.DataArray | None
) -> tuple[xr.DataArray, xr.DataArray | None]:
    """``(values, valid)`` of one stack of ``kind`` with the :func:`cloud_masks` ``drop`` applied.

    Reflectance and temperature become NaN where dropped; classification layers keep their
    classes and get ``valid`` (``~drop``) for :func:`~stac2cube.mosaic.mosaic_first_valid`, so
    the mosaic shows why a masked pixel is empty. ``valid`` is None otherwise.
    """
    if drop is None:
        return values, None
    if kind in DISCRETE_KINDS:
        return values, ~drop
    if kind in ("reflectance", "temperature"):
        return values.where(~drop), None
    return values, None


def qa_flag_masks(qa: xr.DataArray) -> dict[str, xr.DataArray]:
    """``qa_<flag>`` uint8 0/1 layers decoded from QA_PIXEL (see ``QA_MASK_FLAGS``)."""
    out = {}
    for flag in QA_MASK_FLAGS:
        bit = QA_PIXEL_BITS[flag]
        out[f"qa_{flag}"] = ((qa >> bit) & 1).astype("uint8")
    return out


def qa_flag_variables(qa: xr.DataArray) -> dict[str, xr.DataArray]:
    """The :func:`qa_flag_masks` of ``qa`` as stored variables: with attributes and encoding."""
    out = {}
    for name, flag in qa_flag_masks(qa).items():
        flag = flag.assign_attrs(
            long_name=f"QA_PIXEL {name.removeprefix('qa_')} flag",
            flag_values=[0, 1],
            flag_meanings="no yes",
            grid_mapping="spatial_ref",
        )
        flag.encoding = {"dtype": "uint8"}
        out[name] = flag
    return out


def aoi_mask(request: CubeRequest, raw: dict[str, xr.DataArray]) -> xr.DataArray:
    """``(y, x)`` boolean DataArray: pixel centres inside the request's AOI polygon."""
    from stac2cube.aoi import polygon_mask

    stack = next(iter(raw.values()))
    mask = polygon_mask(request.grid, request.intersects)
    return xr.DataArray(mask, dims=("y", "x"), coords={"y": stack.y, "x": stack.x})


def clip_to_aoi(var: xr.DataArray, inside: xr.DataArray, nodata: float, kind: str) -> xr.DataArray:
    """``var`` with pixels outside the AOI set to nodata (NaN, or the band's integer nodata)."""
    if kind in DISCRETE_KINDS:
        return var.where(inside, var.dtype.type(nodata)).astype(var.dtype)
    return var.where(inside)


def _valid_layer(
    mission: MissionSpec,
    mosaics: dict[str, xr.DataArray],
    request,
    stored: dict[str, xr.DataArray] | None = None,
) -> xr.DataArray:
    """Where a step has data: the first requested band that is not a QA layer (else any).

    A band in ``stored`` (its stored integers, :func:`~stac2cube.pixels.stored_mosaic`) is
    read there: its fill 0 is exactly where the float mosaic is NaN, and the write computes
    those integers anyway (the float mosaic would be a second computation of the band).
    """
    order = [b for b in request.bands if b.kind not in DISCRETE_KINDS]
    order += [mission.band(n) for n in mosaics if mission.band(n) not in order]
    band = order[0]
    if stored and band.name in stored:
        return stored[band.name] != 0
    var = mosaics[band.name]
    if band.kind in DISCRETE_KINDS:
        return var != mission.band_nodata(band)
    return var.notnull()


def step_fractions(
    request: CubeRequest,
    mosaics: dict[str, xr.DataArray],
    inside: xr.DataArray | None,
    options: ProcessingOptions,
    stored: dict[str, xr.DataArray] | None = None,
) -> dict[str, tuple[str, Any]]:
    """Lazy per-step ``valid_fraction`` and ``cloud_fraction`` coordinates (see
    :mod:`stac2cube.scene_metadata`); ``stored``: bands already as stored integers.

    ``valid_fraction``: the share of the area's pixels (inside the AOI polygon, else the whole
    grid) where the step has data. ``cloud_fraction``: of those valid pixels that have a QA
    value, the share the step's QA layer flags as cloud (SCL in ``options.scl_classes``;
    QA_PIXEL bits of ``options.qa_flags``); NaN without a QA band or such pixels.
    """
    mission = request.mission
    valid = _valid_layer(mission, mosaics, request, stored)
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
        cloud = _flagged(qa, mission.band(qa_name).kind, options)
        judged = valid & (qa != mission.band_nodata(mission.band(qa_name)))
        n_judged = judged.sum(("y", "x"))
        n_cloud = (cloud & judged).sum(("y", "x"))
        fraction = (n_cloud / n_judged.where(n_judged > 0)).astype("float32")
        out["cloud_fraction"] = ("time", fraction.data)
    else:
        out["cloud_fraction"] = ("time", np.full(valid.sizes["time"], np.nan, "float32"))
    return out
