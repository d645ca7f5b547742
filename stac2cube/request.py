"""One validated cube request: every user input normalised once, before any work starts.

Loose input is accepted at the edge (bbox list, GeoJSON dict or file, date strings, band
aliases) and turned into one canonical :class:`CubeRequest`. Every problem raises
:class:`~stac2cube.errors.InvalidRequestError` naming the parameter, so nothing is searched,
read or written for a request that cannot succeed.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stac2cube.aoi import load_aoi
from stac2cube.catalogs import CatalogSpec, resolve_catalog
from stac2cube.errors import InvalidRequestError
from stac2cube.grid import Grid, centre_utm_epsg, grid_for_bbox, native_anchor, parse_crs
from stac2cube.missions import MISSIONS, BandSpec, MissionSpec, get_mission
from stac2cube.radiometry import ProcessingOptions
from stac2cube.spec import DEFAULT_MAX_CLOUD, DEFAULT_RESOLUTION

RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "average")
TILE_MODES = ("mosaic", "separate")
QUICKLOOK_FORMATS = (None, "gif", "png")
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: meteorological seasons by their usual letters
SEASON_NAMES = {"DJF": (12, 1, 2), "MAM": (3, 4, 5), "JJA": (6, 7, 8), "SON": (9, 10, 11)}


@dataclass(frozen=True)
class SearchRequest:
    """What to search: a mission on a catalog's collection, an area, a period, a cloud limit.

    Build one with :func:`make_search`; the constructor trusts its input. A
    :class:`CubeRequest` is a search request and what the cube is built with (bands, grid,
    options, products), so the search stage takes either.
    """

    mission: MissionSpec
    #: None only in a search whose catalog is still to be chosen (:func:`make_search`)
    catalog: CatalogSpec | None
    collection: str
    bbox: tuple[float, float, float, float]
    start: dt.date
    end: dt.date
    max_cloud: float = DEFAULT_MAX_CLOUD
    intersects: dict[str, Any] | None = None
    months: tuple[int, ...] = ()
    dates: tuple[dt.date, ...] = ()

    @property
    def datetime_range(self) -> str:
        """The STAC ``datetime`` interval: whole UTC days, both ends inclusive."""
        return _interval(self.start, self.end)

    @property
    def search_windows(self) -> list[tuple[dt.date, dt.date]]:
        """The date ranges to search: the whole period, or only its season / explicit dates.

        >>> r = SearchRequest(None, None, "", (0, 0, 1, 1), dt.date(2018, 1, 1),
        ...                   dt.date(2019, 12, 31), months=(12, 1, 2))
        >>> [f"{a}..{b}" for a, b in r.search_windows]
        ['2018-01-01..2018-02-28', '2018-12-01..2019-02-28', '2019-12-01..2019-12-31']
        """
        return search_windows(self.start, self.end, self.months, self.dates)

    @property
    def search_intervals(self) -> list[str]:
        """:attr:`search_windows` as STAC ``datetime`` intervals."""
        return [_interval(a, b) for a, b in self.search_windows]


@dataclass(frozen=True, kw_only=True)
class CubeRequest(SearchRequest):
    """What to build: a search (mission, catalog, area, period), bands and a grid.

    Build one with :func:`make_request`; the constructor trusts its input. The fields of
    :class:`SearchRequest` come first (positional); the cube's own fields are keywords.
    """

    bands: tuple[BandSpec, ...]
    grid: Grid
    resampling: str = "nearest"
    options: ProcessingOptions = field(default_factory=ProcessingOptions)
    clip: bool = False
    tile_mode: str = "mosaic"
    min_coverage: float = 0.0
    max_scene_cloud: float = 100.0
    indices: tuple[str, ...] = ()
    composites: tuple[str, ...] = ()
    statistics: bool = False
    quicklook: str | None = None
    #: write cloud layers for the steps of the run (stac2cube.clouds); not part of the record
    cloud_layers: bool = False
    coregister: bool = False
    #: unreadable assets are recorded and read as nodata instead of failing (stac2cube.broken)
    errors_as_nodata: bool = False

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the request, stored in the cube so ``update`` needs only a path."""
        return {
            "mission": self.mission.id,
            "catalog": self.catalog.name,
            "catalog_url": self.catalog.url,
            "collection": self.collection,
            "bbox": list(self.bbox),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "bands": [b.name for b in self.bands],
            "grid": self.grid.to_attrs(),
            "max_cloud": self.max_cloud,
            "resampling": self.resampling,
            "aoi": self.intersects,
            "options": self.options.describe(),
            "months": list(self.months),
            "dates": [d.isoformat() for d in self.dates],
            "clip": self.clip,
            "tile_mode": self.tile_mode,
            "min_coverage": self.min_coverage,
            "max_scene_cloud": self.max_scene_cloud,
            "indices": list(self.indices),
            "composites": list(self.composites),
            "statistics": self.statistics,
            "quicklook": self.quicklook,
            "errors_as_nodata": self.errors_as_nodata,
        }


def _interval(start: dt.date, end: dt.date) -> str:
    return f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59.999Z"


def search_windows(
    start: dt.date, end: dt.date, months: Sequence[int] = (), dates: Sequence[dt.date] = ()
) -> list[tuple[dt.date, dt.date]]:
    """Date ranges within ``start..end`` that hold ``dates`` or the ``months`` of a season.

    Consecutive days (or months) are merged into one range, so a season across the new year
    (December to February) is one search per winter.
    """
    if dates:
        days = sorted(d for d in set(dates) if start <= d <= end)
    elif months:
        wanted = set(months)
        days = []
        first = dt.date(start.year, start.month, 1)
        while first <= end:
            if first.month in wanted:
                nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
                days.append(max(first, start))
                days.append(min(nxt - dt.timedelta(days=1), end))
            first = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        return [(start, end)]
    windows: list[tuple[dt.date, dt.date]] = []
    pairs = zip(days, days, strict=True) if dates else zip(days[::2], days[1::2], strict=True)
    for a, b in pairs:
        if windows and (a - windows[-1][1]).days <= 1:
            windows[-1] = (windows[-1][0], b)
        else:
            windows.append((a, b))
    return windows


def parse_season(season: str | Sequence[int] | None) -> tuple[int, ...]:
    """Months of a season: ``"6-8"``, ``"12-2"`` (wraps the new year), ``"JJA"``, ``"jun-aug"``,
    ``"4,5,9"`` or a list of month numbers; empty for None.

    >>> parse_season("11-2"), parse_season("JJA"), parse_season([3, 4]), parse_season("4,5,9")
    ((11, 12, 1, 2), (6, 7, 8), (3, 4), (4, 5, 9))
    """
    if season is None or season == "" or season == []:
        return ()
    if isinstance(season, str):
        text = season.strip().upper()
        if text in SEASON_NAMES:
            return SEASON_NAMES[text]
        if "," in text:
            return parse_season([p for p in text.split(",") if p.strip()])
        parts = [p.strip() for p in text.split("-")]
        if len(parts) == 1:
            return (_month(parts[0], season),)
        if len(parts) != 2:
            raise InvalidRequestError(
                f"season must be months FROM-TO such as 6-8 or 12-2, or DJF/MAM/JJA/SON; "
                f"got {season!r}"
            )
        a, b = (_month(p, season) for p in parts)
        return tuple((a - 1 + k) % 12 + 1 for k in range((b - a) % 12 + 1))
    months = tuple(_month(m, season) for m in season)
    return tuple(dict.fromkeys(months))


def _month(value: Any, season: Any) -> int:
    text = str(value).strip().upper()
    for k, name in enumerate(MONTH_NAMES):
        if text == name or text == calendar.month_name[k + 1].upper():
            return k + 1
    try:
        month = int(text)
    except ValueError:
        raise InvalidRequestError(f"season {season!r}: {value!r} is not a month") from None
    if not 1 <= month <= 12:
        raise InvalidRequestError(f"season {season!r}: month {month} is not in 1..12")
    return month


def _fraction(value: Any, name: str, top: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}") from None
    if not 0 <= number <= top:
        raise InvalidRequestError(f"{name} must be within 0..{top:g}, got {value}")
    return number


def _require_qa_band(spec: MissionSpec, option: str) -> None:
    """Refuse ``option`` for a mission without a cloud classification band, naming those with one.

    >>> _require_qa_band(get_mission("cop-dem-glo-30"), "mask_clouds")
    Traceback (most recent call last):
    ...
    stac2cube.errors.InvalidRequestError: mask_clouds needs a cloud classification band (SCL or QA_PIXEL); cop-dem-glo-30 has none: it works for sentinel-2-l2a (SCL), landsat-c2-l2 (QA_PIXEL)
    """
    if spec.qa_band:
        return
    usable = ", ".join(
        f"{m.id} ({m.band(m.qa_band).name.upper()})" for m in MISSIONS.values() if m.qa_band
    )
    raise InvalidRequestError(
        f"{option} needs a cloud classification band (SCL or QA_PIXEL); {spec.id} has none: "
        f"it works for {usable}"
    )


def parse_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """Validate a WGS 84 ``(west, south, east, north)`` box.

    >>> parse_bbox([11, 48, 11.1, 48.1])
    (11.0, 48.0, 11.1, 48.1)
    """
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"bbox must be four numbers W S E N, got {bbox!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidRequestError(f"bbox must be four finite numbers W S E N, got {list(bbox)}")
    west, south, east, north = values
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InvalidRequestError(f"bbox longitude out of range [-180, 180]: {list(values)}")
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise InvalidRequestError(f"bbox latitude out of range [-90, 90]: {list(values)}")
    if west >= east:
        raise InvalidRequestError(f"bbox west ({west}) must be less than east ({east})")
    if south >= north:
        raise InvalidRequestError(f"bbox south ({south}) must be less than north ({north})")
    return values  # type: ignore[return-value]


def parse_anchor(
    anchor: Sequence[float] | None, epsg: int, mission: MissionSpec
) -> tuple[float, float]:
    """Where the grid's pixel edges lie ``(x, y)`` in ``epsg``: ``anchor`` when given, else
    the mission's native pixel edges (:func:`~stac2cube.grid.native_anchor`)."""
    if anchor is None:
        return native_anchor(epsg, mission.grid_anchor)
    try:
        values = tuple(float(v) for v in anchor)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"anchor must be two numbers X Y, got {anchor!r}") from None
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise InvalidRequestError(f"anchor must be two finite numbers X Y, got {list(anchor)}")
    return values  # type: ignore[return-value]


def parse_date(value: str | dt.date | None, name: str) -> dt.date | None:
    """A date from ``YYYY-MM-DD`` (or a date/datetime); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidRequestError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None


def make_search(
    *,
    mission: str,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    bbox: Sequence[float] | None = None,
    aoi: str | Path | Mapping[str, Any] | None = None,
    catalog: str | None = "earth-search",
    collection: str | None = None,
    max_cloud: float = DEFAULT_MAX_CLOUD,
    today: dt.date | None = None,
    season: str | Sequence[int] | None = None,
    dates: Sequence[str | dt.date] | None = None,
) -> SearchRequest:
    """Validate the search part of user input (mission, catalog, area, period, cloud limit).

    ``catalog=None`` validates everything but the catalog: the result has no catalog and the
    ``collection`` as given (or ``""``); fill both with :func:`dataclasses.replace` before
    searching (the availability check does, once per catalog).

    Example:
        >>> s = make_search(mission="sentinel-2-l2a", bbox=[11.5, 48.1, 11.52, 48.11],
        ...                 start="2024-01-01", end="2024-12-31", season="JJA", catalog=None)
        >>> s.catalog, s.months, s.search_intervals
        (None, (6, 7, 8), ['2024-06-01T00:00:00Z/2024-08-31T23:59:59.999Z'])
    """
    spec = get_mission(mission)
    if catalog is None:
        cat, coll = None, collection or ""
    else:
        cat = resolve_catalog(catalog)
        coll = cat.collection_for(spec.id, collection)

    intersects = None
    if aoi is not None:
        from shapely.geometry import shape

        intersects = load_aoi(aoi)
        geom_bbox = parse_bbox(shape(intersects).bounds)
        box = parse_bbox(bbox) if bbox is not None else geom_bbox
    elif bbox is not None:
        box = parse_bbox(bbox)
    else:
        raise InvalidRequestError("give an area: bbox (W S E N) or aoi (GeoJSON)")

    keep_dates = tuple(sorted({parse_date(d, "dates") for d in dates or ()}))
    start_d = parse_date(start, "start") or (keep_dates[0] if keep_dates else None)
    if start_d is None:
        raise InvalidRequestError("start date is required (YYYY-MM-DD)")
    end_d = (
        parse_date(end, "end")
        or (keep_dates[-1] if keep_dates else None)
        or (today or dt.datetime.now(dt.UTC).date())
    )
    if end_d < start_d:
        raise InvalidRequestError(f"end date {end_d} is before start date {start_d}")
    outside = [d.isoformat() for d in keep_dates if not start_d <= d <= end_d]
    if outside:
        raise InvalidRequestError(f"dates {outside} lie outside {start_d}..{end_d}")
    months = parse_season(season)
    if months and keep_dates:
        raise InvalidRequestError("give either a season or explicit dates, not both")
    if months and spec.static:
        raise InvalidRequestError(f"{spec.id} is a single-time product: a season does not apply")
    try:
        cloud = float(max_cloud)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"max_cloud must be a number, got {max_cloud!r}") from None
    if not 0 <= cloud <= 100:
        raise InvalidRequestError(f"max_cloud must be a percentage 0..100, got {max_cloud}")
    return SearchRequest(
        mission=spec,
        catalog=cat,
        collection=coll,
        bbox=box,
        start=start_d,
        end=end_d,
        max_cloud=cloud,
        intersects=intersects,
        months=months,
        dates=keep_dates,
    )


def make_request(
    *,
    mission: str,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    bbox: Sequence[float] | None = None,
    aoi: str | Path | Mapping[str, Any] | None = None,
    catalog: str = "earth-search",
    collection: str | None = None,
    bands: Sequence[str] | None = None,
    resolution: float = DEFAULT_RESOLUTION,
    crs: str | int | None = None,
    anchor: Sequence[float] | None = None,
    max_cloud: float = DEFAULT_MAX_CLOUD,
    resampling: str = "nearest",
    options: ProcessingOptions | None = None,
    today: dt.date | None = None,
    season: str | Sequence[int] | None = None,
    dates: Sequence[str | dt.date] | None = None,
    clip: bool = False,
    tile_mode: str = "mosaic",
    min_coverage: float = 0.0,
    max_scene_cloud: float = 100.0,
    indices: Sequence[str] | None = None,
    composites: Sequence[str] | None = None,
    statistics: bool = False,
    quicklook: str | None = None,
    cloud_layers: bool = False,
    coregister: bool = False,
    errors_as_nodata: bool = False,
) -> CubeRequest:
    """Validate user input into a :class:`CubeRequest`.

    The search part (mission, catalog, area, period, cloud limit) is validated by
    :func:`make_search`; this adds bands, grid, options and products.

    Example:
        >>> r = make_request(mission="sentinel-2-l2a", bbox=[11.5, 48.1, 11.52, 48.11],
        ...                  start="2024-01-01", end="2024-01-31", bands=["red", "B08"])
        >>> [b.name for b in r.bands], r.grid.epsg, r.collection
        (['B04', 'B08'], 32632, 'sentinel-2-c1-l2a')
    """
    spec = get_mission(mission)
    if options is not None and options.mask_clouds:
        _require_qa_band(spec, "mask_clouds")
    search = make_search(
        mission=mission,
        start=start,
        end=end,
        bbox=bbox,
        aoi=aoi,
        catalog=catalog,
        collection=collection,
        max_cloud=max_cloud,
        today=today,
        season=season,
        dates=dates,
    )
    band_specs = spec.resolve_bands(bands)

    if clip and search.intersects is None:
        raise InvalidRequestError("clip needs a polygon aoi (a bbox is already its own box)")
    if tile_mode not in TILE_MODES:
        raise InvalidRequestError(
            f"unknown tile_mode {tile_mode!r}; use one of {', '.join(TILE_MODES)}"
        )
    coverage = _fraction(min_coverage, "min_coverage", 1.0)
    scene_cloud = _fraction(max_scene_cloud, "max_scene_cloud", 100.0)
    if scene_cloud < 100:
        _require_qa_band(spec, "max_scene_cloud")
    index_names: tuple[str, ...] = ()
    if indices:
        from stac2cube.indices import resolve_indices

        index_names = resolve_indices(spec, indices)
    composite_specs: tuple[str, ...] = ()
    if composites:
        from stac2cube.composites import parse_composites

        composite_specs = parse_composites(composites)
    if cloud_layers and spec.id != "sentinel-2-l2a":
        raise InvalidRequestError(
            f"cloud_layers needs a Sentinel-2 L2A cube (s2cloudless on the matching L1C "
            f"scenes); this is a {spec.id} cube"
        )
    if coregister:
        from stac2cube.coregistration import check_request

        check_request(spec.id, [b.name for b in band_specs])
    if quicklook in ("", "none"):
        quicklook = None
    if quicklook not in QUICKLOOK_FORMATS:
        raise InvalidRequestError(f"quicklook must be gif, png or none; got {quicklook!r}")

    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"resolution must be a number, got {resolution!r}") from None
    if not math.isfinite(res) or res <= 0:
        raise InvalidRequestError(
            f"resolution must be a positive number of metres, got {resolution}"
        )
    if resampling not in RESAMPLING_METHODS:
        raise InvalidRequestError(
            f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLING_METHODS)}"
        )
    epsg = parse_crs(crs) if crs else centre_utm_epsg(search.bbox)
    grid = grid_for_bbox(search.bbox, res, epsg, parse_anchor(anchor, epsg, spec))
    if grid.width * grid.height > 400_000_000:
        raise InvalidRequestError(
            f"grid of {grid.width} x {grid.height} pixels at {res} m is too large; "
            "use a coarser resolution or a smaller area"
        )
    return CubeRequest(
        **{f.name: getattr(search, f.name) for f in fields(SearchRequest)},
        bands=band_specs,
        grid=grid,
        resampling=resampling,
        options=options or ProcessingOptions(),
        clip=bool(clip),
        tile_mode=tile_mode,
        min_coverage=coverage,
        max_scene_cloud=scene_cloud,
        indices=index_names,
        composites=composite_specs,
        statistics=bool(statistics),
        quicklook=quicklook,
        cloud_layers=bool(cloud_layers),
        coregister=bool(coregister),
        errors_as_nodata=bool(errors_as_nodata),
    )
