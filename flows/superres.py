"""The super-resolution flow: SEN2SR 2.5 m bands for an existing Sentinel-2 cube."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.utilities.annotations import quote

from stac2cube._log import get_logger
from stac2cube.cube import Cube, as_cube
from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.superres import (
    LoadedModel,
    SuperresSettings,
    prepare,
    stored_settings_of,
)
from stac2cube.tasks.superres import superres_task


def superres_settings(
    cube: Cube,
    *,
    model_dir: str | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    overlap: int | None = None,
    nodata_dilation: int | None = None,
    model_block: str | None = None,
) -> SuperresSettings:
    """The stage's settings: the arguments given, else the block's, else those the cube's
    ``superres`` group was made with, else the defaults.

    Raises:
        InvalidRequestError: no model directory from any of them (one line).
    """
    given = {
        "model_dir": model_dir, "model": model, "device": device, "batch_size": batch_size,
        "precision": precision, "overlap": overlap, "nodata_dilation": nodata_dilation,
    }  # fmt: skip
    base: dict[str, Any] = {}
    stored = stored_settings_of(cube)
    if stored is not None:
        base.update(stored.to_attrs())
    if model_block:
        from stac2cube.blocks.superres import SuperresModel

        try:
            block = SuperresModel.load(model_block)
        except ValueError as exc:
            raise InvalidRequestError(
                f"no superres-model block named {model_block!r} ({exc})"
            ) from None
        base.update(block.settings())
    base.update({k: v for k, v in given.items() if v is not None})
    if not base.get("model_dir"):
        raise InvalidRequestError(
            f"super-resolution of {cube.name} needs --model-dir (a folder with the SEN2SR "
            "weights, see the README, Super-resolution) or a superres-model block"
        )
    return SuperresSettings(**base)


def check_superres(
    store: str | Path | Cube, **options: Any
) -> tuple[Cube, SuperresSettings, tuple[LoadedModel, Any]]:
    """Everything that can fail before writing: the cube, the settings, the device, the model.

    Raises:
        StoreError: no cube at ``store``.
        InvalidRequestError: a non-Sentinel-2 or non-10 m cube, missing bands, a missing or
            incomplete model folder, ``device="cuda"`` without a GPU.
    """
    cube = as_cube(store)
    state = cube.require()
    settings = superres_settings(cube, **options)
    ds = cube.open_dataset()
    return cube, settings, prepare(state.request, ds.data_vars, settings, cube.name)


@flow(name="super-resolution", validate_parameters=False)
def super_resolution(
    store: str,
    model_dir: str | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    overlap: int | None = None,
    nodata_dilation: int | None = None,
    model_block: str | None = None,
) -> dict[str, Any]:
    """Super-resolve the time steps of a Sentinel-2 cube with SEN2SR into its group ``superres``.

    The output bands (the input band names) lie on a 2.5 m grid nested in the cube's 10 m grid
    (10 m for ``rswir-x2``), on the cube's time axis, stored as integers with a fixed scale;
    ``open_cube(store, group="superres")`` reads them. Only steps without output, or whose
    scenes or weights changed, are computed; one commit. Once a cube has the group, every
    build or update of it keeps the group current with the settings stored in it.

    Args:
        store: Path of an existing Sentinel-2 cube (10 m).
        model_dir: Folder of the SEN2SR weights in the mlstac layout (downloaded beforehand;
            see the README). Default: the block's, or the one the group was made with.
        model: rgbn (B04 B03 B02 B08 to 2.5 m, the default), full (10 bands to 2.5 m) or
            rswir-x2 (B05 B06 B07 B8A B11 B12 to 10 m).
        device: auto (CUDA when present), cpu or cuda.
        batch_size: 128 px patches per forward pass (default: 4 on CPU, from free GPU memory).
        precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.
        overlap: Overlap of neighbouring patches in 10 m pixels (default 32).
        nodata_dilation: 10 m pixels the nodata mask grows by in the output (default 2).
        model_block: Name of a superres-model block with the model folder and device.

    Returns:
        store, snapshot (None when nothing changed), steps computed and kept, patches run.

    Example:
        >>> from stac2cube import super_resolution, open_cube
        >>> super_resolution(store="munich.icechunk", model_dir="/data/sen2sr")  # doctest: +SKIP
        >>> open_cube("munich.icechunk", group="superres").B04  # doctest: +SKIP
    """
    options = {
        "model_dir": model_dir, "model": model, "device": device, "batch_size": batch_size,
        "precision": precision, "overlap": overlap, "nodata_dilation": nodata_dilation,
        "model_block": model_block,
    }  # fmt: skip
    cube, settings, prepared = check_superres(store, **options)
    log = get_logger()
    snapshot = None
    with cube.lock():
        state = cube.refresh()
        if state is None:
            raise StoreError(f"no cube at {cube.name}")
        with cube.writing() as session:
            summary = superres_task(
                session, quote(cube), None, quote(settings), prepared=quote(prepared)
            )
            if session.has_uncommitted_changes:
                v = prepared[0].variant
                message = (
                    f"superres ({v.name}): {summary['computed']} time steps computed, "
                    f"{summary['kept']} kept"
                )
                snapshot = cube.commit(
                    session,
                    message,
                    record=state.request,
                    ledger=state.ledger,
                    version=state.version,
                    metadata={"superres_computed": summary["computed"]},
                )
    log.info(
        "super-resolution of %s: %d computed, %d kept (%s)",
        cube.name, summary["computed"], summary["kept"], snapshot or "nothing to commit",
    )  # fmt: skip
    return {"store": cube.name, "snapshot": snapshot, **summary}
