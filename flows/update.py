"""The update flow: extend a cube from its own state, e.g. nightly."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow

from stac2cube._log import get_logger
from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.flows.build import get_stac_layers
from stac2cube.settings import build_parameters, read_settings
from stac2cube.store import read_state


def update_window(
    state_request: dict[str, Any], last_time: str | None, end: dt.date, lookback_days: int
) -> tuple[dt.date, dt.date]:
    """The search window of an update: from ``lookback_days`` before the cube's last step.

    The look-back catches scenes the catalog published late and recent reprocessings; it never
    starts before the cube's own start date.

    >>> update_window({"start": "2024-01-01"}, "2024-03-10T10:30:21", dt.date(2024, 4, 1), 30)
    (datetime.date(2024, 2, 9), datetime.date(2024, 4, 1))
    """
    first = dt.date.fromisoformat(state_request["start"])
    if last_time is None:
        return first, end
    start = dt.date.fromisoformat(last_time[:10]) - dt.timedelta(days=lookback_days)
    return max(first, start), end


@flow(name="update-cube")
def update_cube(
    store: str,
    end: dt.date | None = None,
    lookback_days: int = 30,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Extend the cube at ``store`` up to ``end`` with what its catalog has gained.

    Everything else (catalog, collection, mission, area, grid, bands, filters) comes from the
    request recorded in the cube, so a schedule needs nothing but the store path. Only scenes the
    ledger lacks are read; reprocessed scenes replace their time step; a second run with nothing
    new changes nothing.

    Args:
        store: Path of an existing cube store.
        end: Last day to include (UTC); empty means today.
        lookback_days: Search this many days before the cube's last time step, to catch late
            and reprocessed scenes.
        batch_size: Time steps read and written at a time.

    Returns:
        The summary of :func:`~stac2cube.flows.build.get_stac_layers`.

    Example:
        >>> from stac2cube.flows.update import update_cube
        >>> update_cube(store="munich.icechunk")  # doctest: +SKIP
    """
    state = read_state(store)
    if state is None:
        raise StoreError(f"no cube at {store}; create it with `stac2cube build` first")
    if lookback_days < 0:
        raise InvalidRequestError(f"lookback_days must be >= 0, got {lookback_days}")
    end = end or dt.datetime.now(dt.UTC).date()
    req = state.request
    start, end = update_window(req, state.times[-1] if state.times else None, end, lookback_days)
    if end < start:
        raise InvalidRequestError(f"end {end} is before the update window's start {start}")
    get_logger().info("updating %s: searching %s..%s on %s", store, start, end, req["catalog_url"])
    params = build_parameters(req, store)
    params.update(start=start, end=end, batch_size=batch_size)
    if params["dates"]:  # a cube of explicit dates only grows by those in the window
        params["dates"] = [d for d in params["dates"] if start.isoformat() <= d <= end.isoformat()]
        if not params["dates"]:
            get_logger().info("none of the cube's dates falls in %s..%s: nothing to do", start, end)
            return {
                "store": str(store),
                "snapshot": None,
                "added_time_steps": 0,
                "replaced_time_steps": 0,
                "time_steps": len(state.ledger),
                "scenes": 0,
            }
    return get_stac_layers(**params)


@flow(name="cube-from-settings")
def cube_from_settings(
    settings: str,
    end: dt.date | None = None,
    lookback_days: int = 30,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Create the cube a settings file describes, or extend it when it exists.

    The file is the ``<cube>.settings.json`` every build writes beside its cube (see
    :mod:`stac2cube.settings`). Without a cube at its ``store`` the build runs from its
    ``start`` up to ``end``; with one, :func:`update_cube` extends it from the cube's own
    recorded state (which wins over the file). So one schedule or SLURM job script needs nothing
    but the settings path, from the first night on.

    Args:
        settings: Path of a ``<cube>.settings.json`` file.
        end: Last day to include (UTC); empty means today.
        lookback_days: For an existing cube: search this many days before its last time step.
        batch_size: Time steps read and written at a time.

    Returns:
        The summary of :func:`~stac2cube.flows.build.get_stac_layers`.

    Example:
        >>> from stac2cube.flows.update import cube_from_settings
        >>> cube_from_settings("/data/cubes/munich.settings.json")  # doctest: +SKIP
    """
    params = read_settings(settings)
    store = params["store"]
    if read_state(store) is not None:
        return update_cube(store=store, end=end, lookback_days=lookback_days, batch_size=batch_size)
    params.update(end=end, batch_size=batch_size)
    return get_stac_layers(**params)
