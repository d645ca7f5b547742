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

    Each item alone: :func:`stored_mosaic` with one item per step.

    Example:
        >>> raw = xr.DataArray(np.array([[[[0, 1500, 65535]]]], "uint16"), dims=("item", "band", "y", "x"))
        >>> rad = Radiometry("s2-no-offset", 1e-4, 0.0, saturated=65535)
        >>> stored_integers(raw, [rad], np.array([[1000]])).values.ravel().tolist()
        [0, 2500, 0]
    """
    one_each = [[i] for i in range(stack.sizes["item"])]
    out = stored_mosaic(stack, radiometry, shifts, one_each, missing=missing, drop=drop)
    return out.rename(time="item")


def stored_mosaic(
    stack: xr.DataArray,
    radiometry: Sequence[Radiometry],
    shifts: np.ndarray,
    steps: Sequence[Sequence[int]],
    *,
    missing: np.ndarray | None = None,
    drop: xr.DataArray | None = None,
) -> xr.DataArray:
    """The stored integers of :func:`stored_integers`, mosaicked per step (``steps``: the
    consecutive positions along ``item`` of each step's items, :func:`~stac2cube.mosaic.step_positions`):
    first item with a value (not 0) wins, like :func:`~stac2cube.mosaic.mosaic_first_valid`
    with ``nodata=0``. A ``(time, band, y, x)`` array, lazy for a dask-backed ``stack``.

    One fused numpy function per output chunk (:func:`_stored_block`) instead of a chain of
    dask operations per step and item: the write path's graph stays a few tasks per chunk.

    Example:
        >>> raw = xr.DataArray(np.array([[[[0, 7]]], [[[5, 9]]]], "uint16"), dims=("item", "band", "y", "x"))
        >>> rads = [Radiometry("s2-no-offset", 1e-4, 0.0)] * 2
        >>> stored_mosaic(raw, rads, np.array([[0], [0]]), [[0, 1]]).values.ravel().tolist()
        [5, 7]
    """
    flat = [p for step in steps for p in step]
    if flat != list(range(stack.sizes["item"])):
        raise ValueError("stored_mosaic: the steps must list the items in order, each once")
    n_items, n_bands = stack.sizes["item"], stack.sizes["band"]
    params = {
        "shifts": np.asarray(shifts, "int32").reshape(n_items, n_bands),
        "nodata": np.array([0 if r.nodata is None else r.nodata for r in radiometry], "float64"),
        "saturated": np.array([np.nan if r.saturated is None else r.saturated for r in radiometry]),
        "missing": np.zeros((n_items, n_bands), bool) if missing is None else np.asarray(missing),
    }
    raw = stack.transpose("item", "band", "y", "x")
    masked = None if drop is None else drop.transpose("item", "y", "x").data[:, None]
    sizes = tuple(len(step) for step in steps)
    data = raw.data
    if not isinstance(data, np.ndarray):  # dask: the items of a step in one block
        import dask.array as da

        data = data.rechunk({0: sizes})
        args = [data]
        if masked is not None:  # (item, 1, y, x): broadcast over the band blocks
            args.append(da.asarray(masked).rechunk((sizes, 1, *data.chunks[2:])))
        values = da.map_blocks(
            _stored_block,
            *args,
            dtype="uint16",
            chunks=((1,) * len(sizes), *data.chunks[1:]),
            params=params,
            token="stored-mosaic",  # a prefix: the keys get a hash of the inputs
            meta=np.empty((0, 0, 0, 0), "uint16"),
        )
    else:
        parts = []
        for step in steps:
            sl = slice(step[0], step[-1] + 1)
            part = params_slice(params, sl, slice(None))
            block = raw.values[sl]
            step_drop = None if masked is None else np.asarray(masked[sl])
            parts.append(_stored_block(block, step_drop, params=part))
        values = np.concatenate(parts) if parts else np.zeros((0, *raw.shape[1:]), "uint16")
    coords = {k: v for k, v in raw.coords.items() if "item" not in v.dims}
    return xr.DataArray(values, dims=("time", "band", "y", "x"), coords=coords, attrs=raw.attrs)


def params_slice(
    params: dict[str, np.ndarray], items: slice, bands: slice
) -> dict[str, np.ndarray]:
    """The per-item (and per-band) parameters of :func:`stored_mosaic` for one block."""
    return {
        "shifts": params["shifts"][items, bands],
        "nodata": params["nodata"][items],
        "saturated": params["saturated"][items],
        "missing": params["missing"][items, bands],
    }


def _stored_block(
    dn: np.ndarray,
    drop: np.ndarray | None = None,
    *,
    params: dict[str, np.ndarray],
    block_info: dict | None = None,
) -> np.ndarray:
    """One step's items ``(k, band, y, x)`` -> its stored integers ``(1, band, y, x)``;
    ``params`` for these items, or (under dask, with ``block_info``) for all of them."""
    if block_info is not None:  # under dask: where this block lies along item and band
        (i0, i1), (b0, b1) = block_info[0]["array-location"][:2]
        params = params_slice(params, slice(i0, i1), slice(b0, b1))
    out = np.zeros((1, *dn.shape[1:]), "uint16")
    for i in range(dn.shape[0]):
        x = dn[i]
        valid = ~np.broadcast_to(params["missing"][i][:, None, None], x.shape)
        for marker in (params["nodata"][i], params["saturated"][i]):
            if not np.isnan(marker) and 0 <= int(marker) <= 65535:  # else it matches no DN
                valid = valid & (x != int(marker))
        if drop is not None:
            valid = valid & ~drop[i].astype(bool)
        shift = params["shifts"][i][:, None, None]
        if (shift == 0).all():
            value = np.maximum(x, 1, dtype="uint16")
        else:
            value = np.clip(x.astype("int32") + shift, 1, 65535).astype("uint16")
        if i == 0:
            np.copyto(out[0], value, where=valid)
            have = valid
        else:
            take = valid & ~have
            np.copyto(out[0], value, where=take)
            have = have | take
    return out
