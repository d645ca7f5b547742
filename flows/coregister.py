"""The co-registration flow: align every time step of a cube to its stored reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from stac2cube import __version__
from stac2cube._log import get_logger
from stac2cube.coregistration import (
    GROUP,
    OK,
    CoregRun,
    check_cube,
    ledger_with,
    make_settings,
    stored_reference,
    tag_before,
)
from stac2cube.cube import Cube, as_cube
from stac2cube.tasks.coregister import coregister_task


@flow(name="coregister-scenes", validate_parameters=False)  # checked by make_settings
def coregister_scenes(
    store: str,
    band: str | None = None,
    reference: str = "median",
    max_shift: float = 5.0,
    window: int = 128,
) -> dict[str, Any]:
    """Co-register the time steps of a Sentinel-2 cube to one reference with AROSICS.

    The first run makes the reference (a clear-sky median of the clearest steps, or the step of
    a date) and keeps it in the store's ``coregistration`` group; every later run, and every
    build or update of the cube, aligns new steps to that same reference. Each step's shift
    is estimated on several clear windows of ``band`` and applied once to all its layers; the
    per-step ``coreg_*`` coordinates record it. Steps that cannot be registered keep their
    pixels and get ``coreg_status = "failed: <reason>"``. One commit; the snapshot before the
    first co-registration is tagged ``before-coregistration``.

    Args:
        store: path of an existing Sentinel-2 cube.
        band: matching band, a native 10 m band (default B08, else B04). Fixed by the first run.
        reference: ``median`` (default) or the date ``YYYY-MM-DD`` of a cube step. Fixed by the
            first run.
        max_shift: largest shift accepted, in pixels.
        window: matching window edge in pixels (a power of two, 32..1024).

    Returns:
        A summary: store, snapshot (None: nothing to do), steps co-registered, failed steps with
        their reasons, the reference, the shifts.

    Example:
        >>> from stac2cube import coregister_scenes, open_cube
        >>> coregister_scenes(store="munich.icechunk", max_shift=3)  # doctest: +SKIP
        >>> open_cube("munich.icechunk").coreg_x_shift_px  # doctest: +SKIP
    """
    log = get_logger()
    settings = make_settings(band=band, reference=reference, max_shift=max_shift, window=window)
    cube = as_cube(store)
    cube.require()
    settings = check(cube, settings)  # every problem before the lock and any write
    with cube.lock():
        state = cube.refresh()
        settings = check(cube, settings)
        parent = cube.snapshot
        with cube.writing() as session:
            run: CoregRun = coregister_task(session, quote(state.request), settings)
            snapshot = None
            if run.steps:
                n_ok = sum(s.status == OK for s in run.steps)
                ref = run.reference
                message = (
                    f"coregister: {n_ok} steps aligned, {len(run.failed)} failed, reference "
                    f"{ref.get('method')} {str(ref.get('anchor', ''))[:10]} ({ref.get('band')})"
                )
                snapshot = cube.commit(
                    session,
                    message,
                    record=state.request,
                    ledger=ledger_with(state.ledger, run),
                    version=__version__,
                    metadata={"coregistered_steps": n_ok, "failed_steps": len(run.failed)},
                )
        tag = tag_before(cube.repository(), parent) if run.created_reference and snapshot else None
    summary = {"store": cube.name, "snapshot": snapshot, **run.summary()}
    if tag:
        summary["raw_snapshot_tag"] = tag
    if snapshot is None:
        log.info("nothing to co-register in %s: every step is done", cube.name)
    for time, reason in summary["failed_steps"].items():
        log.warning("co-registration failed for %s: %s (pixels unchanged)", time, reason)
    return summary


def check(cube: Cube, settings):
    """The settings checked against the committed cube (one-line errors, nothing written)."""
    ds = cube.open_dataset(snapshot=cube.snapshot)
    session = cube.repository().readonly_session(snapshot_id=cube.snapshot)
    stored = stored_reference(session)
    times = [t for t in cube.state.times]
    return check_cube(
        cube.state.request,
        [str(v) for v in ds.data_vars],
        times,
        (ds.sizes["y"], ds.sizes["x"]),
        settings,
        stored[0] if stored is not None else None,
    )


def open_raw(store: str | Path) -> Any:
    """The cube's pixels before its first co-registration (the ``before-coregistration`` tag).

    Example:
        >>> open_raw("munich.icechunk").B08  # doctest: +SKIP
    """
    cube = as_cube(store)
    snapshot = cube.repository().lookup_tag("before-coregistration")
    return cube.open_dataset(snapshot=snapshot)


__all__ = ["GROUP", "coregister_scenes", "open_raw"]
