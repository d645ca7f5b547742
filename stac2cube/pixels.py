"""Radiometry stage on the pixels: the raw values of each item become physical values.

Each item's raw values become physical values by its own
:class:`~stac2cube.radiometry.Radiometry` (decided from the item's metadata and recorded):
scale and offset per band, nodata and the saturated value (Sentinel-2 DN 65535) to NaN, dB for
Sentinel-1 in dB. Values beyond the range the variable's encoding stores are clipped to it (see
:mod:`stac2cube.encoding`). Classification layers keep their classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import xarray as xr

from stac2cube.encoding import stored_range, variable_encoding
from stac2cube.missions import DISCRETE_KINDS, MissionSpec
from stac2cube.radiometry import ProcessingOptions, Radiometry


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


def apply_radiometry(
    mission: MissionSpec,
    kind: str,
    stack: xr.DataArray,
    radiometry: Sequence[Radiometry],
    options: ProcessingOptions,
) -> xr.DataArray:
    """The values the mosaic takes from one raw ``(item, band, y, x)`` stack of ``kind``.

    Classification layers keep their classes (QA_PIXEL: pixels with the fill bit set become its
    nodata). Other bands become float32 physical values (:func:`to_physical`, one
    ``radiometry`` an item), NaN where an item lacks the band (``Radiometry.missing``), and
    clipped to the range their encoding stores.
    """
    bands = [mission.band(str(b)) for b in stack.band.values]
    if kind in DISCRETE_KINDS:
        if kind == "bitfield":
            present = (stack & np.uint16(1)) == 0  # fill bit unset
            nodata = np.uint16(mission.band_nodata(bands[0]))
            return stack.where(present, nodata).astype(stack.dtype)
        return stack
    ranges = [stored_range(variable_encoding(mission, b, options)) for b in bands]
    lo = xr.DataArray([r[0] if r else -np.inf for r in ranges], dims="band")
    hi = xr.DataArray([r[1] if r else np.inf for r in ranges], dims="band")
    phys = to_physical(stack, radiometry)
    absent = np.array([[b.name in r.missing for b in bands] for r in radiometry], bool)
    if absent.any():  # e.g. lwir11 of L2SR items: nodata even if an asset exists
        phys = phys.where(~xr.DataArray(absent, dims=("item", "band")))
    if any(ranges):  # valid values beyond the storage range are clipped to it
        phys = phys.clip(min=lo.astype("float32"), max=hi.astype("float32"))
    return phys


#: DN shifts of the integer path: stored = DN + shift (0: DN carry the +1000 offset, the
#: stored encoding's own; 1000: processing baseline < 04.00, reflectance = DN / 10000)
INTEGER_SHIFTS = (0, 1000)


def integer_shifts(
    mission: MissionSpec,
    kind: str,
    stack: xr.DataArray,
    radiometry: Sequence[Radiometry],
    options: ProcessingOptions,
) -> np.ndarray | None:
    """Per ``(item, band)``, the integer ``k`` with stored value = DN + k, or None.

    Where each item's reflectance scaling lands on the stored encoding's grid (Sentinel-2:
    scale 1e-4 both, offsets differing by a whole number of DN), the stored integer is the DN
    shifted: no float round trip is needed. Only the shifts :data:`INTEGER_SHIFTS` qualify
    (checked value for value against the float path by the tests); anything else (dB, other
    encodings, odd offsets) returns None and takes the float path.
    """
    from stac2cube.encoding import S2_REFLECTANCE_ENCODING

    if kind != "reflectance" or stack.dtype != np.uint16:
        return None
    bands = [mission.band(str(b)) for b in stack.band.values]
    if any(variable_encoding(mission, b, options) != S2_REFLECTANCE_ENCODING for b in bands):
        return None
    enc_scale = S2_REFLECTANCE_ENCODING["scale_factor"]
    enc_offset = S2_REFLECTANCE_ENCODING["add_offset"]
    shifts = np.zeros((len(radiometry), len(bands)), "int32")
    for i, rad in enumerate(radiometry):
        if rad.transform is not None:
            return None
        for j, band in enumerate(bands):
            scale, offset = rad.scaling(band.name)
            if not math.isclose(scale, enc_scale, rel_tol=1e-9):
                return None
            shift = (offset - enc_offset) / enc_scale
            k = round(shift)
            if abs(shift - k) > 1e-6 or k not in INTEGER_SHIFTS:
                return None
            shifts[i, j] = k
    return shifts


def stored_integers(
    stack: xr.DataArray,
    radiometry: Sequence[Radiometry],
    shifts: np.ndarray,
    *,
    missing: np.ndarray | None = None,
    drop: xr.DataArray | None = None,
) -> xr.DataArray:
    """The stored ``uint16`` values of a raw reflectance ``(item, band, y, x)`` stack, computed
    in integers: DN + shift (:func:`integer_shifts`), clipped to 1..65535; 0 (the fill) where
    the float path gives NaN: the item's nodata DN (0 when unset), its saturated DN, a band it
    lacks (``missing``, ``(item, band)``) and pixels ``drop`` (``(item, y, x)``, clouds) removes.

    Example:
        >>> raw = xr.DataArray(np.array([[[[0, 1500, 65535]]]], "uint16"), dims=("item", "band", "y", "x"))
        >>> rad = Radiometry("s2-no-offset", 1e-4, 0.0, saturated=65535)
        >>> stored_integers(raw, [rad], np.array([[1000]])).values.ravel().tolist()
        [0, 2500, 0]
    """
    dn = stack.astype("int32")
    invalid = xr.zeros_like(stack, dtype=bool)
    nodata = np.array([0 if r.nodata is None else r.nodata for r in radiometry], "float64")
    saturated = np.array([np.nan if r.saturated is None else r.saturated for r in radiometry])
    for marker in (nodata, saturated):
        finite = ~np.isnan(marker)
        if finite.any():
            value = xr.DataArray(np.where(finite, marker, -1).astype("int32"), dims="item")
            invalid = invalid | ((dn == value) & xr.DataArray(finite, dims="item"))
    if missing is not None and missing.any():
        invalid = invalid | xr.DataArray(missing, dims=("item", "band"))
    if drop is not None:
        invalid = invalid | drop
    shifted = (dn + xr.DataArray(shifts, dims=("item", "band"))).clip(1, 65535)
    return shifted.where(~invalid, 0).astype("uint16")
