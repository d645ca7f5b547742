"""The build flow: STAC search -> analysis-ready cube in an icechunk store."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from stac2cube.tasks.group import group_task
from stac2cube.tasks.load import load_task
from stac2cube.tasks.preprocess import preprocess_task
from stac2cube.tasks.search import search_task
from stac2cube.tasks.write import commit_task, write_task

from stac2cube import __version__
from stac2cube._log import get_logger
from stac2cube.errors import EmptySearchError
from stac2cube.request import make_request
from stac2cube.store import check_compatible, open_repo, read_state

MissionName = Literal["sentinel-2-l2a"]
ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]


@flow(name="get-stac-layers", validate_parameters=True)
def get_stac_layers(
    mission: MissionName = "sentinel-2-l2a",
    bbox: list[float] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    store: str = "cube.icechunk",
    catalog: str = "earth-search",
    collection: str | None = None,
    bands: list[str] | None = None,
    resolution: float = 10.0,
    crs: str | None = None,
    max_cloud: float = 100.0,
    aoi: dict[str, Any] | str | None = None,
    resampling: ResamplingName = "nearest",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Build (or extend) an analysis-ready data cube from a STAC search.

    Searches the catalog, drops duplicate granules, mosaics the scenes of each solar day, applies
    each item's radiometry, and writes the time steps to an icechunk (Zarr v3) store in one
    commit. On an existing store only scenes the cube lacks are added; the grid, bands and
    mission must match the cube's.

    Args:
        mission: Mission to build a cube of.
        bbox: Area as WGS 84 [west, south, east, north] in degrees (or give `aoi`).
        start: First day (UTC, inclusive).
        end: Last day (UTC, inclusive); empty means today.
        store: Path of the cube store to create, or to extend if it exists.
        catalog: earth-search (default), planetary-computer, terrabyte, auto, or a STAC API URL.
        collection: Collection id; default: the catalog's collection for the mission.
        bands: Bands by ESA id (B04) or common name (red); default B02 B03 B04 B08.
        resolution: Pixel size in metres (default 10).
        crs: Target CRS such as EPSG:32632; default: the UTM zone of the area's centre.
        max_cloud: Keep scenes whose eo:cloud_cover is at most this percentage (100: all).
        aoi: GeoJSON geometry, Feature or FeatureCollection, or a path to a GeoJSON file.
        resampling: Resampling of continuous bands from 20/60 m; classification bands always
            use nearest.
        batch_size: Time steps read and written at a time (bounds memory).

    Returns:
        A summary: store, snapshot id, time steps added and in total, scenes read.

    Example:
        >>> from stac2cube import get_stac_layers, open_cube
        >>> get_stac_layers(mission="sentinel-2-l2a", bbox=[11.50, 48.10, 11.56, 48.14],
        ...                 start="2024-06-01", end="2024-06-30", store="munich.icechunk",
        ...                 bands=["red", "nir"], max_cloud=30)  # doctest: +SKIP
        >>> open_cube("munich.icechunk").B04  # doctest: +SKIP
    """
    log = get_logger()
    request = make_request(
        mission=mission,
        bbox=bbox,
        aoi=aoi,
        start=start,
        end=end,
        catalog=catalog,
        collection=collection,
        bands=bands,
        resolution=resolution,
        crs=crs,
        max_cloud=max_cloud,
        resampling=resampling,
    )
    described = request.describe()
    state = read_state(store)
    if state is not None:
        check_compatible(state, described)
    items = search_task(request, allow_empty=state is not None)
    steps = group_task(items)
    if state is not None:
        known = state.item_ids
        steps = [s for s in steps if not set(s.item_ids) <= known]
        if not steps:
            log.info("nothing new for %s: the cube already holds every matching scene", store)
            return {
                "store": store,
                "added_time_steps": 0,
                "time_steps": len(state.ledger),
                "snapshot": None,
            }
    if not steps:
        raise EmptySearchError("no scenes left after de-duplication")

    target = Path(store)
    work = target if state is not None else _staging_path(target)
    repo = open_repo(work, create=True)
    try:
        session = repo.writable_session("main")
        ledger = list(state.ledger) if state is not None else []
        first = state is None
        total = len(steps)
        for k in range(0, total, batch_size):
            batch = steps[k : k + batch_size]
            items_b = [i for s in batch for i in s.items]
            raw = load_task(request, items_b)
            ds, entries = preprocess_task(request, batch, raw)
            write_task(session, ds, first, items_b)
            first = False
            ledger.extend(entries)
            log.info(
                "wrote time steps %d-%d of %d (%.0f%%)",
                k + 1,
                k + len(batch),
                total,
                100 * (k + len(batch)) / total,
            )
        request_record = dict(state.request) if state is not None else described
        if state is not None:
            request_record["end"] = max(request_record["end"], described["end"])
            request_record["start"] = min(request_record["start"], described["start"])
        snapshot = commit_task(
            session,
            request_record,
            ledger,
            __version__,
            f"{'extend' if state else 'create'}: +{total} time steps "
            f"({sum(len(s.items) for s in steps)} scenes) {request.start}..{request.end}",
        )
    except BaseException:
        if work != target:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if work != target:
        os.replace(work, target)
    log.info("cube %s: snapshot %s, %d time steps", store, snapshot, len(ledger))
    return {
        "store": str(store),
        "snapshot": snapshot,
        "added_time_steps": total,
        "time_steps": len(ledger),
        "scenes": sum(len(s.items) for s in steps),
    }


def _staging_path(target: Path) -> Path:
    """Where a new cube is built before it is moved to ``target`` in one rename."""
    return target.with_name(f".{target.name}.partial-{os.getpid()}")
