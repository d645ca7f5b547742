"""Radiometry decisions: how the digital numbers (DN) of one item become physical values.

Never trust one metadata field. For Sentinel-2 the evidence is the processing baseline (from
``s2:processing_baseline``, the product URI or the id; from the acquisition date as a last
resort), Earth Search's ``earthsearch:boa_offset_applied`` flag, and the ``raster:bands``
offset. The rules, in order:

1. baseline < 04.00: reflectance = DN / 10000 (rule ``s2-pre-04.00``). Any offset the item
   declares is ignored (no offset exists in these products) and a warning recorded.
2. baseline >= 04.00 and ``earthsearch:boa_offset_applied`` is true (Earth Search's legacy
   ``sentinel-2-l2a``): the -1000 was subtracted when the COGs were made, so reflectance =
   DN / 10000 (rule ``s2-offset-applied-in-cog``). Its ``raster:bands`` offset of -0.1
   contradicts the flag and is ignored, with a warning.
3. baseline >= 04.00 otherwise (Earth Search ``sentinel-2-c1-l2a``, Planetary Computer,
   terrabyte): reflectance = (DN - 1000) / 10000 (rule ``s2-offset-1000``).

DN 0 is nodata in every case. The decision and its warnings are recorded per time step in the
cube, so a user can audit what was applied.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

BASELINE_04_START = dt.date(2022, 1, 25)
S2_SCALE = 1e-4
S2_OFFSET = -0.1


@dataclass(frozen=True)
class Radiometry:
    """value = DN * scale + offset, for every DN != nodata.

    Attributes:
        rule: id of the rule that decided (see module docs).
        scale: physical units per DN.
        offset: physical offset added after scaling.
        baseline: processing baseline the decision was based on.
        warnings: contradictions found in the item's metadata.
    """

    rule: str
    scale: float
    offset: float
    baseline: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def offset_dn(self) -> int:
        """The offset in DN (``-1000`` for rule ``s2-offset-1000``)."""
        return round(self.offset / self.scale)


def _declared_offsets(item: dict[str, Any]) -> set[float]:
    offsets = set()
    for asset in item.get("assets", {}).values():
        for band in asset.get("raster:bands") or []:
            if "offset" in band and band.get("scale") == S2_SCALE:
                offsets.add(float(band["offset"]))
    return offsets


def sentinel2_radiometry(item: dict[str, Any]) -> Radiometry:
    """Decide the Sentinel-2 L1C/L2A radiometry of one item from all its evidence.

    >>> item = {"id": "x", "properties": {"datetime": "2024-08-25T17:39:09Z",
    ...         "s2:processing_baseline": "05.11"}, "assets": {}}
    >>> sentinel2_radiometry(item).rule
    's2-offset-1000'
    """
    from stac2cube.items import item_datetime, processing_baseline

    warnings: list[str] = []
    iid = item.get("id", "?")
    baseline = processing_baseline(item)
    if baseline is None:
        day = item_datetime(item).date()
        ge4 = day >= BASELINE_04_START
        warnings.append(
            f"{iid}: no processing baseline in metadata; assumed "
            f"{'>= 04.00' if ge4 else '< 04.00'} from acquisition date {day}"
        )
    else:
        try:
            ge4 = float(baseline) >= 4.0
        except ValueError:
            ge4 = item_datetime(item).date() >= BASELINE_04_START
            warnings.append(f"{iid}: unreadable processing baseline {baseline!r}; used the date")
    flag = item.get("properties", {}).get("earthsearch:boa_offset_applied")
    declared = _declared_offsets(item)

    if not ge4:
        if flag:
            warnings.append(
                f"{iid}: earthsearch:boa_offset_applied=true but baseline {baseline} predates "
                "04.00, which has no offset; ignored"
            )
        if any(o != 0 for o in declared):
            warnings.append(
                f"{iid}: raster:bands offset {sorted(declared)} ignored: baseline {baseline} "
                "predates 04.00"
            )
        return Radiometry("s2-pre-04.00", S2_SCALE, 0.0, baseline, tuple(warnings))
    if flag is True:
        if any(o != 0 for o in declared):
            warnings.append(
                f"{iid}: raster:bands offset {sorted(declared)} contradicts "
                "earthsearch:boa_offset_applied=true; followed the flag (offset already in DN)"
            )
        return Radiometry("s2-offset-applied-in-cog", S2_SCALE, 0.0, baseline, tuple(warnings))
    return Radiometry("s2-offset-1000", S2_SCALE, S2_OFFSET, baseline, tuple(warnings))


def decide_radiometry(mission: str, item: dict[str, Any]) -> Radiometry:
    """The radiometry of ``item`` for ``mission`` (dispatch on the mission's family)."""
    from stac2cube.missions import get_mission

    family = get_mission(mission).radiometry
    if family == "sentinel-2":
        return sentinel2_radiometry(item)
    raise NotImplementedError(f"no radiometry rule for mission family {family!r}")
