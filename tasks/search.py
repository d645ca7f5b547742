"""Search stage: the Prefect task around :func:`stac2cube.search.search_items`."""

from __future__ import annotations

from typing import Any

from prefect import task

from stac2cube.request import SearchRequest
from stac2cube.search import search_items


@task(name="search", retries=0)
def search_task(request: SearchRequest, allow_empty: bool = False) -> list[dict[str, Any]]:
    """Prefect task: :func:`~stac2cube.search.search_items`."""
    return search_items(request, allow_empty=allow_empty)
