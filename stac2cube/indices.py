"""Spectral indices and SAR ratios, computed lazily from a cube's physical values.

Each index names the *roles* it needs (``red``, ``nir``, ``vv``, ...); a mission maps the roles
to its own bands (Sentinel-2 ``red`` = ``B04``, Landsat ``nir`` = ``nir08``). An index is
offered for a mission only where every role has a band. Indices are computed from the decoded
values of the cube (surface or top-of-atmosphere reflectance; Sentinel-1 gamma0, converted from
dB to linear first) after mosaicking, and stored like bands under their own name (``NDVI``).

==========  ==========================================  =========================================
index       formula                                     reference
==========  ==========================================  =========================================
NDVI        (nir - red) / (nir + red)                   Rouse et al. 1974; Tucker 1979
NDWI        (green - nir) / (green + nir)               McFeeters 1996
MNDWI       (green - swir16) / (green + swir16)         Xu 2006
NDMI        (nir - swir16) / (nir + swir16)             Gao 1996 (NDWI of Gao); Wilson & Sader 2002
NBR         (nir - swir22) / (nir + swir22)             Key & Benson 2006
SAVI        1.5 (nir - red) / (nir + red + 0.5)         Huete 1988 (L = 0.5)
EVI         2.5 (nir - red) /                           Huete et al. 2002
            (nir + 6 red - 7.5 blue + 1)
NDRE        (nir - rededge1) / (nir + rededge1)         Gitelson & Merzlyak 1994; Barnes et al. 2000
NDSI        (green - swir16) / (green + swir16)         Hall et al. 1995
NDBI        (swir16 - nir) / (swir16 + nir)             Zha et al. 2003
VV_VH       vv / vh (linear gamma0)                     cross-ratio, e.g. Veloso et al. 2017
VH_VV       vh / vv (linear gamma0)                     Vreugdenhil et al. 2018
RVI         4 vh / (vv + vh) (linear gamma0, dual-pol)  Kim & van Zyl 2009; Trudel et al. 2012
==========  ==========================================  =========================================

Roles per mission: Sentinel-2 ``blue green red nir rededge1 swir16 swir22`` = ``B02 B03 B04 B08
B05 B11 B12`` (NDRE uses B08 against B05); Landsat ``nir`` = ``nir08`` (no red edge, so no NDRE);
Sentinel-1 ``vv vh``. The DEM has none.

Storage: indices bounded to [-1, 1] (the normalised differences and NDRE) are ``int16`` with
``scale_factor`` 1e-4 and ``_FillValue`` -32768 (exact to 1e-4, half the size of float32);
SAVI, EVI and the SAR ratios, which are unbounded, are ``float32`` with NaN fill. A zero
denominator gives NaN. Bounded indices are clipped to [-1, 1]: slightly negative reflectance
(allowed down to -0.1 for Sentinel-2) can otherwise push them outside. With Sentinel-1 in dB,
gamma0 of 0 has no dB value, so no ratio is computed there (NaN).

Example:
    >>> from stac2cube.missions import get_mission
    >>> resolve_indices(get_mission("sentinel-2-l2a"), ["ndvi", "NDVI", "evi"])
    ('NDVI', 'EVI')
    >>> [b.name for b in index_bands(get_mission("landsat-c2-l2"), ["NDVI"])]
    ['nir08', 'red']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from stac2cube.errors import InvalidRequestError
from stac2cube.missions import BandSpec, MissionSpec

#: role -> band name, per mission
ROLES: dict[str, dict[str, str]] = {
    "sentinel-2-l2a": {
        "blue": "B02",
        "green": "B03",
        "red": "B04",
        "nir": "B08",
        "rededge1": "B05",
        "swir16": "B11",
        "swir22": "B12",
    },
    "landsat-c2-l2": {
        "blue": "blue",
        "green": "green",
        "red": "red",
        "nir": "nir08",
        "swir16": "swir16",
        "swir22": "swir22",
    },
    "sentinel-1-rtc": {"vv": "vv", "vh": "vh"},
}
ROLES["sentinel-2-l1c"] = ROLES["sentinel-2-l2a"]

INT16_INDEX_ENCODING = {
    "dtype": "int16",
    "scale_factor": 1e-4,
    "add_offset": 0.0,
    "_FillValue": -32768,
}
FLOAT_INDEX_ENCODING = {"dtype": "float32", "_FillValue": np.float32(np.nan)}


def _nd(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    return _ratio(a - b, a + b)


def _ratio(num: xr.DataArray, den: xr.DataArray) -> xr.DataArray:
    return (num / den.where(den != 0)).astype("float32")


@dataclass(frozen=True)
class IndexSpec:
    """One index: the roles it reads, its formula as text and as a function, its source."""

    name: str
    roles: tuple[str, ...]
    formula: str
    reference: str
    function: Callable[..., xr.DataArray]
    bounded: bool = True
    long_name: str = ""

    @property
    def encoding(self) -> dict[str, Any]:
        return dict(INT16_INDEX_ENCODING if self.bounded else FLOAT_INDEX_ENCODING)


INDICES: dict[str, IndexSpec] = {
    spec.name: spec
    for spec in (
        IndexSpec(
            "NDVI", ("nir", "red"), "(nir - red) / (nir + red)",
            "Rouse et al. 1974; Tucker 1979", _nd,
            long_name="normalised difference vegetation index",
        ),
        IndexSpec(
            "NDWI", ("green", "nir"), "(green - nir) / (green + nir)", "McFeeters 1996", _nd,
            long_name="normalised difference water index",
        ),
        IndexSpec(
            "MNDWI", ("green", "swir16"), "(green - swir16) / (green + swir16)", "Xu 2006", _nd,
            long_name="modified normalised difference water index",
        ),
        IndexSpec(
            "NDMI", ("nir", "swir16"), "(nir - swir16) / (nir + swir16)",
            "Gao 1996; Wilson & Sader 2002", _nd, long_name="normalised difference moisture index",
        ),
        IndexSpec(
            "NBR", ("nir", "swir22"), "(nir - swir22) / (nir + swir22)", "Key & Benson 2006",
            _nd, long_name="normalised burn ratio",
        ),
        IndexSpec(
            "SAVI", ("nir", "red"), "1.5 * (nir - red) / (nir + red + 0.5)", "Huete 1988",
            lambda nir, red: _ratio(1.5 * (nir - red), nir + red + 0.5), bounded=False,
            long_name="soil-adjusted vegetation index (L = 0.5)",
        ),
        IndexSpec(
            "EVI", ("nir", "red", "blue"),
            "2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)", "Huete et al. 2002",
            lambda nir, red, blue: _ratio(2.5 * (nir - red), nir + 6 * red - 7.5 * blue + 1),
            bounded=False, long_name="enhanced vegetation index",
        ),
        IndexSpec(
            "NDRE", ("nir", "rededge1"), "(nir - rededge1) / (nir + rededge1)",
            "Gitelson & Merzlyak 1994; Barnes et al. 2000", _nd,
            long_name="normalised difference red-edge index",
        ),
        IndexSpec(
            "NDSI", ("green", "swir16"), "(green - swir16) / (green + swir16)",
            "Hall et al. 1995", _nd, long_name="normalised difference snow index",
        ),
        IndexSpec(
            "NDBI", ("swir16", "nir"), "(swir16 - nir) / (swir16 + nir)", "Zha et al. 2003",
            _nd, long_name="normalised difference built-up index",
        ),
        IndexSpec(
            "VV_VH", ("vv", "vh"), "vv / vh (linear gamma0)", "e.g. Veloso et al. 2017",
            _ratio, bounded=False, long_name="VV/VH backscatter ratio",
        ),
        IndexSpec(
            "VH_VV", ("vh", "vv"), "vh / vv (linear gamma0)", "Vreugdenhil et al. 2018",
            _ratio, bounded=False, long_name="VH/VV backscatter ratio",
        ),
        IndexSpec(
            "RVI", ("vv", "vh"), "4 * vh / (vv + vh) (linear gamma0)",
            "Kim & van Zyl 2009; Trudel et al. 2012",
            lambda vv, vh: _ratio(4 * vh, vv + vh), bounded=False,
            long_name="radar vegetation index (dual-pol)",
        ),
    )
}  # fmt: skip


def _roles_of(mission: MissionSpec) -> dict[str, str]:
    return ROLES.get(mission.id, {})


def resolve_indices(mission: MissionSpec, names: Iterable[str]) -> tuple[str, ...]:
    """Canonical (upper-case, de-duplicated) index names that ``mission`` can compute.

    Raises:
        InvalidRequestError: an unknown index, or one whose bands the mission lacks.
    """
    out: list[str] = []
    roles = _roles_of(mission)
    for raw in names:
        name = str(raw).strip().upper().replace("/", "_")
        spec = INDICES.get(name)
        if spec is None:
            raise InvalidRequestError(f"unknown index {raw!r}; known indices: {', '.join(INDICES)}")
        missing = [r for r in spec.roles if r not in roles]
        if missing:
            offered = [n for n, s in INDICES.items() if all(r in roles for r in s.roles)]
            raise InvalidRequestError(
                f"index {name} needs the {', '.join(missing)} band(s), which mission "
                f"{mission.id} lacks; indices for {mission.id}: {', '.join(offered) or 'none'}"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def index_bands(mission: MissionSpec, names: Iterable[str]) -> list[BandSpec]:
    """The bands ``names`` read, in first-use order (each once)."""
    roles = _roles_of(mission)
    out: list[BandSpec] = []
    for name in resolve_indices(mission, names):
        for role in INDICES[name].roles:
            band = mission.band(roles[role])
            if band not in out:
                out.append(band)
    return out


def compute_index(
    name: str,
    mission: MissionSpec,
    bands: Mapping[str, xr.DataArray],
    *,
    sar_scale: str = "linear",
) -> xr.DataArray:
    """Index ``name`` (lazy, float32, NaN where an input is missing or a denominator is 0).

    Args:
        name: a canonical index name (see :func:`resolve_indices`).
        mission: the cube's mission (maps roles to bands).
        bands: decoded band values by band name.
        sar_scale: ``db`` when Sentinel-1 values are in dB (converted to linear first).

    The result carries ``long_name``, ``formula`` and ``reference`` attributes and the storage
    ``encoding`` (see the module docs).
    """
    spec = INDICES[name]
    roles = _roles_of(mission)
    inputs = []
    for role in spec.roles:
        values = bands[roles[role]].astype("float32")
        if role in ("vv", "vh") and sar_scale == "db":
            values = 10.0 ** (values / 10.0)
        inputs.append(values)
    out = spec.function(*inputs)
    if spec.bounded:  # negative reflectance may push it out of [-1, 1] (the stored range)
        out = out.clip(-1.0, 1.0)
    out = out.rename(name).assign_attrs(
        long_name=spec.long_name,
        formula=spec.formula,
        reference=spec.reference,
        units="1",
    )
    out.encoding = spec.encoding
    return out
