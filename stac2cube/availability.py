"""Before the build: which catalog has which scenes of an area and period, and how cloudy.

One search per catalog through the build's own code (:func:`~stac2cube.request.make_search`
validates the input, :func:`~stac2cube.search.search_items` searches), then pure functions
turn the found items into a per-day table (:func:`tabulate`), a terminal table
(:func:`format_table`) and a CSV file (:func:`write_csv`). The footprint map of the same
search is drawn by :func:`stac2cube.footprints.footprint_map`.

A table row is one solar day (the build's time step, :func:`~stac2cube.steps.solar_day`)
on one catalog: the scenes left after de-duplication (older processings of the same acquisition
are counted apart, as ``duplicates``), their tiles and platforms, their minimum and mean
``eo:cloud_cover`` (NaN where the mission's items carry none, as Sentinel-1) and the fraction of
the area their footprints cover together (in an equal-area projection). Static products (the
DEM) have no acquisition dates: one row per catalog, with an empty date.

Catalog failures: with one catalog an unreachable or failing catalog raises
:class:`~stac2cube.errors.CatalogError`, and a catalog that does not offer the mission raises
:class:`~stac2cube.errors.InvalidRequestError`, exactly as a build would. With several catalogs
(a comparison) such a catalog gets one row whose ``error`` column holds the message, and the
others are still listed; only when every catalog fails is the first error raised. A catalog that
answers but has nothing gets one row with 0 scenes and an empty date.

Searching needs no account: the Planetary Computer subscription key is needed to *read*
Sentinel-1 RTC assets, not to list them.

Example:
    >>> table = scene_table(["earth-search", "planetary-computer"], "sentinel-2-l2a",
    ...                     bbox=[11.50, 48.10, 11.56, 48.14], start="2024-06-01",
    ...                     end="2024-06-30", max_cloud=50)  # doctest: +SKIP
    >>> print(format_table(table))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stac2cube.catalogs import CatalogSpec, resolve_catalog
from stac2cube.errors import CatalogError, InvalidRequestError, Stac2CubeError
from stac2cube.items import item_footprint
from stac2cube.request import SearchRequest, make_search
from stac2cube.search import open_client, search_items

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "AvailabilitySearch",
    "CatalogScenes",
    "area_geometry",
    "check_writable",
    "cover_fraction",
    "format_table",
    "scene_table",
    "search_catalogs",
    "tabulate",
    "write_csv",
]

#: The columns of :func:`tabulate`'s table, in order.
COLUMNS = (
    "date",
    "catalog",
    "collection",
    "scenes",
    "duplicates",
    "tiles",
    "platforms",
    "cloud_min",
    "cloud_mean",
    "aoi_cover",
    "error",
)
#: Catalogs searched at the same time.
MAX_PARALLEL_SEARCHES = 4


@dataclass(frozen=True)
class CatalogScenes:
    """What one catalog answered: its items, or the error that kept it from answering.

    Attributes:
        label: the catalog as the user named it (``earth-search``, or its URL).
        url: root URL of the STAC API (empty when the catalog could not be used at all).
        collection: the collection searched (empty when the mission is not offered).
        items: the items found, as the API served them (duplicates included).
        error: why the catalog could not be searched; None when it answered.
    """

    label: str
    url: str
    collection: str
    items: tuple[dict[str, Any], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class AvailabilitySearch:
    """The searches of several catalogs for one mission, area and period.

    Attributes:
        mission: mission id.
        area: the area searched, a WGS 84 GeoJSON (Multi)Polygon (the AOI or the bbox).
        start: first day searched.
        end: last day searched.
        static: True for single-time products (DEM), whose items have no acquisition date.
        results: one entry per catalog, in the order given.
    """

    mission: str
    area: dict[str, Any]
    start: dt.date
    end: dt.date
    static: bool
    results: tuple[CatalogScenes, ...]

    @property
    def items_by_catalog(self) -> dict[str, list[dict[str, Any]]]:
        """``{label: items}`` of the catalogs that answered (input of :func:`~stac2cube.footprints.footprint_map`)."""
        return {r.label: list(r.items) for r in self.results if r.error is None}

    @property
    def title(self) -> str:
        """A one-line description: mission and period."""
        if self.static:
            return f"{self.mission} (static product)"
        return f"{self.mission}, {self.start} to {self.end}"


def _label(catalog: str, spec: CatalogSpec) -> str:
    return spec.url if spec.name == "custom" else str(catalog).strip()


def _default_collection(spec: CatalogSpec, mission: str, override: str | None) -> str:
    """``spec``'s collection for ``mission`` without the account check (listing needs none).

    Raises:
        InvalidRequestError: the catalog does not offer the mission (naming those that do).
    """
    if override:
        return override
    if spec.name == "custom":
        return mission
    ids = spec.collections.get(mission)
    if ids:
        return ids[0]
    return spec.collection_for(mission)  # raises the "not offered" error


def _per_catalog(collection: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    if collection is None or isinstance(collection, str):
        return [collection or None] * n
    values = [c or None for c in collection]
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise InvalidRequestError(
            f"give one collection for all catalogs or one per catalog ({n}); got {len(values)}"
        )
    return values


def _requests(
    catalogs: Sequence[str],
    collections: Sequence[str | None],
    base: SearchRequest,
) -> list[tuple[str, SearchRequest | None, str | None]]:
    """``(label, request, error)`` per distinct catalog; ``error`` where it cannot be searched."""
    out: list[tuple[str, SearchRequest | None, str | None]] = []
    seen: set[str] = set()
    for name, override in zip(catalogs, collections, strict=True):
        spec = resolve_catalog(name)  # an unknown name is a typo: always an error
        label = _label(name, spec)
        if label in seen:
            continue
        seen.add(label)
        try:
            coll = _default_collection(spec, base.mission.id, override)
        except InvalidRequestError as exc:
            if len(catalogs) == 1:
                raise
            out.append((label, None, str(exc)))
            continue
        out.append((label, replace(base, catalog=spec, collection=coll), None))
    return out


def _search_one(request: SearchRequest, client_factory: Any) -> list[dict[str, Any]]:
    client = (
        client_factory(request.catalog.url) if client_factory else open_client(request.catalog.url)
    )
    return search_items(request, client=client, allow_empty=True)


def search_catalogs(
    catalogs: Sequence[str] | str,
    mission: str,
    *,
    bbox: Sequence[float] | None = None,
    aoi: str | Path | Mapping[str, Any] | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    collection: str | Sequence[str | None] | None = None,
    max_cloud: float = 100.0,
    season: str | Sequence[int] | None = None,
    dates: Sequence[str | dt.date] | None = None,
    today: dt.date | None = None,
    client_factory: Any = None,
) -> AvailabilitySearch:
    """Search every catalog for ``mission`` over the area and period (one search each).

    The input is validated once with :func:`~stac2cube.request.make_search` (same rules and
    messages as a build) before anything is searched. Catalogs are searched in parallel.

    Args:
        catalogs: Catalog names (earth-search, planetary-computer, terrabyte, auto) or STAC API
            URLs; a repeated catalog is searched once.
        mission: Mission id.
        bbox: Area as WGS 84 [west, south, east, north]; or give ``aoi``.
        aoi: Area as GeoJSON or a vector file.
        start: First day (UTC, inclusive); may be left empty when ``dates`` are given.
        end: Last day (UTC, inclusive); empty means today (or the last of ``dates``).
        collection: One collection id for every catalog, or one per catalog (None: the
            catalog's default for the mission).
        max_cloud: Keep scenes with ``eo:cloud_cover`` at most this percentage.
        season: Months of every year to keep (``6-8``, ``DJF``, ``4,5,9``).
        dates: Keep only these days.
        today: What "today" is when ``end`` is empty (tests).
        client_factory: ``url -> pystac_client.Client`` (default
            :func:`~stac2cube.search.open_client`), to inject URL signing or retries.

    Raises:
        InvalidRequestError: bad input (area, dates, mission, season, catalog name).
        CatalogError: the only catalog (or every catalog) could not be searched.
    """
    names = [catalogs] if isinstance(catalogs, str) else list(catalogs)
    if not names:
        raise InvalidRequestError("give at least one catalog")
    base = make_search(
        mission=mission,
        bbox=bbox,
        aoi=aoi,
        start=start,
        end=end,
        catalog=None,  # each catalog (and its collection) is resolved below
        max_cloud=max_cloud,
        season=season,
        dates=dates,
        today=today,
    )
    planned = _requests(names, _per_catalog(collection, len(names)), base)

    def run(entry: tuple[str, SearchRequest | None, str | None]) -> CatalogScenes:
        label, request, error = entry
        if request is None:
            return CatalogScenes(label, "", "", error=error)
        try:
            items = _search_one(request, client_factory)
        except CatalogError as exc:
            if len(planned) == 1:
                raise
            return CatalogScenes(label, request.catalog.url, request.collection, error=str(exc))
        return CatalogScenes(label, request.catalog.url, request.collection, tuple(items))

    workers = max(1, min(MAX_PARALLEL_SEARCHES, len(planned)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="availability") as pool:
        results = tuple(pool.map(run, planned))
    if results and all(r.error is not None for r in results):
        detail = "; ".join(f"{r.label}: {r.error}" for r in results)
        raise CatalogError(f"no catalog could be searched: {detail}")
    return AvailabilitySearch(
        mission=base.mission.id,
        area=area_geometry(base),
        start=base.start,
        end=base.end,
        static=base.mission.static,
        results=results,
    )


def area_geometry(request: SearchRequest) -> dict[str, Any]:
    """The area of ``request`` as GeoJSON: its AOI polygon, else its bbox."""
    if request.intersects is not None:
        return dict(request.intersects)
    from shapely.geometry import box, mapping

    return mapping(box(*request.bbox))


# --- the table --------------------------------------------------------------------------------


def _equal_area(area):
    """A function projecting WGS 84 shapely geometries to a LAEA centred on ``area``."""
    from pyproj import Transformer
    from shapely.ops import transform

    c = area.centroid
    tr = Transformer.from_crs(
        "EPSG:4326",
        f"+proj=laea +lat_0={c.y:.6f} +lon_0={c.x:.6f} +datum=WGS84 +units=m",
        always_xy=True,
    )
    return lambda geom: transform(tr.transform, geom)


def cover_fraction(items: Sequence[Mapping[str, Any]], area: Mapping[str, Any]) -> float:
    """Fraction (0-1) of ``area`` (GeoJSON) inside the union of the items' footprints.

    Areas are compared in a Lambert azimuthal equal-area projection centred on the area.

    >>> sq = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    >>> half = {"type": "Polygon", "coordinates": [[[0, 0], [0.5, 0], [0.5, 1], [0, 1], [0, 0]]]}
    >>> round(cover_fraction([{"geometry": half}], sq), 2)
    0.5
    """
    from shapely.geometry import shape
    from shapely.ops import unary_union

    aoi = shape(area)
    shapes = [s for s in (item_footprint(i) for i in items) if s is not None and not s.is_empty]
    if not shapes or aoi.is_empty:
        return 0.0
    project = _equal_area(aoi)
    aoi_m = project(aoi)
    if aoi_m.area <= 0:
        return 0.0
    covered = project(unary_union(shapes)).intersection(aoi_m).area
    return float(min(1.0, covered / aoi_m.area))


def _cloud(items: Sequence[Mapping[str, Any]]) -> list[float]:
    values = []
    for item in items:
        value = item.get("properties", {}).get("eo:cloud_cover")
        if value is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                values.append(number)
    return values


def _day_row(
    day: dt.date | None,
    result: CatalogScenes,
    kept: Sequence[dict[str, Any]],
    dropped: int,
    area: Mapping[str, Any],
) -> dict[str, Any]:
    from stac2cube.items import tile_id

    clouds = _cloud(kept)
    platforms = {str(i.get("properties", {}).get("platform") or "").lower() for i in kept}
    return {
        "date": day,
        "catalog": result.label,
        "collection": result.collection,
        "scenes": len(kept),
        "duplicates": dropped,
        "tiles": " ".join(sorted({tile_id(i) for i in kept})),
        "platforms": " ".join(sorted(p for p in platforms if p)),
        "cloud_min": min(clouds) if clouds else math.nan,
        "cloud_mean": sum(clouds) / len(clouds) if clouds else math.nan,
        "aoi_cover": cover_fraction(kept, area),
        "error": "",
    }


def _empty_row(result: CatalogScenes) -> dict[str, Any]:
    return {
        "date": None,
        "catalog": result.label,
        "collection": result.collection,
        "scenes": 0,
        "duplicates": 0,
        "tiles": "",
        "platforms": "",
        "cloud_min": math.nan,
        "cloud_mean": math.nan,
        "aoi_cover": math.nan if result.error else 0.0,
        "error": result.error or "",
    }


def tabulate(search: AvailabilitySearch) -> pd.DataFrame:
    """One row per solar day and catalog (columns :data:`COLUMNS`), sorted by date then catalog.

    Each day's items are de-duplicated as a build would (the newest processing of an
    acquisition is counted in ``scenes``, the others in ``duplicates``). Catalogs that failed
    or found nothing get one row with an empty date, after the dated rows.
    """
    import pandas as pd

    from stac2cube.steps import deduplicate, solar_day

    order = {r.label: k for k, r in enumerate(search.results)}
    dated: list[dict[str, Any]] = []
    undated: list[dict[str, Any]] = []
    for result in search.results:
        if result.error is not None or not result.items:
            undated.append(_empty_row(result))
            continue
        kept, dropped = deduplicate(result.items)
        days: dict[dt.date | None, list[dict[str, Any]]] = {}
        for item in kept:
            days.setdefault(None if search.static else solar_day(item), []).append(item)
        extra: dict[dt.date | None, int] = {}
        for item in dropped:
            key = None if search.static else solar_day(item)
            extra[key] = extra.get(key, 0) + 1
        for day, members in days.items():
            row = _day_row(day, result, members, extra.get(day, 0), search.area)
            (undated if day is None else dated).append(row)
    dated.sort(key=lambda r: (r["date"], order[r["catalog"]]))
    undated.sort(key=lambda r: order[r["catalog"]])
    frame = pd.DataFrame(dated + undated, columns=list(COLUMNS))
    return frame.astype({"scenes": "int64", "duplicates": "int64"})


def scene_table(catalogs: Sequence[str] | str, mission: str, **kwargs: Any) -> pd.DataFrame:
    """:func:`search_catalogs` then :func:`tabulate`: the scenes per day and catalog.

    Keyword arguments and errors as :func:`search_catalogs`.
    """
    return tabulate(search_catalogs(catalogs, mission, **kwargs))


def _number(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(number) else format(number, fmt)


def _summary(frame: pd.DataFrame) -> list[str]:
    lines = []
    for label in dict.fromkeys(frame["catalog"]):
        rows = frame[frame["catalog"] == label]
        errors = [e for e in rows["error"] if e]
        if errors:
            lines.append(f"{label}: error: {errors[0]}")
            continue
        scenes = int(rows["scenes"].sum())
        days = int(((rows["scenes"] > 0) & rows["date"].notna()).sum())
        clouds = rows.loc[rows["scenes"] > 0, "cloud_mean"].dropna()
        text = f"{label}: {scenes} {'scene' if scenes == 1 else 'scenes'}"
        if days:
            text += f" on {days} {'day' if days == 1 else 'days'}"
        if len(clouds):
            text += f", mean cloud cover {clouds.mean():.1f}%"
        dups = int(rows["duplicates"].sum())
        if dups:
            text += f" ({dups} older {'processing' if dups == 1 else 'processings'} not counted)"
        lines.append(text)
    return lines


def format_table(frame: pd.DataFrame, *, title: str | None = None) -> str:
    """A plain-text table of :func:`tabulate`'s rows, then one summary line per catalog.

    The date is printed once per day; ``-`` marks a missing value (no cloud cover for the
    mission, no date for a catalog that found nothing or failed).
    """
    headers = (
        "date",
        "catalog",
        "scenes",
        "tiles",
        "platforms",
        "cloud min",
        "cloud mean",
        "AOI cover",
        "note",
    )
    right = {2, 5, 6, 7}
    body: list[tuple[str, ...]] = []
    previous = object()
    for row in frame.to_dict("records"):
        day = row["date"]
        if day is None or (isinstance(day, float) and math.isnan(day)):
            day_text = "-"
        else:
            day_text = "" if day == previous else str(day)
        previous = row["date"]
        note = "error, see below" if row["error"] else ("no scenes" if not row["scenes"] else "")
        if not note and row["duplicates"]:
            note = f"+{row['duplicates']} older processing{'s' if row['duplicates'] > 1 else ''}"
        cover = row["aoi_cover"]
        body.append(
            (
                day_text,
                str(row["catalog"]),
                str(row["scenes"]),
                row["tiles"] or "-",
                row["platforms"] or "-",
                _number(row["cloud_min"], ".1f"),
                _number(row["cloud_mean"], ".1f"),
                _number(cover, ".0%"),
                note,
            )
        )
    last = len(headers) - 1  # the note is not padded
    widths = [len(h) for h in headers]
    for line in body:
        pairs = enumerate(zip(widths, line, strict=True))
        widths = [w if k == last else max(w, len(c)) for k, (w, c) in pairs]

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            cell if k == last else (cell.rjust(w) if k in right else cell.ljust(w))
            for k, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [title] if title else []
    lines += [fmt(headers), fmt(["-" * w for w in widths])]
    lines += [fmt(line) for line in body]
    if frame.empty:
        lines.append("(no catalogs)")
    lines.append("")
    lines += _summary(frame)
    return "\n".join(lines)


def check_writable(path: str | Path | None, what: str) -> Path | None:
    """``path`` as a Path whose folder exists or can be created, or a clear error."""
    if path is None or str(path) == "":
        return None
    out = Path(path)
    if out.is_dir():
        raise InvalidRequestError(f"{what} path {out} is a folder; give a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequestError(f"cannot create the folder of {what} path {out}: {exc}") from exc
    return out


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`tabulate`'s table as CSV (ISO dates, empty cells for missing values)."""
    out = Path(path)
    try:
        frame.to_csv(out, index=False, float_format="%.4g")
    except OSError as exc:
        raise Stac2CubeError(f"cannot write {out}: {exc}") from exc
    return out
