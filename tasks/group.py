"""Group stage: the Prefect task around :func:`stac2cube.steps.group_items`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.steps import TimeStep, group_items


@task(name="group", cache_policy=NO_CACHE)
def group_task(items: list[dict[str, Any]], tile_mode: str = "mosaic") -> list[TimeStep]:
    """Prefect task: :func:`~stac2cube.steps.group_items` (de-duplicate, then group)."""
    return group_items(items, tile_mode)
