"""How each cube variable is stored: its Zarr/CF encoding and its attributes.

What each variable holds, and how it is stored (``var.encoding``, honoured by the store):

==================  ==========================  =========================================================
kind                decoded values              stored as
==================  ==========================  =========================================================
S2 reflectance      reflectance, NaN nodata     uint16, scale 1e-4, offset -0.1, _FillValue 0
Landsat SR          reflectance, NaN nodata     uint16, scale 2.75e-05, offset -0.2, _FillValue 0 (= DN)
Landsat ST          kelvin, NaN nodata          uint16, scale 0.00341802, offset 149, _FillValue 0 (= DN)
SCL                 classes, 0 nodata           uint8
qa_pixel            bit flags, 1 (fill) nodata  uint16
qa_<flag> masks     0/1 (fill: qa_fill = 1)     uint8
S1 dB (default)     dB, NaN nodata              int16, scale 0.01, _FillValue -32768 (0.01 dB steps)
S1 linear           gamma0, NaN nodata          float32, _FillValue NaN
DEM elevation       metres, NaN nodata          float32, _FillValue NaN
==================  ==========================  =========================================================

Sentinel-2 DN 65535 (saturated) is nodata. The S2 encoding stores -0.0999 .. 6.4535 (65535 *
1e-4 - 0.1); a valid value beyond a scaled-integer encoding's range (S2 DN above 64535 read
without an offset) is clipped to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stac2cube.missions import BandSpec, MissionSpec
from stac2cube.radiometry import QA_PIXEL_BITS, ProcessingOptions

S2_REFLECTANCE_ENCODING = {
    "dtype": "uint16",
    "scale_factor": 1e-4,
    "add_offset": -0.1,
    "_FillValue": 0,
}
LANDSAT_SR_ENCODING = {
    "dtype": "uint16",
    "scale_factor": 2.75e-05,
    "add_offset": -0.2,
    "_FillValue": 0,
}
LANDSAT_ST_ENCODING = {
    "dtype": "uint16",
    "scale_factor": 0.00341802,
    "add_offset": 149.0,
    "_FillValue": 0,
}
DB_ENCODING = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 0.0, "_FillValue": -32768}
FLOAT_ENCODING = {"dtype": "float32", "_FillValue": np.float32(np.nan)}


def variable_encoding(
    mission: MissionSpec, band: BandSpec, options: ProcessingOptions | None = None
) -> dict[str, Any]:
    """How ``band`` of ``mission`` is stored (a Zarr/CF encoding dict; see the module docs)."""
    options = options or ProcessingOptions()
    if band.kind == "reflectance":
        if mission.radiometry == "landsat-c2-l2":
            return dict(LANDSAT_SR_ENCODING)
        return dict(S2_REFLECTANCE_ENCODING)
    if band.kind == "temperature":
        return dict(LANDSAT_ST_ENCODING)
    if band.kind == "backscatter":
        return dict(DB_ENCODING) if options.sar_scale == "db" else dict(FLOAT_ENCODING)
    if band.kind == "elevation":
        return dict(FLOAT_ENCODING)
    return {"dtype": mission.band_dtype(band)}


def stored_range(encoding: dict[str, Any]) -> tuple[float, float] | None:
    """Smallest and largest value a scaled-integer ``encoding`` holds (its fill excluded).

    >>> lo, hi = stored_range(S2_REFLECTANCE_ENCODING)
    >>> round(lo, 4), round(hi, 4)
    (-0.0999, 6.4535)
    """
    dtype = np.dtype(encoding["dtype"])
    if dtype.kind not in "iu" or "scale_factor" not in encoding:
        return None
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    fill = encoding.get("_FillValue")
    if fill == lo:
        lo += 1
    elif fill == hi:
        hi -= 1
    s, o = float(encoding["scale_factor"]), float(encoding.get("add_offset", 0.0))
    return (lo * s + o, hi * s + o)


_KIND_TEXT = {
    "reflectance": "surface reflectance",
    "temperature": "surface temperature",
    "backscatter": "gamma0 backscatter",
    "elevation": "elevation",
}


def variable_attrs(
    mission: MissionSpec, band: BandSpec, options: ProcessingOptions
) -> dict[str, Any]:
    """The attributes of the stored ``band`` variable: ``long_name``, ``units`` or ``nodata``,
    the QA_PIXEL flag masks, ``static = 1`` for a static product."""
    long_name = band.long_name or f"{band.name} {_KIND_TEXT.get(band.kind, band.kind)}"
    if mission.id == "sentinel-2-l1c" and band.kind == "reflectance":
        long_name = f"{band.name} top-of-atmosphere reflectance"
    attrs: dict[str, Any] = {"long_name": long_name, "grid_mapping": "spatial_ref"}
    if band.kind == "backscatter":
        attrs["units"] = "dB" if options.sar_scale == "db" else "1"
    elif band.kind in ("classification", "bitfield"):
        attrs["nodata"] = int(mission.band_nodata(band))
    else:
        attrs["units"] = band.units
    if band.kind == "bitfield":
        attrs["flag_masks"] = [1 << b for b in QA_PIXEL_BITS.values()]
        attrs["flag_meanings"] = " ".join(QA_PIXEL_BITS)
    if mission.static:
        attrs["static"] = 1
    return attrs
