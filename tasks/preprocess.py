"""Preprocess stage: the thin task around :func:`stac2cube.dataset.build_dataset`.

Radiometry (:mod:`stac2cube.pixels`), masks (:mod:`stac2cube.masks`), the mosaic
(:mod:`stac2cube.mosaic`), indices, encodings (:mod:`stac2cube.encoding`) and the per-step
metadata (:mod:`stac2cube.scene_metadata`) are core modules.
"""

from __future__ import annotations

from typing import Any

import xarray as xr
from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.dataset import build_dataset
from stac2cube.radiometry import ProcessingOptions
from stac2cube.request import CubeRequest
from stac2cube.steps import TimeStep


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(
    request: CubeRequest,
    steps: list[TimeStep],
    raw: dict[str, xr.DataArray],
    options: ProcessingOptions | None = None,
    integers: bool = False,
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """Prefect task: :func:`~stac2cube.dataset.build_dataset` (lazy; ``integers``: the write
    path's stored integers where they equal the DN)."""
    return build_dataset(request, steps, raw, options=options, integers=integers)
