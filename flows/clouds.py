"""The cloud-layers flow: s2cloudless layers for every time step of an existing cube."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from stac2cube import __version__
from stac2cube._log import get_logger
from stac2cube.clouds import check_sentinel2, merged_settings
from stac2cube.clouds_store import aws_credentials, stored_settings
from stac2cube.cube import as_cube
from stac2cube.tasks.clouds import write_clouds_task


@flow(name="get-cloud-layers", validate_parameters=False)
def get_cloud_layers(
    store: str,
    catalog: str | None = None,
    collection: str | None = None,
    thresholds: list[float] | None = None,
    cloud_resolution: float | None = None,
    shadows: bool | None = None,
    cloud_method: str | None = None,
    aws_credentials_block: str | None = None,
) -> dict[str, Any]:
    """Cloud probability, masks and shadows for every time step of a Sentinel-2 L2A cube.

    Finds each step's Sentinel-2 L1C scenes (same acquisitions), runs s2cloudless on their TOA
    reflectance and writes the group ``clouds`` of the same store in one commit (see
    :mod:`stac2cube.clouds`). Steps that already have layers for the same scenes and settings
    are left alone (a second run commits nothing); replaced steps are recomputed. Options not
    given keep those stored in the group (else the defaults); other options recompute every
    step.

    Args:
        store: Path of an existing Sentinel-2 L2A cube.
        catalog: Catalog of the L1C scenes (name or URL); default: the cube's.
        collection: L1C collection id; default: the catalog's (Earth Search `sentinel-2-l1c`,
            terrabyte `sentinel-2-c1-l1c`).
        thresholds: Cloud-probability thresholds in percent (0-100), one mask each
            (default 40).
        cloud_resolution: Processing resolution in metres (default 60; the cube's resolution
            gives s2cloudless on exactly the cube's pixels).
        shadows: Also write `shadow_mask`.
        cloud_method: `s2cloudless` (default, needs L1C) or `csmask` (L2A bands, ukis-csmask).
        aws_credentials_block: Name of a Prefect Secret block holding JSON
            `{"aws_access_key_id": ..., "aws_secret_access_key": ...}` for requester-pays L1C
            (otherwise the environment's AWS credentials).

    Returns:
        ``store``, ``snapshot`` (None when nothing was to do), ``computed_time_steps``,
        ``unmatched`` (step -> L2A scenes without L1C), ``time_steps``.

    Example:
        >>> from stac2cube import get_cloud_layers, open_cube
        >>> get_cloud_layers("munich.icechunk", thresholds=[40, 60], shadows=True)  # doctest: +SKIP
        >>> open_cube("munich.icechunk", group="clouds").cloud_prob  # doctest: +SKIP
    """
    log = get_logger()
    cube = as_cube(store)
    state = cube.require()
    check_sentinel2(state.request, cube.name)
    settings = merged_settings(
        stored_settings(cube),
        thresholds=thresholds,
        resolution=cloud_resolution,
        shadows=shadows,
        method=cloud_method,
        catalog=catalog,
        collection=collection,
    )
    with aws_credentials(aws_credentials_block), cube.lock():
        state = cube.refresh()
        with cube.writing() as session:
            result = write_clouds_task(
                session,
                quote(state.request),
                quote(state.ledger),
                None,
                settings,
                cube=quote(cube),
                name=cube.name,
            )
            snapshot = None
            if result["computed"] or result.get("rewritten"):
                n = len(result["computed"])
                snapshot = cube.commit(
                    session,
                    f"clouds: {n} time steps ({settings.method}, thresholds "
                    f"{', '.join(f'{t:g}' for t in settings.thresholds)})",
                    record=state.request,
                    ledger=state.ledger,
                    version=__version__,
                    metadata={"cloud_layer_steps": n},
                )
    if snapshot is None:
        log.info("cloud layers of %s are up to date: nothing to do", cube.name)
    for t, ids in result["unmatched"].items():
        log.warning("time step %s has no L1C match for %s: its layers are NaN", t, ", ".join(ids))
    return {
        "store": cube.name,
        "snapshot": snapshot,
        "computed_time_steps": len(result["computed"]),
        "unmatched": result["unmatched"],
        "time_steps": len(state.ledger),
    }
