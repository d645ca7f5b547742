"""Mission specifications as data: bands, aliases, native resolution, nodata, radiometry.

A :class:`MissionSpec` says what a mission *is*; how each catalog names its collections lives in
:mod:`stac2cube.catalogs`. Asset keys are never hard-coded per catalog: a band is found in an item
by its asset key or its ``eo:bands`` name (see :func:`find_asset`), so any STAC API that serves
the same collections works.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from stac2cube.errors import InvalidRequestError

MissionId = Literal["sentinel-2-l2a"]
Resampling = Literal["nearest", "bilinear", "cubic", "average"]


@dataclass(frozen=True)
class BandSpec:
    """One band of a mission.

    Attributes:
        name: canonical variable name in the cube (ESA id for Sentinel-2: ``B04``).
        aliases: other names a user or a catalog may use (asset keys, ``eo:bands`` names,
            common names), matched case-insensitively.
        resolution: native pixel size in metres.
        kind: ``reflectance`` (scaled, offset-corrected) or ``classification`` (integer classes,
            always resampled with nearest neighbour).
        common_name: the STAC ``eo:bands`` common name, if any.
    """

    name: str
    aliases: tuple[str, ...]
    resolution: float
    kind: Literal["reflectance", "classification"] = "reflectance"
    common_name: str | None = None

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class MissionSpec:
    """A mission: its bands and how its digital numbers become physical values.

    Attributes:
        id: mission id used on the CLI (``sentinel-2-l2a``).
        title: human-readable name.
        bands: every band the mission offers, in canonical order.
        default_bands: bands loaded when the user names none.
        dtype: dtype of the raw assets.
        nodata: raw nodata value of the assets.
        radiometry: id of the radiometry family (see :mod:`stac2cube.radiometry`).
        time_series: False for static products (DEM).
    """

    id: str
    title: str
    bands: tuple[BandSpec, ...]
    default_bands: tuple[str, ...]
    dtype: str = "uint16"
    nodata: int = 0
    radiometry: str = "sentinel-2"
    time_series: bool = True
    solar_day_grouping: bool = True
    _index: Mapping[str, BandSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {}
        for band in self.bands:
            for alias in band.all_names:
                index.setdefault(alias.lower(), band)
        object.__setattr__(self, "_index", index)

    def band(self, name: str) -> BandSpec:
        """Return the band called ``name`` (ESA id, common name or asset key).

        >>> SENTINEL_2_L2A.band("red").name
        'B04'
        """
        try:
            return self._index[name.lower()]
        except KeyError:
            known = ", ".join(b.name for b in self.bands)
            raise InvalidRequestError(
                f"unknown band {name!r} for mission {self.id}; known bands: {known} "
                "(common names such as 'red' or 'nir' also work)"
            ) from None

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


def _s2(name: str, res: float, key: str, common: str | None = None, *extra: str) -> BandSpec:
    aliases = tuple(dict.fromkeys(a for a in (key, common, *extra) if a and a != name))
    return BandSpec(name, aliases, res, common_name=common)


SENTINEL_2_L2A = MissionSpec(
    id="sentinel-2-l2a",
    title="Sentinel-2 MSI Level-2A (bottom-of-atmosphere reflectance)",
    bands=(
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
        _s2("B11", 20, "swir16", "swir16"),
        _s2("B12", 20, "swir22", "swir22"),
        BandSpec("SCL", ("scl",), 20, kind="classification"),
    ),
    default_bands=("B02", "B03", "B04", "B08"),
)

MISSIONS: dict[str, MissionSpec] = {m.id: m for m in (SENTINEL_2_L2A,)}


def get_mission(mission_id: str) -> MissionSpec:
    """Return the spec of ``mission_id`` or raise a clear error listing the known missions."""
    try:
        return MISSIONS[mission_id]
    except KeyError:
        raise InvalidRequestError(
            f"unknown mission {mission_id!r}; choose one of: {', '.join(MISSIONS)}"
        ) from None


def _asset_band_names(asset: Mapping[str, Any]) -> list[str]:
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [b["name"] for b in bands if isinstance(b, Mapping) and b.get("name")]


def find_asset(item: Mapping[str, Any], band: BandSpec) -> str | None:
    """Key of the asset of ``item`` that holds ``band``, or None.

    Matches the asset key or its single ``eo:bands`` name against the band's names (so Earth
    Search's ``red``, Planetary Computer's ``B04`` and a custom catalog's ``eo:bands`` name all
    work). Multi-band assets (``visual``) and non-GeoTIFF duplicates (``red-jp2``) are skipped
    when a GeoTIFF is available.
    """
    wanted = {n.lower() for n in band.all_names}
    candidates = []
    for key, asset in item.get("assets", {}).items():
        names = _asset_band_names(asset)
        if len(names) > 1:
            continue
        if key.lower() in wanted or (names and names[0].lower() in wanted):
            candidates.append(key)
    if not candidates:
        return None

    def rank(key: str) -> tuple[int, int]:
        media = str(item["assets"][key].get("type", ""))
        return (0 if "tiff" in media or not media else 1, len(key))

    return sorted(candidates, key=rank)[0]
