"""Plan stage: the Prefect task around :func:`stac2cube.plan.plan_changes`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.plan import Plan, log_plan, plan_changes
from stac2cube.steps import TimeStep


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(
    steps: list[TimeStep],
    ledger: list[dict[str, Any]],
    rejected: list[dict[str, Any]] = (),
    refill: set[str] = frozenset(),
) -> Plan:
    """Prefect task: :func:`~stac2cube.plan.plan_changes`, logged (:func:`~stac2cube.plan.log_plan`)."""
    plan = plan_changes(steps, ledger, rejected, refill)
    log_plan(plan)
    return plan
