"""STAC catalogs: which API to talk to and which collection holds a mission there.

``earth-search`` is the open default. ``auto`` picks terrabyte when running inside a SLURM job on
the terrabyte HPC and Earth Search everywhere else. Any ``http(s)://`` URL is accepted as a custom
STAC API; it then needs ``--collection`` unless the collection id is the mission id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

from stac2cube.errors import InvalidRequestError

CatalogKind = Literal["earth-search", "planetary-computer", "terrabyte", "custom"]


@dataclass(frozen=True)
class CatalogSpec:
    """A STAC API and the collection ids it uses for each mission.

    Attributes:
        name: short name (``earth-search``) or ``custom``.
        url: root URL of the STAC API.
        collections: mission id -> collection id(s), the first being the default.
        sign_urls: True where asset hrefs must be signed (Planetary Computer).
    """

    name: CatalogKind
    url: str
    collections: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sign_urls: bool = False

    def collection_for(self, mission: str, override: str | None = None) -> str:
        """The collection id to search for ``mission``; ``override`` wins when given."""
        if override:
            return override
        if self.name == "custom":
            return mission
        ids = self.collections.get(mission)
        if not ids:
            where = ", ".join(CATALOGS_BY_MISSION_HINT.get(mission, ())) or "no built-in catalog"
            raise InvalidRequestError(
                f"mission {mission} is not offered by catalog {self.name}; "
                f"it is available from: {where}"
            )
        return ids[0]


EARTH_SEARCH = CatalogSpec(
    "earth-search",
    "https://earth-search.aws.element84.com/v1",
    {"sentinel-2-l2a": ("sentinel-2-c1-l2a", "sentinel-2-l2a")},
)
PLANETARY_COMPUTER = CatalogSpec(
    "planetary-computer",
    "https://planetarycomputer.microsoft.com/api/stac/v1",
    {"sentinel-2-l2a": ("sentinel-2-l2a",)},
    sign_urls=True,
)
TERRABYTE = CatalogSpec(
    "terrabyte",
    "https://stac.terrabyte.lrz.de/public/api",
    {"sentinel-2-l2a": ("sentinel-2-c1-l2a",)},
)
CATALOGS: dict[str, CatalogSpec] = {
    c.name: c for c in (EARTH_SEARCH, PLANETARY_COMPUTER, TERRABYTE)
}
CATALOGS_BY_MISSION_HINT: dict[str, tuple[str, ...]] = {}
for _c in CATALOGS.values():
    for _m in _c.collections:
        CATALOGS_BY_MISSION_HINT[_m] = (*CATALOGS_BY_MISSION_HINT.get(_m, ()), _c.name)


def running_on_terrabyte(environ: dict[str, str] | None = None) -> bool:
    """True inside a SLURM job on the terrabyte HPC.

    The signal: ``SLURM_JOB_ID`` is set and ``SLURM_CLUSTER_NAME`` contains ``terrabyte``
    (or ``STAC2CUBE_ON_TERRABYTE=1`` forces it, for sites that name their cluster otherwise).
    """
    env = os.environ if environ is None else environ
    if env.get("STAC2CUBE_ON_TERRABYTE") == "1":
        return True
    return (
        bool(env.get("SLURM_JOB_ID")) and "terrabyte" in env.get("SLURM_CLUSTER_NAME", "").lower()
    )


def resolve_catalog(catalog: str, environ: dict[str, str] | None = None) -> CatalogSpec:
    """Turn ``earth-search``, ``planetary-computer``, ``terrabyte``, ``auto`` or a URL into a spec.

    >>> resolve_catalog("earth-search").url
    'https://earth-search.aws.element84.com/v1'
    >>> resolve_catalog("http://127.0.0.1:8080").name
    'custom'
    """
    key = (catalog or "").strip()
    if key == "auto":
        return TERRABYTE if running_on_terrabyte(environ) else EARTH_SEARCH
    if key in CATALOGS:
        return CATALOGS[key]
    for spec in CATALOGS.values():
        if key.rstrip("/") == spec.url:
            return spec
    parsed = urlparse(key)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return CatalogSpec("custom", key.rstrip("/"))
    raise InvalidRequestError(
        f"unknown catalog {catalog!r}; use one of {', '.join(['auto', *CATALOGS])} "
        "or the http(s):// URL of a STAC API"
    )
