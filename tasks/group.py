"""Group stage: drop duplicate granules and gather the scenes of one solar day into a time step.

Duplicates are the same acquisition served more than once (reprocessed baselines, ``_0``/``_1``
sequence numbers, different ground stations): they share platform, tile and sensing time (to the
minute). Of each duplicate set the newest processing (baseline, then generation time, then
sequence) is kept.

A *time step* is one solar day: the date of local solar time (UTC + longitude / 15 h) at the
scene centre, so the tiles of one overpass land in one step even near midnight UTC. Its
timestamp is the earliest acquisition time of its scenes, in UTC, floored to the second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.items import item_datetime, processing_rank, scene_key, tile_id


def deduplicate(items: Iterable[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Keep the newest processing of each acquisition.

    Returns:
        ``(kept, dropped)``, ``kept`` in (datetime, id) order.
    """
    best: dict[tuple, dict] = {}
    dropped: list[dict] = []
    for item in items:
        key = scene_key(item)
        other = best.get(key)
        if other is None:
            best[key] = item
        elif processing_rank(item) > processing_rank(other):
            dropped.append(other)
            best[key] = item
        else:
            dropped.append(item)
    kept = sorted(best.values(), key=lambda i: (item_datetime(i), i["id"]))
    return kept, dropped


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
    (the exact acquisition times are kept in the ``datetimes`` coordinate).
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


@task(name="group", cache_policy=NO_CACHE)
def group_task(items: list[dict[str, Any]], tile_mode: str = "mosaic") -> list[TimeStep]:
    """Prefect task: :func:`deduplicate` then :func:`group_steps`."""
    from prefect import get_run_logger

    kept, dropped = deduplicate(items)
    steps = group_steps(kept, tile_mode)
    get_run_logger().info(
        "%d scenes -> %d after de-duplication (%d older processings dropped) -> %d time steps",
        len(items),
        len(kept),
        len(dropped),
        len(steps),
    )
    return steps
