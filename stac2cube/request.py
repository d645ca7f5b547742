"""One validated cube request: every user input normalised once, before any work starts.

Loose input is accepted at the edge (bbox list, GeoJSON dict or file, date strings, band
aliases) and turned into one canonical :class:`CubeRequest`. Every problem raises
:class:`~stac2cube.errors.InvalidRequestError` naming the parameter, so nothing is searched,
read or written for a request that cannot succeed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stac2cube.catalogs import CatalogSpec, resolve_catalog
from stac2cube.errors import InvalidRequestError
from stac2cube.grid import Grid, grid_for_bbox, parse_crs
from stac2cube.missions import BandSpec, MissionSpec, get_mission
from stac2cube.radiometry import ProcessingOptions

RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "average")
DEFAULT_MAX_CLOUD = 100.0
DEFAULT_RESOLUTION = 10.0


@dataclass(frozen=True)
class CubeRequest:
    """What to build: a mission on a catalog, an area, a period, bands and a grid.

    Build one with :func:`make_request`; the constructor trusts its input.
    """

    mission: MissionSpec
    catalog: CatalogSpec
    collection: str
    bbox: tuple[float, float, float, float]
    start: dt.date
    end: dt.date
    bands: tuple[BandSpec, ...]
    grid: Grid
    max_cloud: float = DEFAULT_MAX_CLOUD
    resampling: str = "nearest"
    intersects: dict[str, Any] | None = None
    options: ProcessingOptions = field(default_factory=ProcessingOptions)

    @property
    def datetime_range(self) -> str:
        """The STAC ``datetime`` interval: whole UTC days, both ends inclusive."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59.999Z"

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
        }


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


def load_aoi(aoi: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON geometry (WGS 84) from a geometry/Feature/FeatureCollection dict or a file."""
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    if isinstance(aoi, str | Path):
        path = Path(aoi)
        if not path.is_file():
            raise InvalidRequestError(f"AOI file not found: {path}")
        try:
            aoi = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"AOI file {path} is not GeoJSON: {exc}") from None
    kind = aoi.get("type") if isinstance(aoi, Mapping) else None
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in aoi.get("features", [])]
    elif kind == "Feature":
        geoms = [aoi.get("geometry")]
    elif kind in ("Polygon", "MultiPolygon"):
        geoms = [aoi]
    else:
        raise InvalidRequestError(
            f"AOI must be a GeoJSON Polygon, Feature or FeatureCollection, got {kind!r}"
        )
    if not geoms or any(g is None for g in geoms):
        raise InvalidRequestError("AOI has no geometry")
    try:
        shapes = [shape(g) for g in geoms]
    except Exception as exc:
        raise InvalidRequestError(f"AOI geometry is invalid: {exc}") from None
    if any(s.geom_type not in ("Polygon", "MultiPolygon") for s in shapes):
        raise InvalidRequestError("AOI geometries must be polygons")
    return mapping(unary_union(shapes))


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


def make_request(
    *,
    mission: str,
    start: str | dt.date,
    end: str | dt.date | None = None,
    bbox: Sequence[float] | None = None,
    aoi: str | Path | Mapping[str, Any] | None = None,
    catalog: str = "earth-search",
    collection: str | None = None,
    bands: Sequence[str] | None = None,
    resolution: float = DEFAULT_RESOLUTION,
    crs: str | int | None = None,
    max_cloud: float = DEFAULT_MAX_CLOUD,
    resampling: str = "nearest",
    options: ProcessingOptions | None = None,
    today: dt.date | None = None,
) -> CubeRequest:
    """Validate user input into a :class:`CubeRequest`.

    Example:
        >>> r = make_request(mission="sentinel-2-l2a", bbox=[11.5, 48.1, 11.52, 48.11],
        ...                  start="2024-01-01", end="2024-01-31", bands=["red", "B08"])
        >>> [b.name for b in r.bands], r.grid.epsg, r.collection
        (['B04', 'B08'], 32632, 'sentinel-2-c1-l2a')
    """
    spec = get_mission(mission)
    cat = resolve_catalog(catalog)
    coll = cat.collection_for(spec.id, collection)
    band_specs = spec.resolve_bands(bands)

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

    start_d = parse_date(start, "start")
    if start_d is None:
        raise InvalidRequestError("start date is required (YYYY-MM-DD)")
    end_d = parse_date(end, "end") or (today or dt.datetime.now(dt.UTC).date())
    if end_d < start_d:
        raise InvalidRequestError(f"end date {end_d} is before start date {start_d}")

    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"resolution must be a number, got {resolution!r}") from None
    if not math.isfinite(res) or res <= 0:
        raise InvalidRequestError(
            f"resolution must be a positive number of metres, got {resolution}"
        )
    try:
        cloud = float(max_cloud)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"max_cloud must be a number, got {max_cloud!r}") from None
    if not 0 <= cloud <= 100:
        raise InvalidRequestError(f"max_cloud must be a percentage 0..100, got {max_cloud}")
    if resampling not in RESAMPLING_METHODS:
        raise InvalidRequestError(
            f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLING_METHODS)}"
        )
    epsg = parse_crs(crs) if crs else None
    grid = grid_for_bbox(box, res, epsg)
    if grid.width * grid.height > 400_000_000:
        raise InvalidRequestError(
            f"grid of {grid.width} x {grid.height} pixels at {res} m is too large; "
            "use a coarser resolution or a smaller area"
        )
    return CubeRequest(
        mission=spec,
        catalog=cat,
        collection=coll,
        bbox=box,
        start=start_d,
        end=end_d,
        bands=band_specs,
        grid=grid,
        max_cloud=cloud,
        resampling=resampling,
        intersects=intersects,
        options=options or ProcessingOptions(),
    )
