"""Planning: compare the catalog's time steps with the cube's ledger.

The ledger, not Prefect state, decides what is new:

* a solar day the cube lacks is **added**;
* a solar day the cube has is **replaced** when the catalog now offers a scene for it that the
  ledger does not list (a late tile, a reprocessed granule under a new id), or a listed scene in
  a newer processing (higher baseline or later generation time under the same id; a catalog's
  ``updated``/``created`` touch is no reprocessing);
* otherwise it is **unchanged** (running the same update twice changes nothing);
* a scene that disappeared from the catalog never deletes data: a day that would be replaced
  while one of its recorded scenes is neither in the catalog nor superseded there by a newer
  processing of the same acquisition is **kept** as it is (``Plan.kept`` names the scenes);
* every step written gets a timestamp no other step of the cube has (moved on by whole seconds
  where it would collide), so time stays a unique index over any sequence of runs;
* a step whose ledger entry lists broken assets (``errors_as_nodata``) is **replaced** when one
  of them reads again (``refill``, probed by :func:`stac2cube.broken.refill_keys`), else left
  as it is;
* a step the coverage or scene-cloud filters dropped before is recorded (``rejected`` in the
  cube's request record) and not read again until the catalog offers a new or newer scene
  for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stac2cube._log import get_logger
from stac2cube.items import acquisition, processing_rank, same_acquisition
from stac2cube.steps import TimeStep


def processing_stamp(item: dict[str, Any]) -> list:
    """JSON-ready (baseline, generation time) of an item, comparable across runs."""
    baseline, generated, *_ = processing_rank(item)
    return [list(baseline), generated]


def stamp_ledger(entries: Sequence[dict[str, Any]], steps: Sequence[TimeStep]) -> None:
    """Record each item's processing stamp and acquisition in its ledger entry (in place)."""
    for entry, step in zip(entries, steps, strict=True):
        if step.tile is not None:
            entry["tile"] = step.tile
        for record, item in zip(entry["items"], step.items, strict=True):
            record["processing_stamp"] = processing_stamp(item)
            record["acquisition"] = acquisition(item)


@dataclass(frozen=True)
class Plan:
    """What a run will write."""

    add: tuple[TimeStep, ...] = ()
    replace: tuple[TimeStep, ...] = ()
    unchanged: int = 0
    replaced_times: dict[str, str] = field(default_factory=dict)
    #: steps left as they are although the catalog has news for them: key -> vanished item ids
    kept: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
    refill: Collection[str] = (),
) -> Plan:
    """Split ``steps`` into additions, replacements and unchanged steps against ``ledger``.

    A replaced step takes its own timestamp (``replaced_times`` maps new -> old time). A step
    the coverage or cloud filters ``rejected`` before (see :func:`rejected_entry`) counts as
    unchanged until the catalog offers a new or newer scene for it. A step whose replacement
    would drop a scene that vanished from the catalog is kept (:attr:`Plan.kept`). A step
    whose key is in ``refill`` and whose entry lists broken assets is replaced. The steps to
    write get timestamps unique in the cube (:func:`unique_times`).
    """
    by_key = {ledger_key(entry): entry for entry in ledger}
    dropped = {entry["key"]: entry for entry in rejected}
    add, renew, unchanged, kept = [], [], 0, {}
    for step in steps:
        entry = by_key.get(step.key)
        if step.key in dropped and not _has_newer(step, dropped[step.key]):
            unchanged += 1  # filtered out before, in this very version
        elif entry is None:
            add.append(step)
        elif not _has_newer(step, entry) and not (
            step.key in refill and entry.get("broken_assets")
        ):
            unchanged += 1
        elif vanished := vanished_scenes(step, entry):
            kept[step.key] = vanished
            unchanged += 1
        else:
            renew.append((step, entry))
    taken = {entry["time"] for entry in ledger} - {entry["time"] for _, entry in renew}
    timed = unique_times([*add, *(step for step, _ in renew)], taken)
    added, renewed = timed[: len(add)], timed[len(add) :]
    replaced = {
        step.time.isoformat(): entry["time"]
        for step, (_, entry) in zip(renewed, renew, strict=True)
    }
    return Plan(tuple(added), tuple(renewed), unchanged, replaced, kept)


def unique_times(steps: Sequence[TimeStep], taken: set[str]) -> list[TimeStep]:
    """``steps`` with each time moved on by whole seconds past the ``taken`` ISO times and
    the times given to the steps before it (in time order), so no two steps share one.

    Catalogs that stamp every tile of a datastrip with one time give ``tile_mode="separate"``
    steps equal times; a late tile must not take the time of a step already in the cube.
    """
    taken = set(taken)
    out: dict[int, TimeStep] = {}
    for k in sorted(range(len(steps)), key=lambda k: (steps[k].time, steps[k].key)):
        time = steps[k].time
        while time.isoformat() in taken:
            time += dt.timedelta(seconds=1)
        taken.add(time.isoformat())
        out[k] = replace(steps[k], time=time) if time != steps[k].time else steps[k]
    return [out[k] for k in range(len(steps))]


def _has_newer(step: TimeStep, entry: dict[str, Any]) -> bool:
    """Whether ``step`` has a scene ``entry`` does not record, or a newer processing of one.

    A scene is recorded under its id, or (ledgers with acquisition records) as another item of
    the same acquisition: a catalog that renames an item without reprocessing it offers nothing.
    """
    for item in step.items:
        acq = acquisition(item)
        stamps = [r.get("processing_stamp") for r in entry["items"] if _recorded(r, item, acq)]
        if all(s is not None and processing_stamp(item) > s for s in stamps):
            return True  # (also when nothing records it)
    return False


def vanished_scenes(step: TimeStep, entry: dict[str, Any]) -> tuple[str, ...]:
    """Ids of the scenes ``entry`` records that ``step`` neither holds nor supersedes (holds
    another processing of the same acquisition; ledgers without acquisition records: by id)."""
    held = [(item, acquisition(item)) for item in step.items]
    return tuple(
        record["id"]
        for record in entry["items"]
        if not any(_recorded(record, item, acq) for item, acq in held)
    )


def _recorded(record: dict[str, Any], item: dict[str, Any], acq: dict[str, Any]) -> bool:
    """Whether ledger ``record`` is ``item`` (by id) or its acquisition ``acq``."""
    return record["id"] == item["id"] or (
        "acquisition" in record and same_acquisition(record["acquisition"], acq)
    )


def rejected_entry(step: TimeStep) -> dict[str, Any]:
    """JSON-ready record of a step the filters dropped: its key and its scenes' stamps."""
    return {
        "key": step.key,
        "items": [{"id": i["id"], "processing_stamp": processing_stamp(i)} for i in step.items],
    }


def log_plan(plan: Plan) -> None:
    """Log what ``plan`` will write, and warn of the steps it keeps as they are."""
    log = get_logger()
    log.info(
        "plan: %d time steps to add, %d to replace (reprocessed or new scenes), %d unchanged",
        len(plan.add),
        len(plan.replace),
        plan.unchanged,
    )
    for key, ids in plan.kept.items():
        log.warning(
            "time step %s kept as it is: its scene(s) %s left the catalog, and rebuilding it "
            "from the catalog would delete their pixels",
            key,
            ", ".join(ids),
        )
