"""The update flow: extend a cube from its own state, e.g. nightly."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow

from stac2cube._log import get_logger
from stac2cube.flows.build import get_stac_layers
from stac2cube.flows.report import publish_build_report
from stac2cube.parameters import update_parameters
from stac2cube.settings import read_settings
from stac2cube.spec import DEFAULT_BATCH_SIZE
from stac2cube.store import read_state


@flow(name="update-cube", validate_parameters=False)  # checked by update_parameters
def update_cube(
    store: str,
    end: dt.date | None = None,
    lookback_days: int = 30,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cloud_layers: bool = False,
    coregister: bool = False,
    superres: bool = False,
    superres_model_dir: str | None = None,
    errors_as_nodata: bool = False,
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
        cloud_layers: Start cloud layers (group ``clouds``) with the new steps; a cube that
            has them keeps them current anyway.
        coregister: Turn co-registration on (a cube that has it stays co-registered anyway).
        superres: Also super-resolve the new steps with SEN2SR (a cube whose group superres
            exists gets them anyway, with the settings stored in the group).
        superres_model_dir: Folder of the SEN2SR weights (default: the group's).
        errors_as_nodata: Read unreadable assets as nodata, listed in the ledger (a cube built
            with it keeps it anyway); listed assets that read again are filled in either way.

    Returns:
        The summary of :func:`~stac2cube.flows.build.get_stac_layers`.

    Example:
        >>> from stac2cube.flows.update import update_cube
        >>> update_cube(store="munich.icechunk")  # doctest: +SKIP
    """
    steps, params = update_parameters(store, end, lookback_days, batch_size)
    if params is None:
        get_logger().info("none of the cube's dates falls in the update window: nothing to do")
        return report_here(
            {
                "store": str(store),
                "snapshot": None,
                "added_time_steps": 0,
                "replaced_time_steps": 0,
                "time_steps": steps,
                "scenes": 0,
            }
        )
    if cloud_layers:
        params["cloud_layers"] = True
    get_logger().info(
        "updating %s: searching %s..%s on %s",
        store,
        params["start"],
        params["end"],
        params["catalog"],
    )
    if coregister:
        params["coregister"] = True
    if errors_as_nodata:
        params["errors_as_nodata"] = True
    if superres or superres_model_dir:
        params.update(superres=True, superres_model_dir=superres_model_dir)
    return report_here(get_stac_layers(**params))


def report_here(summary: dict[str, Any], title: str = "Cube update") -> dict[str, Any]:
    """Publish the run's report (:func:`~stac2cube.flows.report.publish_build_report`) on the
    flow run that calls this: the run a user opens (a nightly-update run) says what happened,
    not only its ``get-stac-layers`` subflow run. A report failure is logged, never raised.
    """
    try:
        publish_build_report(summary, title=title)
    except Exception as exc:  # artifacts are a courtesy: the cube is already committed
        get_logger().warning("could not publish the run report: %s", exc)
    return summary


@flow(name="cube-from-settings", validate_parameters=False)
def cube_from_settings(
    settings: str,
    end: dt.date | None = None,
    lookback_days: int = 30,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
        summary = update_cube(
            store=store, end=end, lookback_days=lookback_days, batch_size=batch_size
        )
        return report_here(summary)
    params.update(end=end, batch_size=batch_size)
    return report_here(get_stac_layers(**params), title="Cube build")
