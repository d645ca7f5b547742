"""Mission specifications as data: bands, aliases, native resolution, nodata, radiometry.

A :class:`MissionSpec` says what a mission *is*; how each catalog names its collections lives in
:mod:`stac2cube.catalogs`. Asset keys are never hard-coded per catalog: a band is found in an item
by its asset key, its ``eo:bands`` name or common name, or an asset-key pattern (see
:func:`find_asset`), so any STAC API that serves the same collections works.

The missions and their cube variables:

==================  ===========================================================================
mission id          variables (``--bands`` also accepts the aliases in brackets)
==================  ===========================================================================
sentinel-2-l2a      ``B01``..``B12`` without B10, ``B8A``, ``SCL`` [``red``, ``nir08``, ``scl``]
sentinel-2-l1c      ``B01``..``B12``, ``B8A`` (B10 = ``cirrus``)
landsat-c2-l2       ``coastal blue green red nir08 swir16 swir22 lwir11 qa_pixel``
                    [Landsat 8/9 sensor ids ``SR_B1``..``SR_B7``, ``ST_B10``, ``QA_PIXEL``]
sentinel-1-rtc      ``vv vh hh hv`` (terrain-corrected gamma0)
cop-dem-glo-30      ``elevation`` [``data``, ``dem``] (static: one layer, no time series)
==================  ===========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from stac2cube.errors import InvalidRequestError

MissionId = Literal[
    "sentinel-2-l2a", "sentinel-2-l1c", "landsat-c2-l2", "sentinel-1-rtc", "cop-dem-glo-30"
]
Resampling = Literal["nearest", "bilinear", "cubic", "average"]
BandKind = Literal[
    "reflectance",  # scaled integers -> reflectance (S2 L2A/L1C, Landsat SR)
    "temperature",  # scaled integers -> kelvin (Landsat ST)
    "classification",  # integer classes, nearest resampling (S2 SCL)
    "bitfield",  # integer bit flags, nearest resampling (Landsat QA_PIXEL)
    "backscatter",  # float32 linear gamma0 (Sentinel-1)
    "elevation",  # float32 metres (DEM)
]
#: Kinds whose integer values must never be interpolated.
DISCRETE_KINDS = frozenset({"classification", "bitfield"})


@dataclass(frozen=True)
class BandSpec:
    """One band of a mission.

    Attributes:
        name: canonical variable name in the cube (ESA id for Sentinel-2: ``B04``).
        aliases: other names a user or a catalog may use (asset keys, ``eo:bands`` names,
            common names, sensor ids), matched case-insensitively.
        resolution: native pixel size in metres.
        kind: what the values are (see :data:`BandKind`); ``classification`` and ``bitfield``
            bands are always resampled with nearest neighbour.
        common_name: the STAC ``eo:bands`` common name, if any (used to find the asset in
            catalogs whose keys differ).
        dtype: dtype of the raw asset; None means the mission's ``dtype``.
        nodata: raw nodata value; None means the mission's ``nodata``.
        optional: an item may lack this band (Landsat ``lwir11`` in L2SR products); its
            pixels are then nodata for that item instead of an error.
        asset_patterns: regular expressions matched against asset keys when no key, name or
            common name matches (terrabyte's Sentinel-1 NRB keys such as ``vv-g-lin``).
        units: physical units after radiometry (CF ``units``).
        long_name: description for the variable's ``long_name``.
    """

    name: str
    aliases: tuple[str, ...]
    resolution: float
    kind: BandKind = "reflectance"
    common_name: str | None = None
    dtype: str | None = None
    nodata: float | None = None
    optional: bool = False
    asset_patterns: tuple[str, ...] = ()
    units: str = "1"
    long_name: str | None = None

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def discrete(self) -> bool:
        """True for classes and bit flags (nearest resampling, no scaling)."""
        return self.kind in DISCRETE_KINDS


@dataclass(frozen=True)
class MissionSpec:
    """A mission: its bands and how its digital numbers become physical values.

    Attributes:
        id: mission id used on the CLI (``sentinel-2-l2a``).
        title: human-readable name.
        bands: every band the mission offers, in canonical order.
        default_bands: bands loaded when the user names none.
        dtype: default dtype of the raw assets.
        nodata: default raw nodata value of the assets.
        radiometry: id of the radiometry family (see :mod:`stac2cube.radiometry`).
        time_series: False for static products (DEM): every tile goes into one layer.
        solar_day_grouping: scenes of one solar day form one time step.
        cloud_cover: items carry ``eo:cloud_cover`` (so ``--max-cloud`` applies).
        qa_band: the band cloud masking reads (``SCL``, ``qa_pixel``), if any.
        grid_anchor: ``(x, y)`` in metres of WGS 84 / UTM north where the products' pixel
            edges lie, modulo the pixel size (Landsat: 15 m off multiples of 30 m); cube grids
            snap to it (see :func:`stac2cube.grid.native_anchor`).
        alias_note: what the aliases mean where they could mislead (shown in errors).
    """

    id: str
    title: str
    bands: tuple[BandSpec, ...]
    default_bands: tuple[str, ...]
    dtype: str = "uint16"
    nodata: float = 0
    radiometry: str = "sentinel-2"
    time_series: bool = True
    solar_day_grouping: bool = True
    cloud_cover: bool = True
    qa_band: str | None = None
    grid_anchor: tuple[float, float] = (0.0, 0.0)
    alias_note: str = ""
    _index: Mapping[str, BandSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {}
        for band in self.bands:
            for alias in band.all_names:
                index.setdefault(alias.lower(), band)
        object.__setattr__(self, "_index", index)

    @property
    def static(self) -> bool:
        """True for products without a time series (DEM)."""
        return not self.time_series

    def band(self, name: str) -> BandSpec:
        """Return the band called ``name`` (canonical name, common name, sensor id, asset key).

        >>> SENTINEL_2_L2A.band("red").name
        'B04'
        >>> LANDSAT_C2_L2.band("SR_B4").name
        'red'
        """
        try:
            return self._index[name.lower()]
        except KeyError:
            known = ", ".join(b.name for b in self.bands)
            hint = self.alias_note or "common names such as 'red' or 'nir' also work"
            raise InvalidRequestError(
                f"unknown band {name!r} for mission {self.id}; known bands: {known} ({hint})"
            ) from None

    def band_dtype(self, band: BandSpec) -> str:
        return band.dtype or self.dtype

    def band_nodata(self, band: BandSpec) -> float:
        return self.nodata if band.nodata is None else band.nodata

    def resolve_bands(self, names: Iterable[str] | None) -> tuple[BandSpec, ...]:
        """Canonical bands for user-given names, in the given order, without repeats."""
        names = list(names) if names else list(self.default_bands)
        if not names:
            raise InvalidRequestError(f"no bands requested for mission {self.id}")
        out: list[BandSpec] = []
        for name in names:
            band = self.band(name)
            if band not in out:
                out.append(band)
        return tuple(out)


# --- Sentinel-2 ---------------------------------------------------------------------------------


def _s2(name: str, res: float, key: str, common: str | None = None, *extra: str) -> BandSpec:
    aliases = tuple(dict.fromkeys(a for a in (key, common, *extra) if a and a != name))
    return BandSpec(name, aliases, res, common_name=common)


_S2_SPECTRAL = (
    _s2("B01", 60, "coastal", "coastal"),
    _s2("B02", 10, "blue", "blue"),
    _s2("B03", 10, "green", "green"),
    _s2("B04", 10, "red", "red"),
    _s2("B05", 20, "rededge1", None),
    _s2("B06", 20, "rededge2", None),
    _s2("B07", 20, "rededge3", None),
    _s2("B08", 10, "nir", "nir"),
    _s2("B8A", 20, "nir08", "nir08"),
    _s2("B09", 60, "nir09", "nir09"),
)
_S2_SWIR = (
    _s2("B11", 20, "swir16", "swir16"),
    _s2("B12", 20, "swir22", "swir22"),
)

SENTINEL_2_L2A = MissionSpec(
    id="sentinel-2-l2a",
    title="Sentinel-2 MSI Level-2A (bottom-of-atmosphere reflectance)",
    bands=(
        *_S2_SPECTRAL,
        *_S2_SWIR,
        BandSpec(
            "SCL",
            ("scl",),
            20,
            kind="classification",
            dtype="uint8",
            long_name="Scene classification (0 nodata, 1 saturated/defective, 2 dark area, "
            "3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, "
            "8 cloud medium, 9 cloud high, 10 thin cirrus, 11 snow)",
        ),
    ),
    default_bands=("B02", "B03", "B04", "B08"),
    qa_band="SCL",
)

SENTINEL_2_L1C = MissionSpec(
    id="sentinel-2-l1c",
    title="Sentinel-2 MSI Level-1C (top-of-atmosphere reflectance)",
    bands=(*_S2_SPECTRAL, _s2("B10", 60, "cirrus", "cirrus"), *_S2_SWIR),
    default_bands=("B02", "B03", "B04", "B08"),
)

# --- Landsat Collection 2 Level-2 ---------------------------------------------------------------


def _ls(
    name: str, sensor_ids: tuple[str, ...], kind: BandKind = "reflectance", **kw: Any
) -> BandSpec:
    return BandSpec(name, sensor_ids, 30, kind=kind, common_name=name, **kw)


LANDSAT_C2_L2 = MissionSpec(
    id="landsat-c2-l2",
    title="Landsat Collection 2 Level-2 (surface reflectance and surface temperature)",
    bands=(
        _ls(
            "coastal",
            ("SR_B1", "OLI_B1"),
            optional=True,
            long_name="coastal aerosol surface reflectance (Landsat 8/9 only)",
        ),
        _ls("blue", ("SR_B2", "OLI_B2")),
        _ls("green", ("SR_B3", "OLI_B3")),
        _ls("red", ("SR_B4", "OLI_B4")),
        _ls("nir08", ("SR_B5", "OLI_B5", "nir")),
        _ls("swir16", ("SR_B6", "OLI_B6")),
        _ls("swir22", ("SR_B7", "OLI_B7")),
        _ls(
            "lwir11",
            ("ST_B10", "TIRS_B10", "lwir", "ST_B6"),
            kind="temperature",
            optional=True,
            units="K",
            long_name="surface temperature (ST_B10 of Landsat 8/9, ST_B6 of Landsat 4-7)",
        ),
        BandSpec(
            "qa_pixel",
            ("QA_PIXEL",),
            30,
            kind="bitfield",
            nodata=1,
            long_name="Landsat QA_PIXEL bit flags (bit 0 fill, 1 dilated cloud, 2 cirrus, "
            "3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water)",
        ),
    ),
    default_bands=("blue", "green", "red", "nir08", "qa_pixel"),
    radiometry="landsat-c2-l2",
    qa_band="qa_pixel",
    grid_anchor=(15.0, 15.0),  # USGS proj:transform origins such as 449085, 4581915
    alias_note="sensor ids are those of Landsat 8/9 OLI/TIRS: SR_B4 = red; "
    "ST_B6 (Landsat 4-7) also means lwir11",
)

# --- Sentinel-1 ---------------------------------------------------------------------------------


def _pol(name: str) -> BandSpec:
    return BandSpec(
        name,
        (name.upper(),),
        10,
        kind="backscatter",
        # terrabyte sentinel-1-nrb (CEOS-ARD NRB, s1ard): "vv-g-lin"; keys not verified
        asset_patterns=(rf"^{name}[-_]g(amma0?)?[-_]lin(ear)?$", rf"^{name}[-_]gamma0?$"),
        long_name=f"{name.upper()} terrain-flattened gamma0 backscatter",
    )


SENTINEL_1_RTC = MissionSpec(
    id="sentinel-1-rtc",
    title="Sentinel-1 radiometrically terrain-corrected backscatter (gamma0)",
    bands=tuple(_pol(p) for p in ("vv", "vh", "hh", "hv")),
    default_bands=("vv", "vh"),
    dtype="float32",
    nodata=-32768,
    radiometry="sentinel-1-rtc",
    cloud_cover=False,
)

# --- Copernicus DEM -----------------------------------------------------------------------------

COP_DEM_GLO_30 = MissionSpec(
    id="cop-dem-glo-30",
    title="Copernicus DEM GLO-30 (digital surface model, 30 m)",
    bands=(
        BandSpec(
            "elevation",
            ("data", "dem", "height"),
            30,
            kind="elevation",
            units="m",
            long_name="surface height above the EGM2008 geoid",
        ),
    ),
    default_bands=("elevation",),
    dtype="float32",
    nodata=float("nan"),
    radiometry="cop-dem",
    time_series=False,
    solar_day_grouping=False,
    cloud_cover=False,
)

MISSIONS: dict[str, MissionSpec] = {
    m.id: m for m in (SENTINEL_2_L2A, SENTINEL_2_L1C, LANDSAT_C2_L2, SENTINEL_1_RTC, COP_DEM_GLO_30)
}


def get_mission(mission_id: str) -> MissionSpec:
    """Return the spec of ``mission_id`` or raise a clear error listing the known missions."""
    try:
        return MISSIONS[mission_id]
    except KeyError:
        raise InvalidRequestError(
            f"unknown mission {mission_id!r}; choose one of: {', '.join(MISSIONS)}"
        ) from None


# --- finding a band's asset in an item ----------------------------------------------------------


def _asset_bands(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [b for b in bands if isinstance(b, Mapping)]


def _asset_band_names(asset: Mapping[str, Any]) -> list[str]:
    return [b["name"] for b in _asset_bands(asset) if b.get("name")]


def _asset_common_name(asset: Mapping[str, Any]) -> str | None:
    bands = _asset_bands(asset)
    if len(bands) != 1:
        return None
    name = bands[0].get("common_name") or bands[0].get("eo:common_name")
    return str(name).lower() if name else None


def find_asset(item: Mapping[str, Any], band: BandSpec) -> str | None:
    """Key of the asset of ``item`` that holds ``band``, or None.

    Evidence, strongest first: the asset key is one of the band's names (Earth Search's
    ``red``, Planetary Computer's ``B04``); the asset's single ``eo:bands`` name is one of them
    (a custom catalog's ``B04``); the key matches one of the band's ``asset_patterns``
    (terrabyte NRB ``vv-g-lin``); the asset's single ``eo:bands`` common name is the band's
    common name or one of its names, where only one asset of the item has it (Landsat 4-7
    ``lwir`` under a key named otherwise). Multi-band assets (``visual``) are skipped; non-GeoTIFF duplicates
    (``red-jp2``) lose against a GeoTIFF of the same strength.
    """
    wanted = {n.lower() for n in band.all_names}
    assets = item.get("assets", {})
    common_counts: dict[str, int] = {}
    for asset in assets.values():
        cn = _asset_common_name(asset)
        if cn:
            common_counts[cn] = common_counts.get(cn, 0) + 1
    candidates: list[tuple[int, str]] = []
    for key, asset in assets.items():
        names = _asset_band_names(asset)
        if len(names) > 1:
            continue
        if key.lower() in wanted:
            candidates.append((0, key))
        elif names and names[0].lower() in wanted:
            candidates.append((1, key))
        elif any(re.match(p, key, re.IGNORECASE) for p in band.asset_patterns):
            candidates.append((2, key))
        elif (
            (cn := _asset_common_name(asset))
            and common_counts.get(cn) == 1
            and (cn == (band.common_name or "").lower() or cn in wanted)
        ):
            candidates.append((3, key))
    if not candidates:
        return None

    def rank(entry: tuple[int, str]) -> tuple[int, int, int]:
        strength, key = entry
        media = str(assets[key].get("type", ""))
        return (strength, 0 if "tiff" in media or not media else 1, len(key))

    return sorted(candidates, key=rank)[0][1]
