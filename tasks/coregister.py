"""Co-registration stage: the Prefect task around
:func:`stac2cube.coregistration.coregister_in_session`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube._log import get_logger
from stac2cube.coregistration import CoregRun, CoregSettings, coregister_in_session


@task(name="coregister", cache_policy=NO_CACHE)
def coregister_task(
    session, record: dict[str, Any], settings: CoregSettings, times: list[str] | None = None
) -> CoregRun:
    """Prefect task: :func:`~stac2cube.coregistration.coregister_in_session`, logged."""
    return coregister_in_session(session, record, settings, times, log=get_logger().info)
