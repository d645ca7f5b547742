"""The build flow: STAC search -> analysis-ready cube in an icechunk store."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import xarray as xr
from prefect import flow
from prefect.utilities.annotations import quote

from stac2cube import __version__
from stac2cube._log import get_logger
from stac2cube.errors import EmptySearchError, InvalidRequestError
from stac2cube.flows.report import ProgressArtifact, publish_build_report
from stac2cube.flows.runner import AutoDaskTaskRunner, pixel_client
from stac2cube.radiometry import ProcessingOptions
from stac2cube.request import make_request
from stac2cube.signing import make_signer
from stac2cube.store import (
    CubeState,
    check_compatible,
    merge_ledger,
    open_cube,
    open_repo,
    read_state,
    store_lock,
)
from stac2cube.tasks.group import deduplicate, group_task
from stac2cube.tasks.load import load_task
from stac2cube.tasks.plan import Plan, plan_changes, plan_task, stamp_ledger
from stac2cube.tasks.preprocess import preprocess_task, static_steps
from stac2cube.tasks.search import search_task
from stac2cube.tasks.write import commit_task, rewrite_task, write_task

MissionName = Literal[
    "sentinel-2-l2a", "sentinel-2-l1c", "landsat-c2-l2", "sentinel-1-rtc", "cop-dem-glo-30"
]
ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]
SarScale = Literal["db", "linear"]
CatalogChoice = Literal["earth-search", "planetary-computer", "terrabyte", "auto"]


@flow(name="get-stac-layers", validate_parameters=True, task_runner=AutoDaskTaskRunner())
def get_stac_layers(
    mission: MissionName = "sentinel-2-l2a",
    bbox: list[float] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    store: str = "cube.icechunk",
    catalog: CatalogChoice | str = "earth-search",
    collection: str | None = None,
    bands: list[str] | None = None,
    resolution: float = 10.0,
    crs: str | None = None,
    max_cloud: float = 100.0,
    aoi: dict[str, Any] | str | None = None,
    resampling: ResamplingName = "nearest",
    batch_size: int = 8,
    mask_clouds: bool = False,
    scl_classes: list[int] | None = None,
    qa_flags: list[str] | None = None,
    sar_scale: SarScale = "db",
    pc_key_block: str | None = None,
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
        mask_clouds: Mask clouds and shadows in each scene before mosaicking (Sentinel-2 L2A:
            SCL classes; Landsat: QA_PIXEL flags), so a clear scene of the same day fills in.
        scl_classes: SCL classes masked by `mask_clouds` (default 1 3 8 9 10).
        qa_flags: QA_PIXEL flags masked by `mask_clouds` (default dilated_cloud cirrus cloud
            cloud_shadow).
        sar_scale: Sentinel-1 backscatter in dB (default) or linear gamma0.
        pc_key_block: Name of a Prefect Secret block holding a Planetary Computer subscription
            key (otherwise PC_SDK_SUBSCRIPTION_KEY); never logged or stored.

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
    options = ProcessingOptions.from_record(
        {
            "mask_clouds": mask_clouds,
            "scl_classes": scl_classes or None,
            "qa_flags": qa_flags or None,
            "sar_scale": sar_scale,
        }
    )
    pc_key = _planetary_computer_key(pc_key_block)
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
        options=options,
    )
    if batch_size < 1:
        raise InvalidRequestError(f"batch_size must be >= 1, got {batch_size}")
    described = request.describe()
    state = read_state(store)
    if state is not None:
        check_compatible(state, described)
    items = search_task(request, allow_empty=state is not None)
    if request.mission.static:  # DEM: every tile in one step at STATIC_TIME
        steps = static_steps(deduplicate(items)[0])
    else:
        steps = group_task(quote(items))
    plan = plan_task(quote(steps), quote(state.ledger if state is not None else []))
    if plan.empty:
        if state is None:
            raise EmptySearchError("no scenes left after de-duplication")
        log.info("nothing new for %s: the cube already holds every matching scene", store)
        return _reported(_summary(store, None, plan, state.ledger))

    target = Path(store)
    with store_lock(target):
        if state is not None:  # re-read under the lock: another run may have committed
            state = read_state(target)
            plan = plan_changes(steps, state.ledger)
            if plan.empty:
                return _reported(_summary(store, None, plan, state.ledger))
        with pixel_client():  # the cluster starts here, only when there is pixel work
            snapshot, ledger = write_plan(request, plan, target, state, batch_size, pc_key=pc_key)
    log.info("cube %s: snapshot %s, %d time steps", store, snapshot, len(ledger))
    return _reported(_summary(store, snapshot, plan, ledger))


def _reported(summary: dict[str, Any]) -> dict[str, Any]:
    """Publish the run report artifacts; a report failure never fails a committed build."""
    try:
        publish_build_report(summary)
    except Exception as exc:  # artifacts are a courtesy: the cube is already committed
        get_logger().warning("could not publish the run report: %s", exc)
    return summary


def _planetary_computer_key(block_name: str | None) -> str | None:
    """The Planetary Computer key from a Prefect Secret block, made visible to the signer."""
    if not block_name:
        return None
    import planetary_computer
    from prefect.blocks.system import Secret

    key = Secret.load(block_name).get()
    planetary_computer.set_subscription_key(key)
    return key


def _summary(store, snapshot, plan: Plan, ledger) -> dict[str, Any]:
    return {
        "store": str(store),
        "snapshot": snapshot,
        "added_time_steps": len(plan.add),
        "replaced_time_steps": len(plan.replace),
        "time_steps": len(ledger),
        "scenes": sum(len(s.items) for s in plan.steps),
    }


def write_plan(
    request,
    plan: Plan,
    target: Path,
    state: CubeState | None,
    batch_size: int = 8,
    *,
    pc_key: str | None = None,
) -> tuple[str, list]:
    """Load, preprocess and write the plan's time steps; commit once. Returns (snapshot, ledger).

    Large arguments (item dicts, lazy datasets, the ledger) are passed to tasks ``quote``-d so
    that Prefect does not walk them for upstream futures (measured: ~30 ms per item otherwise).

    A new cube is built in a hidden sibling directory and renamed into place after its commit,
    so a failed first build leaves nothing. An existing cube is written in one icechunk session:
    until the commit, readers (and a crash) see the previous snapshot.
    """
    log = get_logger()
    work = target if state is not None else _staging_path(target)
    _remove_stale_staging(target)
    repo = open_repo(work, create=True)
    try:
        session = repo.writable_session("main")
        ledger = list(state.ledger) if state is not None else []
        appends_only = not plan.replace and (
            state is None
            or not state.times
            or min(s.time.isoformat() for s in plan.add) > state.times[-1]
        )
        steps = plan.steps
        entries: list[dict[str, Any]] = []
        parts = []
        first = state is None
        progress = ProgressArtifact(str(target), total=len(steps))
        for k in range(0, len(steps), batch_size):
            batch = steps[k : k + batch_size]
            items_b = [i for s in batch for i in s.items]
            signer = make_signer(request.catalog, items_b, key=pc_key)
            raw = load_task(request, quote(items_b), signer=signer)
            ds, batch_entries = preprocess_task(request, quote(batch), quote(raw))
            stamp_ledger(batch_entries, batch)
            entries.extend(batch_entries)
            if appends_only:
                write_task(session, quote(ds), first, quote(items_b), batch_size)
                first = False
                progress.update(k + len(batch))
                log.info(
                    "wrote time steps %d-%d of %d (%.0f%%)",
                    k + 1,
                    k + len(batch),
                    len(steps),
                    100 * (k + len(batch)) / len(steps),
                )
            else:
                parts.append((ds, items_b))
        if not appends_only:
            base = open_cube(target)
            new = xr.concat([p[0] for p in parts], dim="time")
            items_all = [i for p in parts for i in p[1]]
            rewrite_task(
                session, quote(base), quote(new), plan.replaced_times, quote(items_all), batch_size
            )
            log.info("inserted %d and replaced %d time steps", len(plan.add), len(plan.replace))
        ledger = merge_ledger(ledger, entries, plan.replaced_times)
        record = described_with_range(request, state)
        snapshot = commit_task(
            session,
            record,
            quote(ledger),
            __version__,
            f"{'extend' if state else 'create'}: +{len(plan.add)} time steps, "
            f"{len(plan.replace)} replaced ({len(steps) and sum(len(s.items) for s in steps)} "
            f"scenes) {request.start}..{request.end}",
            {
                "added_time_steps": len(plan.add),
                "replaced_time_steps": len(plan.replace),
                "scenes": sum(len(s.items) for s in steps),
            },
        )
    except BaseException:
        if work != target:
            _remove_tree(work)
        raise
    if work != target:
        os.replace(work, target)
    return snapshot, ledger


def described_with_range(request, state: CubeState | None) -> dict[str, Any]:
    """The request record to store: the cube's own, with its date range widened."""
    described = request.describe()
    if state is None:
        return described
    record = dict(state.request)
    record["start"] = min(record["start"], described["start"])
    record["end"] = max(record["end"], described["end"])
    return record


def _remove_tree(path: Path, tries: int = 20) -> None:
    """Remove ``path``; retry while writer threads of a failed computation still finish."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.1)
        if not path.exists():
            return


def _remove_stale_staging(target: Path) -> None:
    """Remove hidden staging directories of first builds whose process is gone (killed runs)."""
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


def _staging_path(target: Path) -> Path:
    """Where a new cube is built before it is moved to ``target`` in one rename."""
    return target.with_name(f".{target.name}.partial-{os.getpid()}")
