"""The build flow: STAC search -> analysis-ready cube in an icechunk store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr
from prefect import flow
from prefect.utilities.annotations import quote

from stac2cube import __version__
from stac2cube._log import get_logger
from stac2cube._progress import plan_steps, skip_steps
from stac2cube.coregistration import coregister_build_steps, with_cube_placeholders
from stac2cube.cube import Cube, as_cube
from stac2cube.dataset import static_steps
from stac2cube.errors import (
    BuildError,
    EmptySearchError,
    InvalidRequestError,
    Stac2CubeError,
    StoreError,
)
from stac2cube.flows.report import ProgressArtifact, publish_build_report
from stac2cube.flows.runner import AutoDaskTaskRunner, pixel_client
from stac2cube.parameters import resolve_requests
from stac2cube.plan import Plan, plan_changes, rejected_entry, stamp_ledger
from stac2cube.request import CubeRequest
from stac2cube.settings import STATS_SUFFIX, sidecar_path, write_settings
from stac2cube.signing import make_signer
from stac2cube.spec import (
    DEFAULT_BATCH_SIZE,
    bound_parameters,
    with_form_defaults,
    with_spec_parameters,
)
from stac2cube.steps import TimeStep, deduplicate
from stac2cube.store import (
    CubeState,
    check_compatible,
    forked,
    merge_ledger,
    processing_record,
    steps_per_batch,
)
from stac2cube.superres import SuperresSettings, build_settings, run_settings
from stac2cube.tasks.group import group_task
from stac2cube.tasks.load import load_task
from stac2cube.tasks.plan import plan_task
from stac2cube.tasks.preprocess import preprocess_task
from stac2cube.tasks.search import search_task
from stac2cube.tasks.superres import superres_task
from stac2cube.tasks.write import commit_task, rewrite_task, write_task

#: Feature cubes built at the same time by one flow run (``per_feature``).
MAX_PARALLEL_FEATURES = 4


# The parameters are the cube spec's fields and the run's (stac2cube.spec, defined there once):
# the signature and the Args below are generated from them, so Prefect's typed form shows their
# types, choices and descriptions. Prefect's own validation is off: resolve_requests checks
# every parameter first thing, with the one-line errors the CLI gives.
@with_form_defaults  # the form's schema: no null defaults (see there)
@flow(name="get-stac-layers", validate_parameters=False, task_runner=AutoDaskTaskRunner())
@with_spec_parameters()
def get_stac_layers(**parameters: Any) -> dict[str, Any]:
    """Build (or extend) an analysis-ready data cube from a STAC search.

    Searches the catalog, drops duplicate granules, mosaics the scenes of each solar day, applies
    each item's radiometry, and writes the time steps to an icechunk (Zarr v3) store in one
    commit. On an existing store only scenes the cube lacks are added; the grid, bands, mission
    and pixel options must match the cube's. Beside the cube go ``<cube>.settings.json``
    (re-runs this build) and, on request, ``<cube>.stats.csv`` and a quicklook time-lapse.

    Args:
        {args}

    Returns:
        A summary: store, snapshot id, time steps added and in total, scenes read (with
        `per_feature`: ``{"cubes": {name: summary}}``).

    Example:
        >>> from stac2cube import get_stac_layers, open_cube
        >>> get_stac_layers(mission="sentinel-2-l2a", bbox=[11.50, 48.10, 11.56, 48.14],
        ...                 start="2024-06-01", end="2024-06-30", store="munich.icechunk",
        ...                 bands=["red", "nir"], indices=["NDVI"], max_cloud=30)  # doctest: +SKIP
        >>> open_cube("munich.icechunk").NDVI  # doctest: +SKIP
    """
    params = bound_parameters(get_stac_layers, parameters)
    requests = resolve_requests(params)
    pc_key = _planetary_computer_key(params["pc_key_block"])
    batch_size = params["batch_size"]
    superres = build_settings(params)  # the stage's switch, checked before the search
    if params["per_feature"]:
        return {
            "cubes": build_feature_cubes(requests, batch_size, pc_key=pc_key, superres=superres)
        }
    ((request, target),) = requests.values()
    return execute_build(
        prepare_build(request, target), batch_size, pc_key=pc_key, superres=superres
    )


@dataclass(frozen=True)
class PreparedBuild:
    """A validated request with its search done and its plan made; nothing written yet."""

    request: CubeRequest
    cube: Cube
    state: CubeState | None
    steps: list[TimeStep]
    plan: Plan
    #: keys of steps whose listed broken assets read again (stac2cube.broken)
    refill: frozenset[str] = frozenset()

    @property
    def store(self) -> str:
        """The store path as given."""
        return self.cube.name


def prepare_build(request: CubeRequest, store: str | Path | Cube) -> PreparedBuild:
    """Check the store, search, group and plan: everything that can fail before writing."""
    cube = as_cube(store)
    state = cube.state
    if state is not None:
        check_compatible(state, request.describe())
    items = search_task(request, allow_empty=state is not None)
    if request.mission.static:  # DEM: every tile in one step at STATIC_TIME
        steps = static_steps(deduplicate(items)[0])
    else:
        steps = group_task(quote(items), request.tile_mode)
    refill = probe_broken(request, steps, state.ledger) if state is not None else frozenset()
    plan = plan_task(
        quote(steps),
        quote(state.ledger if state is not None else []),
        quote(state.request.get("rejected", []) if state is not None else []),
        quote(refill),
    )
    if plan.empty and state is None:
        raise EmptySearchError("no scenes left after de-duplication")
    return PreparedBuild(request, cube, state, steps, plan, refill)


def probe_broken(request: CubeRequest, steps: list[TimeStep], ledger) -> frozenset[str]:
    """Keys of the steps whose ledger lists broken assets of which one reads again over the
    cube's grid (:func:`stac2cube.broken.refill_keys`); each probe is logged."""
    from stac2cube.broken import asset_problem, refill_keys

    if not any(e.get("broken_assets") for e in ledger):
        return frozenset()
    log = get_logger()
    signer = make_signer(request.catalog, [i for s in steps for i in s.items])

    def problem(item: dict[str, Any], asset: str) -> str | None:
        return asset_problem(request, item, asset, signer=signer)

    def report(key: str, record: dict[str, Any], reason: str | None) -> None:
        if reason is None:
            log.info("time step %s: item %s asset %s reads again: it is filled in",
                     key, record["item"], record["asset"])  # fmt: skip
        else:
            log.warning("time step %s: item %s asset %s is still unreadable (%s): left as nodata",
                        key, record["item"], record["asset"], reason)  # fmt: skip

    return frozenset(refill_keys(steps, ledger, problem, report))


def execute_build(
    prepared: PreparedBuild,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    pc_key: str | None = None,
    superres: SuperresSettings | None = None,
) -> dict[str, Any]:
    """Write a prepared build, then its settings, statistics and quicklook, all under the store
    lock (two runs never write one cube, or the files beside it, at the same time)."""
    log = get_logger()
    request, cube = prepared.request, prepared.cube
    snapshot, written, broken = None, [], {}
    with cube.lock():
        _, plan = replan(prepared)  # the handle now holds the state read under the lock
        ledger = cube.ledger
        if not plan.empty:
            with pixel_client():  # the cluster starts here, only when there is pixel work
                snapshot, ledger, written = write_plan_or_skip_broken(
                    request, plan, cube, batch_size, pc_key=pc_key, superres=superres,
                    broken=broken,
                )  # fmt: skip
        products = write_products(cube, request, written)
    summary = _summary(cube.name, snapshot, plan, ledger)
    if broken:
        from stac2cube.broken import broken_list

        summary["broken_assets"] = broken_list(broken)
    summary["filtered_time_steps"] = 0
    if snapshot is not None:  # what was written, after the filters
        n_replaced = sum(t in plan.replaced_times for t in written)
        summary.update(
            added_time_steps=len(written) - n_replaced,
            replaced_time_steps=n_replaced,
            filtered_time_steps=len(plan.steps) - len(written),
        )
    if snapshot is None:
        log.info("nothing new for %s: the cube already holds every matching scene", cube.name)
    else:
        log.info("cube %s: snapshot %s, %d time steps", cube.name, snapshot, len(ledger))
    summary.update(products)
    return _reported(summary, cube)


def replan(prepared: PreparedBuild) -> tuple[CubeState | None, Plan]:
    """The cube's state re-read under the lock, and the plan made against it.

    Another run may have committed since this one planned: an extension is planned again
    against the new state; a first build whose cube another run has created meanwhile stops
    here, before any pixel is read (it was planned without the cube's grid and ledger).
    """
    state = prepared.cube.refresh()
    if prepared.state is None and state is None:
        return None, prepared.plan
    if prepared.state is None or state is None:
        raise StoreError(
            f"another stac2cube run is writing {prepared.store}: it "
            f"{'created' if state is not None else 'removed'} the cube while this run was "
            "planning; nothing was written, run again"
        )
    plan = plan_changes(
        prepared.steps, state.ledger, state.request.get("rejected", []), prepared.refill
    )
    return state, plan


def write_products(cube: Cube | str, request: CubeRequest, written: list[str]) -> dict[str, str]:
    """The files beside a committed cube: settings, STAC Collection, statistics CSV, quicklook.
    Returns paths.

    The record is the state the handle holds (the one just committed, or the cube's own with
    nothing new); the store is not read again for it.
    """
    cube = as_cube(cube)
    state = cube.state
    if state is None:
        return {}
    store = cube.name
    out = {"settings": str(write_settings(store, state.request, __version__))}
    try:
        from stac2cube.collection import write_collection  # <cube>.collection.json (STAC)

        out["collection"] = str(write_collection(cube))
        if request.statistics:
            from stac2cube.stats import write_statistics_csv

            csv = sidecar_path(store, STATS_SUFFIX)
            out["statistics"] = str(
                write_statistics_csv(cube, csv, times=written if csv.exists() else None)
            )
        if request.quicklook:
            from stac2cube.quicklook import write_quicklooks

            path = sidecar_path(store, f".quicklook.{request.quicklook}")
            out["quicklook"] = str(write_quicklooks(cube, path, fmt=request.quicklook))
    except Stac2CubeError:
        raise
    except Exception as exc:
        raise BuildError(
            f"cube {store} is committed, but writing the files beside it failed: {exc}"
        ) from exc
    return out


def build_feature_cubes(
    requests: dict[str, tuple[CubeRequest, str]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    pc_key: str | None = None,
    max_parallel: int = MAX_PARALLEL_FEATURES,
    superres: SuperresSettings | None = None,
) -> dict[str, dict[str, Any]]:
    """Build one cube per feature: all searched and planned first, then written in parallel.

    Every request is checked against its store and searched before any pixel is written, so a
    feature that matches no scene (or an incompatible existing store) fails the run with
    nothing written. The writes then run in threads sharing the flow's Dask cluster; a cube
    whose write fails leaves the others committed and is named in the error.
    """
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    stores = [s for _, s in requests.values()]
    if len(set(stores)) != len(stores):
        raise InvalidRequestError(f"feature stores collide: {stores}; put {{name}} in store")
    prepared = {}
    for name, (request, store) in requests.items():
        try:
            prepared[name] = prepare_build(request, store)
        except Stac2CubeError as exc:
            raise type(exc)(f"feature {name!r}: {exc}") from exc
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, BaseException] = {}
    with pixel_client(), ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        futures = {
            name: pool.submit(
                contextvars.copy_context().run,
                execute_build,
                p,
                batch_size,
                pc_key=pc_key,
                superres=superres,
            )
            for name, p in prepared.items()
        }
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:
                failures[name] = exc
    if failures:
        done = ", ".join(sorted(results)) or "none"
        raise BuildError(
            "feature cube(s) failed: "
            + "; ".join(f"{n}: {e}" for n, e in failures.items())
            + f" (committed: {done})"
        ) from next(iter(failures.values()))
    return results


def _reported(summary: dict[str, Any], cube: Cube | None = None) -> dict[str, Any]:
    """Publish the run report artifacts; a report failure never fails a committed build."""
    try:
        publish_build_report(summary, cube=cube)
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


def write_plan_or_skip_broken(
    request: CubeRequest,
    plan: Plan,
    cube: Cube,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    pc_key: str | None = None,
    superres: SuperresSettings | None = None,
    broken: dict[tuple[str, str], str],
) -> tuple[str | None, list, list[str]]:
    """:func:`write_plan`; with the request's ``errors_as_nodata``, an asset whose read fails
    is added to ``broken`` (``(item id, asset key) -> reason``) and the plan is written again
    without it, from a fresh session (see :mod:`stac2cube.broken`)."""
    from stac2cube.errors import AssetReadError

    while True:
        try:
            return write_plan(
                request, plan, cube, batch_size, pc_key=pc_key, superres=superres, broken=broken
            )
        except AssetReadError as exc:
            if not request.errors_as_nodata or (exc.item, exc.asset) in broken:
                raise
            broken[(exc.item, exc.asset)] = exc.reason
            get_logger().warning(
                "item %s asset %s cannot be read (%s): it is written as nodata "
                "(errors_as_nodata) and listed in the ledger; writing the run again",
                exc.item, exc.asset, exc.reason,
            )  # fmt: skip


def write_plan(
    request,
    plan: Plan,
    cube: Cube,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    pc_key: str | None = None,
    superres: SuperresSettings | None = None,
    broken: dict[tuple[str, str], str] | None = None,
) -> tuple[str | None, list, list[str]]:
    """Load, preprocess and write the plan's time steps into the cube; commit once.

    Steps failing the request's coverage or scene-cloud filters are dropped before writing.
    The handle holds the lifecycle (:meth:`Cube.writing`): a new cube is staged in a hidden
    directory and renamed into place after its commit, so a failed first build leaves nothing;
    an existing cube is written in one session, invisible to readers until the commit.

    Assets in ``broken`` (``(item id, asset key) -> reason``) are read as nodata and listed in
    their steps' ledger entries (:mod:`stac2cube.broken`).

    Returns:
        ``(snapshot, ledger, times written)``.

    Large arguments (item dicts, lazy datasets, the ledger) are passed to tasks ``quote``-d so
    that Prefect does not walk them for upstream futures (measured: ~30 ms per item otherwise).
    """
    state = cube.state  # read under the lock (replan)
    with cube.writing() as session:
        # the pixels: workers write them through a fork of the session, merged back here
        with forked(session) as pixels:
            staged = stage_batches(
                request, plan, cube, pixels, batch_size, pc_key=pc_key, broken=broken
            )
            written = [e["time"] for e in staged.entries]
            if not written and state is None:
                raise EmptySearchError(
                    f"no time step passed the filters (min_coverage {request.min_coverage:g}, "
                    f"max_scene_cloud {request.max_scene_cloud:g}%); nothing was written"
                )
            replaced = {t: old for t, old in plan.replaced_times.items() if t in set(written)}
            if staged.parts:  # inserts and replacements, written in time order
                insert_steps(cube, pixels, staged.parts, replaced, batch_size)
        ledger = merge_ledger(cube.ledger, staged.entries, replaced)
        record = described_with_range(request, state)
        record["rejected"] = merge_rejected(
            record.get("rejected", []), staged.rejected, staged.entries
        )
        if written:  # cloud layers of the steps this run wrote (on, or kept current)
            from stac2cube.clouds_store import keep_cloud_layers

            keep_cloud_layers(session, cube, record, ledger, written, on=request.cloud_layers)
        # co-registration after the cloud layers (they are shifted with the bands) and before
        # the composites (they describe aligned pixels)
        ledger = coregister_build_steps(
            session, cube, record, ledger, written, enable=request.coregister, log=get_logger().info
        )
        if record.get("composites") and written:  # the periods of the steps this run changed
            from stac2cube.composites import write_composites

            write_composites(session, record["composites"], [*written, *replaced.values()])
        superres = run_settings(session, superres)  # asked for, or the cube's group has it
        if superres is not None and written:  # the steps this run wrote, same session
            superres_task(
                session, quote(cube), written, quote(superres), ledger=quote(ledger),
                record=quote(record),
            )  # fmt: skip
        n_scenes = sum(len(e["items"]) for e in staged.entries)
        counts = {
            "added_time_steps": len(written) - len(replaced),
            "replaced_time_steps": len(replaced),
            "scenes": n_scenes,
        }
        message = (
            f"{'extend' if state else 'create'}: +{len(written) - len(replaced)} time steps, "
            f"{len(replaced)} replaced ({n_scenes} scenes) {request.start}..{request.end}"
        )
        snapshot = commit_task(
            quote(cube), session, quote(record), quote(ledger), __version__, message, counts
        )
    return snapshot, ledger, written


@dataclass
class StagedSteps:
    """What the batches of a run left: ledger entries of the steps kept, the steps the filters
    rejected, and (for inserts and replacements) the datasets still to write."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    parts: list[tuple[xr.Dataset, list[dict[str, Any]]]] = field(default_factory=list)


def stage_batches(
    request: CubeRequest,
    plan: Plan,
    cube: Cube,
    session,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    pc_key: str | None = None,
    broken: dict[tuple[str, str], str] | None = None,
) -> StagedSteps:
    """Per batch of steps: load -> preprocess -> ledger entries -> filters -> write.

    Steps after the cube's end are appended batch by batch; otherwise (inserts, replacements)
    the batches are kept lazy for :func:`insert_steps`. Assets in ``broken`` are read as
    nodata and listed in their steps' ledger entries.
    """
    from stac2cube.broken import holds_broken, note_broken, without_broken

    log = get_logger()
    state = cube.state
    appends_only = not plan.replace and (
        state is None
        or not state.times
        or min(s.time.isoformat() for s in plan.add) > state.times[-1]
    )
    steps = plan.steps
    out = StagedSteps()
    first = state is None
    progress = ProgressArtifact(cube.name, total=len(steps))
    plan_steps(len(steps))  # the terminal's bar, when one is shown
    processing = processing_record(request.describe())  # recorded in every ledger entry
    size = steps_per_batch(
        batch_size, request.grid.shape, len(request.bands) + len(request.indices)
    )
    for k in range(0, len(steps), size):
        batch = steps[k : k + size]
        items_b = [i for s in batch for i in s.items]
        signer = make_signer(request.catalog, items_b, key=pc_key)
        raw = load_task(request, quote(without_broken(items_b, broken or {})), signer=signer)
        ds, batch_entries = preprocess_task(request, quote(batch), quote(raw), integers=True)
        ds = with_cube_placeholders(cube, ds)  # coreg_* coordinates of a co-registered cube
        stamp_ledger(batch_entries, batch)
        note_broken(batch_entries, batch, broken or {})
        for entry in batch_entries:
            entry["processing"] = dict(processing)
        ds, batch_entries, items_b = filter_steps(request, ds, batch_entries, batch)
        kept = {e["time"] for e in batch_entries}
        out.rejected += [
            rejected_entry(s)
            for s in batch
            if s.time.isoformat() not in kept and not holds_broken(s, broken or {})
        ]
        skip_steps(len(batch) - len(batch_entries))
        if not batch_entries:
            progress.update(k + len(batch))
            continue
        out.entries.extend(batch_entries)
        if not appends_only:
            out.parts.append((ds, items_b))
            continue
        write_task(session, quote(ds), first, quote(items_b), size)
        first = False
        progress.update(k + len(batch))
        log.info(
            "wrote time steps %d-%d of %d (%.0f%%)",
            k + 1,
            k + len(batch),
            len(steps),
            100 * (k + len(batch)) / len(steps),
        )
    return out


def insert_steps(
    cube: Cube,
    session,
    parts: list[tuple[xr.Dataset, list[dict[str, Any]]]],
    replaced: dict[str, str],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> None:
    """Write inserted and replacing steps into the session, time kept sorted."""
    base = cube.open_dataset()  # the cube as of the session's parent snapshot
    new = xr.concat([p[0] for p in parts], dim="time")
    items_all = [i for p in parts for i in p[1]]
    rewrite_task(session, quote(base), quote(new), replaced, quote(items_all), batch_size)
    get_logger().info(
        "inserted %d and replaced %d time steps",
        new.sizes["time"] - len(replaced),
        len(replaced),
    )


def merge_rejected(
    old: list[dict[str, Any]], new: list[dict[str, Any]], written: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The cube's record of filtered-out steps after a run: ``new`` ones added (replacing the
    same key), steps written by the run removed."""
    from stac2cube.plan import ledger_key

    done = {ledger_key(e) for e in written} | {e["key"] for e in new}
    return sorted([e for e in old if e["key"] not in done] + new, key=lambda e: e["key"])


def filter_steps(
    request: CubeRequest, ds: xr.Dataset, entries: list[dict[str, Any]], steps: list[TimeStep]
) -> tuple[xr.Dataset, list[dict[str, Any]], list[dict[str, Any]]]:
    """Drop the time steps of ``ds`` failing ``min_coverage`` or ``max_scene_cloud``.

    Computes only the per-step ``valid_fraction`` and ``cloud_fraction`` (reading the first
    band and the QA band once more than the write does), and only when a filter is set.

    Returns:
        ``(dataset, ledger entries, items)`` of the steps kept.
    """
    items = [i for s in steps for i in s.items]
    if request.min_coverage <= 0 and request.max_scene_cloud >= 100:
        return ds, entries, items
    import dask
    import numpy as np

    from stac2cube.tasks.write import naming_read_errors

    # one computation for both (they share the reads); kept so the write does not redo them
    with naming_read_errors(items):
        valid, cloud = dask.compute(ds["valid_fraction"].data, ds["cloud_fraction"].data)
    ds = ds.assign_coords(valid_fraction=("time", valid), cloud_fraction=("time", cloud))
    keep = np.asarray(valid, "float64") >= request.min_coverage
    if request.max_scene_cloud < 100:
        keep &= ~(np.asarray(cloud, "float64") * 100 > request.max_scene_cloud)
    log = get_logger()
    for entry, v, c, k in zip(entries, valid, cloud, keep, strict=True):
        if not k:
            log.info(
                "dropping time step %s: valid fraction %.3f, cloud fraction %.3f",
                entry["time"],
                v,
                c,
            )
    positions = [i for i, k in enumerate(keep) if k]
    kept_steps = [steps[i] for i in positions]
    return (
        ds.isel(time=positions),
        [entries[i] for i in positions],
        [i for s in kept_steps for i in s.items],
    )


def described_with_range(request, state: CubeState | None) -> dict[str, Any]:
    """The request record to store: the cube's own, with its date range widened, any new
    composites added and its pixel options written out."""
    described = request.describe()
    if state is None:
        return described
    record = dict(state.request)
    # the pixel options equal the cube's (check_compatible): written out, so that a cube made
    # before they were recorded names them from now on
    record.update({k: described[k] for k in ("resampling", "clip", "options")})
    # the run's choice (an update passes the cube's own on: stac2cube.broken)
    record["errors_as_nodata"] = described["errors_as_nodata"]
    record["start"] = min(record["start"], described["start"])
    record["end"] = max(record["end"], described["end"])
    # composites asked for later join the cube's own (all are kept up to date from then on)
    record["composites"] = list(
        dict.fromkeys([*(record.get("composites") or []), *described["composites"]])
    )
    return record
