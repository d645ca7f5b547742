"""Super-resolution stage: the thin task around :func:`stac2cube.superres.write_superres`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.superres import write_superres


@task(name="super-resolution", cache_policy=NO_CACHE)
def superres_task(session, cube, times, settings, **kwargs: Any) -> dict[str, Any]:
    """Bring the cube's ``superres`` group up to date in ``session`` (see ``write_superres``)."""
    return write_superres(session, cube, times, settings, **kwargs)
