"""The availability flow: which catalog has which scenes of an area and period, before a build.

A thin wrapper around :mod:`stac2cube.availability` (search and table) and
:mod:`stac2cube.footprints` (the map): one search per catalog, the per-day table
(returned, and stored as a table artifact on the flow run), and on request a CSV file and a
footprint map (PNG).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from stac2cube._log import get_logger
from stac2cube.availability import (
    AvailabilitySearch,
    check_writable,
    format_table,
    search_catalogs,
    tabulate,
    write_csv,
)
from stac2cube.footprints import footprint_map
from stac2cube.spec import MissionName

__all__ = ["check_availability", "table_records"]

#: Rows of the table artifact at most (the first are kept).
MAX_ARTIFACT_ROWS = 1000


@task(name="search-catalogs", cache_policy=NO_CACHE)
def search_catalogs_task(**kwargs: Any) -> AvailabilitySearch:
    """Prefect task: :func:`~stac2cube.availability.search_catalogs`."""
    return search_catalogs(**kwargs)


def table_records(frame) -> list[dict[str, Any]]:
    """The table's rows as JSON-ready dicts (ISO dates, None for missing values)."""
    import math

    rows = []
    for row in frame.to_dict("records"):
        out = {}
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, dt.date):
                value = value.isoformat()
            elif hasattr(value, "item"):  # numpy scalars
                value = value.item()
            out[key] = value
        rows.append(out)
    return rows


@flow(name="check-availability", validate_parameters=True)
def check_availability(
    mission: MissionName = "sentinel-2-l2a",
    bbox: list[float] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    catalogs: list[str] | None = None,
    collection: list[str | None] | str | None = None,
    max_cloud: float = 100.0,
    aoi: dict[str, Any] | str | None = None,
    season: str | None = None,
    dates: list[dt.date] | None = None,
    map_path: str | None = None,
    csv_path: str | None = None,
) -> dict[str, Any]:
    """List the scenes per day and catalog for an area and period, before building a cube.

    Searches each catalog once (in parallel) with the same validation and filters as a build,
    de-duplicates older processings, and tabulates per solar day and catalog: scenes, tiles,
    platforms, minimum and mean cloud cover, and the fraction of the area the day's footprints
    cover. With several catalogs, one that cannot be searched gets a row with its error while
    the others are listed; a single failing catalog fails the run.

    Args:
        mission: Mission to look for.
        bbox: Area as WGS 84 [west, south, east, north] in degrees (or give `aoi`).
        start: First day (UTC, inclusive); may be left empty when `dates` are given.
        end: Last day (UTC, inclusive); empty means today (or the last of `dates`).
        catalogs: Catalogs to compare: earth-search, planetary-computer, terrabyte, auto, or
            STAC API URLs (default: earth-search).
        collection: One collection id for every catalog, or one per catalog (empty: each
            catalog's collection for the mission).
        max_cloud: Count only scenes whose eo:cloud_cover is at most this percentage.
        aoi: Area as a GeoJSON geometry, Feature or FeatureCollection, or a vector file.
        season: Keep only these months of every year: ``6-8``, ``12-2``, ``DJF``, ``4,5,9``.
        dates: Keep only scenes acquired on these days (UTC).
        map_path: Write a PNG map of the scene footprints of each catalog over the area here.
        csv_path: Write the table as CSV here.

    Returns:
        ``{"rows": [...], "table": text, "csv": path or None, "map": path or None}``; a row
        has the columns of :data:`stac2cube.availability.COLUMNS`.

    Example:
        >>> from stac2cube.flows.availability import check_availability
        >>> result = check_availability(
        ...     mission="sentinel-2-l2a", bbox=[11.50, 48.10, 11.56, 48.14],
        ...     start="2024-06-01", end="2024-06-30",
        ...     catalogs=["earth-search", "planetary-computer"], max_cloud=50,
        ...     map_path="footprints.png")  # doctest: +SKIP
        >>> print(result["table"])  # doctest: +SKIP
    """
    csv_out = check_writable(csv_path, "csv")
    map_out = check_writable(map_path, "map")
    search = search_catalogs_task(
        catalogs=catalogs or ["earth-search"],
        mission=mission,
        bbox=bbox,
        aoi=aoi,
        start=start,
        end=end,
        collection=collection,
        max_cloud=max_cloud,
        season=season,
        dates=dates,
    )
    frame = tabulate(search)
    text = format_table(frame, title=search.title)
    get_logger().info("scene availability\n%s", text)
    rows = table_records(frame)
    _publish(rows, search)
    if csv_out is not None:
        write_csv(frame, csv_out)
    if map_out is not None:
        footprint_map(search.items_by_catalog, search.area, map_out, title=search.title)
    return {
        "rows": rows,
        "table": text,
        "csv": str(csv_out) if csv_out else None,
        "map": str(map_out) if map_out else None,
    }


def _publish(rows: list[dict[str, Any]], search: AvailabilitySearch) -> None:
    from prefect.artifacts import create_table_artifact

    if rows:
        create_table_artifact(
            table=rows[:MAX_ARTIFACT_ROWS],
            key="scene-availability",
            description=f"Scenes per day and catalog: {search.title}",
        )
