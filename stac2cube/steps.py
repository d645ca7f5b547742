"""Time steps: drop duplicate granules and gather the scenes of one solar day into a time step.

Duplicates are the same acquisition served more than once (reprocessed baselines, ``_0``/``_1``
sequence numbers, different ground stations), told apart by the identifiers the items carry (see
:func:`stac2cube.items.same_acquisition`): partial granules of one tile from two datastrips are
both kept. Of each duplicate set the newest processing (baseline, then generation time, then
refinement, then sequence) is kept.

A *time step* is one solar day: the date of local solar time (UTC + longitude / 15 h) at the
scene centre, so the tiles of one overpass land in one step even near midnight UTC. Its
timestamp is the earliest acquisition time of its scenes, in UTC, floored to the second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from stac2cube._log import get_logger
from stac2cube.items import (
    SAME_PASS_SECONDS,
    acquisition,
    item_datetime,
    processing_rank,
    same_acquisition,
    tile_id,
)


def deduplicate(items: Iterable[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Keep the newest processing of each acquisition (:func:`duplicate_sets`).

    Returns:
        ``(kept, dropped)``, ``kept`` in (datetime, id) order.
    """
    kept, dropped = [], []
    for members in duplicate_sets(items):
        best = max(members, key=processing_rank)
        kept.append(best)
        dropped += [i for i in members if i is not best]
    kept.sort(key=lambda i: (item_datetime(i), i["id"]))
    return kept, dropped


def duplicate_sets(items: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``items`` partitioned into sets of one acquisition each (linked by
    :func:`~stac2cube.items.same_acquisition`)."""
    items = sorted(items, key=item_datetime)
    records = [acquisition(i) for i in items]
    times = [item_datetime(i) for i in items]
    owner = list(range(len(items)))

    def root(k: int) -> int:
        while owner[k] != k:
            k = owner[k]
        return k

    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            if (times[b] - times[a]).total_seconds() > SAME_PASS_SECONDS:
                break  # sorted by time: no later item can match
            if same_acquisition(records[a], records[b]):
                owner[root(b)] = root(a)
    sets: dict[int, list[dict[str, Any]]] = {}
    for k, item in enumerate(items):
        sets.setdefault(root(k), []).append(item)
    return list(sets.values())


def solar_day(item: dict[str, Any]) -> dt.date:
    """Date of local solar time at the item's centre (UTC + longitude / 15 hours)."""
    bbox = item.get("bbox")
    lon = (bbox[0] + bbox[2]) / 2 if bbox else 0.0
    return (item_datetime(item) + dt.timedelta(hours=lon / 15.0)).date()


@dataclass(frozen=True)
class TimeStep:
    """The scenes of one solar day, in the order they are mosaicked (first valid pixel wins)."""

    time: dt.datetime
    solar_day: dt.date
    items: tuple[dict[str, Any], ...] = field(repr=False)
    #: the tile of every scene of the step, when tiles are kept apart (``tile_mode="separate"``)
    tile: str | None = None

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(i["id"] for i in self.items)

    @property
    def key(self) -> str:
        """What identifies the step across runs: its solar day, and its tile when kept apart."""
        day = self.solar_day.isoformat()
        return day if self.tile is None else f"{day}/{self.tile}"


def group_by_solar_day(items: Iterable[dict[str, Any]]) -> list[TimeStep]:
    """One :class:`TimeStep` per solar day, sorted by time.

    Within a step, scenes are ordered by acquisition time then id; where they overlap, the
    first scene with a valid pixel provides it.
    """
    days: dict[dt.date, list[dict]] = {}
    for item in items:
        days.setdefault(solar_day(item), []).append(item)
    steps = []
    for day, members in days.items():
        members.sort(key=lambda i: (item_datetime(i), i["id"]))
        t0 = min(item_datetime(i) for i in members).replace(microsecond=0, tzinfo=None)
        steps.append(TimeStep(t0, day, tuple(members)))
    return sorted(steps, key=lambda s: s.time)


def group_by_solar_day_and_tile(items: Iterable[dict[str, Any]]) -> list[TimeStep]:
    """One :class:`TimeStep` per solar day and tile (``tile_mode="separate"``), sorted by time.

    Each step's timestamp is its tile's acquisition time. Catalogs that stamp every tile of a
    datastrip with the datastrip's start (Planetary Computer) would give several steps the same
    timestamp; those are spread one second apart in tile order, so time stays a unique index
    (the exact acquisition times are kept in the ``datetimes`` coordinate). Against the steps
    already in a cube the plan does the same (:func:`stac2cube.plan.unique_times`).
    """
    groups: dict[tuple[dt.date, str], list[dict]] = {}
    for item in items:
        groups.setdefault((solar_day(item), tile_id(item)), []).append(item)
    steps = []
    for (day, tile), members in groups.items():
        members.sort(key=lambda i: (item_datetime(i), i["id"]))
        t0 = min(item_datetime(i) for i in members).replace(microsecond=0, tzinfo=None)
        steps.append(TimeStep(t0, day, tuple(members), tile=tile))
    steps.sort(key=lambda s: (s.time, s.tile))
    spread: list[TimeStep] = []
    for step in steps:
        if spread and step.time <= spread[-1].time:
            step = replace(step, time=spread[-1].time + dt.timedelta(seconds=1))
        spread.append(step)
    return spread


def group_steps(items: Iterable[dict[str, Any]], tile_mode: str = "mosaic") -> list[TimeStep]:
    """Time steps of de-duplicated ``items``: per solar day (``mosaic``, tiles mosaicked) or
    per solar day and tile (``separate``)."""
    if tile_mode == "separate":
        return group_by_solar_day_and_tile(items)
    return group_by_solar_day(items)


def group_items(items: list[dict[str, Any]], tile_mode: str = "mosaic") -> list[TimeStep]:
    """:func:`deduplicate` then :func:`group_steps`, with a log line of the counts."""
    kept, dropped = deduplicate(items)
    steps = group_steps(kept, tile_mode)
    get_logger().info(
        "%d scenes -> %d after de-duplication (%d older processings dropped) -> %d time steps",
        len(items),
        len(kept),
        len(dropped),
        len(steps),
    )
    return steps
