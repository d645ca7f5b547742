"""Load stage: a thin task around :func:`stac2cube.load.load_raw`."""

from __future__ import annotations

from typing import Any

import xarray as xr
from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.load import load_raw
from stac2cube.radiometry import ProcessingOptions
from stac2cube.request import CubeRequest
from stac2cube.signing import Signer


@task(name="load", cache_policy=NO_CACHE)
def load_task(
    request: CubeRequest,
    items: list[dict[str, Any]],
    options: ProcessingOptions | None = None,
    signer: Signer | None = None,
) -> dict[str, xr.DataArray]:
    """Prefect task: :func:`~stac2cube.load.load_raw` (lazy; pixels are read when the cube is
    written)."""
    return load_raw(request, items, options=options, signer=signer)
