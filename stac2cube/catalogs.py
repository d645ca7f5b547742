"""STAC catalogs: which API to talk to and which collection holds a mission there.

``earth-search`` is the open default. ``auto`` picks terrabyte when running inside a SLURM job on
the terrabyte HPC and Earth Search everywhere else. Any ``http(s)://`` URL is accepted as a custom
STAC API; its collection defaults to the mission id (``landsat-c2-l2``, ``sentinel-1-rtc``, ...),
``--collection`` names another.

Collections per catalog (the first is the default; ``a,b,c`` means one search over several):

================  ===================================  ===================  ===========================================
mission           earth-search                         planetary-computer   terrabyte
================  ===================================  ===================  ===========================================
sentinel-2-l2a    sentinel-2-c1-l2a, sentinel-2-l2a    sentinel-2-l2a       sentinel-2-c1-l2a, sentinel-2-l2a
sentinel-2-l1c    sentinel-2-l1c                       (not offered)        sentinel-2-c1-l1c, sentinel-2-l1c
sentinel-1-rtc    (not offered: GRD only)              sentinel-1-rtc [1]   sentinel-1-nrb [2]
landsat-c2-l2     landsat-c2-l2                        landsat-c2-l2        landsat-ot-c2-l2,landsat-etm-c2-l2,landsat-tm-c2-l2
cop-dem-glo-30    cop-dem-glo-30                       cop-dem-glo-30       cop-dem-glo-30
================  ===================================  ===================  ===========================================

[1] needs a Planetary Computer account (subscription key, see :mod:`stac2cube.signing`).
[2] CEOS-ARD Normalised Radar Backscatter (terrain-flattened gamma0), the closest terrabyte
    product to RTC.

Earth Search's ``sentinel-2-l1c`` (JPEG 2000) and ``landsat-c2-l2`` assets lie in requester-pays
S3 buckets: reading them needs AWS credentials (stac2cube sets ``AWS_REQUEST_PAYER=requester``).
terrabyte's hrefs are ``file:///dss/...`` paths: searchable from anywhere, readable only on
terrabyte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
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
        collections: mission id -> collection id(s), the first being the default. An entry
            ``"a,b"`` searches several collections at once.
        sign_urls: True where asset hrefs must be signed (Planetary Computer).
        requires_account: collections whose assets need an account (a Planetary Computer
            subscription key) to be signed.
        not_offered: mission id -> why this catalog has no such collection (part of the error).
        notes: mission id -> what a user should know about the product served for it.
    """

    name: CatalogKind
    url: str
    collections: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sign_urls: bool = False
    requires_account: frozenset[str] = frozenset()
    not_offered: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def with_url(self, url: str) -> CatalogSpec:
        """The same catalog conventions served at another URL (a mirror, a local test API)."""
        return replace(self, url=url.rstrip("/"))

    def collection_for(self, mission: str, override: str | None = None) -> str:
        """The collection id to search for ``mission``; ``override`` wins when given.

        Raises:
            InvalidRequestError: the catalog does not offer the mission (the message names the
                catalogs and collections that do), or the collection needs an account whose
                credentials are missing (the message names the alternative).
        """
        if override:
            coll = override
        elif self.name == "custom":
            return mission
        else:
            ids = self.collections.get(mission)
            if not ids:
                why = self.not_offered.get(mission, "")
                raise InvalidRequestError(
                    f"mission {mission} is not offered by catalog {self.name}"
                    f"{' (' + why + ')' if why else ''}; it is available from: "
                    f"{where_offered(mission)}"
                )
            coll = ids[0]
        self.check_access(mission, coll)
        return coll

    def check_access(self, mission: str, collection: str, key: str | None = None) -> None:
        """Raise when ``collection`` needs credentials that are not configured.

        Only Planetary Computer collections marked ``msft:requires_account`` (Sentinel-1 RTC)
        need a subscription key: from ``key``, ``PC_SDK_SUBSCRIPTION_KEY`` or the
        planetary-computer settings file.
        """
        needs = {c.strip() for c in collection.split(",")} & self.requires_account
        if not needs:
            return
        from stac2cube.signing import subscription_key

        if subscription_key(key):
            return
        others = where_offered(mission, exclude=self.name)
        raise InvalidRequestError(
            f"collection {', '.join(sorted(needs))} on {self.name} needs a Planetary Computer "
            "account: set PC_SDK_SUBSCRIPTION_KEY (or ~/.planetarycomputer/settings.env, or "
            "pass the key) to sign its assets"
            + (f"; without an account use: {others}" if others else "")
        )


EARTH_SEARCH = CatalogSpec(
    "earth-search",
    "https://earth-search.aws.element84.com/v1",
    {
        "sentinel-2-l2a": ("sentinel-2-c1-l2a", "sentinel-2-l2a"),
        "sentinel-2-l1c": ("sentinel-2-l1c",),
        "landsat-c2-l2": ("landsat-c2-l2",),
        "cop-dem-glo-30": ("cop-dem-glo-30",),
    },
    not_offered={
        "sentinel-1-rtc": "Earth Search serves only sentinel-1-grd, which is not terrain-corrected"
    },
)
PLANETARY_COMPUTER = CatalogSpec(
    "planetary-computer",
    "https://planetarycomputer.microsoft.com/api/stac/v1",
    {
        "sentinel-2-l2a": ("sentinel-2-l2a",),
        "sentinel-1-rtc": ("sentinel-1-rtc",),
        "landsat-c2-l2": ("landsat-c2-l2",),
        "cop-dem-glo-30": ("cop-dem-glo-30",),
    },
    sign_urls=True,
    requires_account=frozenset({"sentinel-1-rtc"}),
    not_offered={"sentinel-2-l1c": "Planetary Computer has no Sentinel-2 Level-1C collection"},
    notes={"sentinel-1-rtc": "needs a Planetary Computer account (subscription key)"},
)
TERRABYTE = CatalogSpec(
    "terrabyte",
    "https://stac.terrabyte.lrz.de/public/api",
    {
        "sentinel-2-l2a": ("sentinel-2-c1-l2a", "sentinel-2-l2a"),
        "sentinel-2-l1c": ("sentinel-2-c1-l1c", "sentinel-2-l1c"),
        "sentinel-1-rtc": ("sentinel-1-nrb",),
        "landsat-c2-l2": (
            "landsat-ot-c2-l2,landsat-etm-c2-l2,landsat-tm-c2-l2",
            "landsat-ot-c2-l2",
            "landsat-etm-c2-l2",
            "landsat-tm-c2-l2",
        ),
        "cop-dem-glo-30": ("cop-dem-glo-30",),
    },
    notes={
        "sentinel-1-rtc": "sentinel-1-nrb is CEOS-ARD Normalised Radar Backscatter "
        "(terrain-flattened gamma0), the closest terrabyte product to RTC",
    },
)
CATALOGS: dict[str, CatalogSpec] = {
    c.name: c for c in (EARTH_SEARCH, PLANETARY_COMPUTER, TERRABYTE)
}
CATALOGS_BY_MISSION_HINT: dict[str, tuple[str, ...]] = {}
for _c in CATALOGS.values():
    for _m in _c.collections:
        CATALOGS_BY_MISSION_HINT[_m] = (*CATALOGS_BY_MISSION_HINT.get(_m, ()), _c.name)


def where_offered(mission: str, exclude: str | None = None) -> str:
    """``catalog (collection[, note])`` for every built-in catalog offering ``mission``.

    >>> where_offered("sentinel-2-l1c")
    'earth-search (sentinel-2-l1c), terrabyte (sentinel-2-c1-l1c)'
    """
    out = []
    for cat in CATALOGS.values():
        ids = cat.collections.get(mission)
        if not ids or cat.name == exclude:
            continue
        text = f"{cat.name} ({ids[0]}"
        if mission in cat.notes:
            text += f": {cat.notes[mission]}"
        out.append(text + ")")
    return ", ".join(out) or "no built-in catalog"


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


def split_collections(collection: str) -> list[str]:
    """The collection ids of a (possibly comma-separated) collection entry.

    >>> split_collections("landsat-ot-c2-l2, landsat-tm-c2-l2")
    ['landsat-ot-c2-l2', 'landsat-tm-c2-l2']
    """
    return [c.strip() for c in collection.split(",") if c.strip()]
