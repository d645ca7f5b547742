"""Plan stage: compare the catalog's time steps with the cube's ledger.

The ledger, not Prefect state, decides what is new:

* a solar day the cube lacks is **added**;
* a solar day the cube has is **replaced** when the catalog now offers a scene for it that the
  ledger does not list (a late tile, a reprocessed granule under a new id), or a listed scene in
  a newer processing (higher baseline or later generation time under the same id);
* otherwise it is **unchanged** (running the same update twice changes nothing). A scene that
  disappeared from the catalog never deletes data;
* a step the coverage or scene-cloud filters dropped before is recorded (``rejected`` in the
  cube's request record) and not read again until the catalog offers a new or newer scene
  for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.items import processing_rank
from stac2cube.tasks.group import TimeStep


def processing_stamp(item: dict[str, Any]) -> list:
    """JSON-ready (baseline, generation time) of an item, comparable across runs."""
    baseline, generated, *_ = processing_rank(item)
    return [list(baseline), generated]


def stamp_ledger(entries: Sequence[dict[str, Any]], steps: Sequence[TimeStep]) -> None:
    """Record each item's processing stamp in its ledger entry (in place)."""
    for entry, step in zip(entries, steps, strict=True):
        if step.tile is not None:
            entry["tile"] = step.tile
        for record, item in zip(entry["items"], step.items, strict=True):
            record["processing_stamp"] = processing_stamp(item)


@dataclass(frozen=True)
class Plan:
    """What a run will write."""

    add: tuple[TimeStep, ...] = ()
    replace: tuple[TimeStep, ...] = ()
    unchanged: int = 0
    replaced_times: dict[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> list[TimeStep]:
        """Every step to load, sorted by time."""
        return sorted((*self.add, *self.replace), key=lambda s: s.time)

    @property
    def empty(self) -> bool:
        return not self.add and not self.replace


def ledger_key(entry: dict[str, Any]) -> str:
    """:attr:`TimeStep.key` of a ledger entry."""
    tile = entry.get("tile")
    return entry["solar_day"] if tile is None else f"{entry['solar_day']}/{tile}"


def plan_changes(
    steps: Sequence[TimeStep],
    ledger: Sequence[dict[str, Any]],
    rejected: Sequence[dict[str, Any]] = (),
) -> Plan:
    """Split ``steps`` into additions, replacements and unchanged steps against ``ledger``.

    A replaced step keeps the cube's timestamp for that solar day only if it is unchanged; the
    new step's own timestamp is used (``replaced_times`` maps new -> old time). A step the
    coverage or cloud filters ``rejected`` before (see :func:`rejected_entry`) counts as
    unchanged until the catalog offers a new or newer scene for it.
    """
    by_key = {ledger_key(entry): entry for entry in ledger}
    dropped = {entry["key"]: entry for entry in rejected}
    add, replace, unchanged, replaced = [], [], 0, {}
    for step in steps:
        entry = by_key.get(step.key)
        if step.key in dropped and not _has_newer(step, dropped[step.key]):
            unchanged += 1  # filtered out before, in this very version
        elif entry is None:
            add.append(step)
        elif _has_newer(step, entry):
            replace.append(step)
            replaced[step.time.isoformat()] = entry["time"]
        else:
            unchanged += 1
    return Plan(tuple(add), tuple(replace), unchanged, replaced)


def _has_newer(step: TimeStep, entry: dict[str, Any]) -> bool:
    """Whether ``step`` has a scene ``entry`` does not list, or a newer processing of one."""
    known = {i["id"]: i.get("processing_stamp") for i in entry["items"]}
    return any(
        item["id"] not in known
        or (known[item["id"]] is not None and processing_stamp(item) > known[item["id"]])
        for item in step.items
    )


def rejected_entry(step: TimeStep) -> dict[str, Any]:
    """JSON-ready record of a step the filters dropped: its key and its scenes' stamps."""
    return {
        "key": step.key,
        "items": [{"id": i["id"], "processing_stamp": processing_stamp(i)} for i in step.items],
    }


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(
    steps: list[TimeStep], ledger: list[dict[str, Any]], rejected: list[dict[str, Any]] = ()
) -> Plan:
    """Prefect task: :func:`plan_changes`, logged."""
    from stac2cube._log import get_logger

    plan = plan_changes(steps, ledger, rejected)
    get_logger().info(
        "plan: %d time steps to add, %d to replace (reprocessed or new scenes), %d unchanged",
        len(plan.add),
        len(plan.replace),
        plan.unchanged,
    )
    return plan
