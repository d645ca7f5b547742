"""Reading facts from STAC item dicts: acquisition time, tile, processing baseline, identity."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})(?:_|\b)")
_SEQUENCE_IN_ID = re.compile(r"_(\d+)_L[12][AC]$")
_TILE_IN_ID = re.compile(r"_T?(\d{2}[A-Z]{3})_")


def item_datetime(item: dict[str, Any]) -> dt.datetime:
    """Acquisition time (UTC) of an item: ``datetime``, else ``start_datetime``."""
    props = item["properties"]
    value = props.get("datetime") or props.get("start_datetime")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def processing_baseline(item: dict[str, Any]) -> str | None:
    """Sentinel-2 processing baseline (``"05.11"``) from the properties, product URI or id."""
    props = item.get("properties", {})
    pb = props.get("s2:processing_baseline") or props.get("processing:version")
    if pb:
        return str(pb)
    for text in (props.get("s2:product_uri"), props.get("s2:granule_id"), item.get("id")):
        m = _BASELINE_IN_NAME.search(str(text or ""))
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return None


def tile_id(item: dict[str, Any]) -> str:
    """Tile / path-row identifier of an item (``13TDE``), or its footprint centre as fallback."""
    props = item.get("properties", {})
    for key in ("s2:mgrs_tile", "grid:code", "landsat:wrs_path"):
        if props.get(key):
            value = str(props[key]).removeprefix("MGRS-")
            if key == "landsat:wrs_path":
                value += "/" + str(props.get("landsat:wrs_row", ""))
            return value
    if props.get("mgrs:utm_zone"):
        return f"{props['mgrs:utm_zone']}{props.get('mgrs:latitude_band', '')}{props.get('mgrs:grid_square', '')}"
    m = _TILE_IN_ID.search(item.get("id", ""))
    if m:
        return m.group(1)
    bbox = item.get("bbox") or [0, 0, 0, 0]
    return f"{(bbox[0] + bbox[2]) / 2:.3f},{(bbox[1] + bbox[3]) / 2:.3f}"


def item_footprint(item: Mapping[str, Any]):
    """The item's footprint as a valid shapely geometry (WGS 84): ``geometry``, else ``bbox``.

    None when the item has neither.

    >>> item_footprint({"bbox": [11, 48, 12, 49]}).bounds
    (11.0, 48.0, 12.0, 49.0)
    """
    from shapely import make_valid
    from shapely.geometry import box, shape

    geom = item.get("geometry")
    if geom:
        return make_valid(shape(geom))
    b = item.get("bbox")
    if b and len(b) in (4, 6):
        half = len(b) // 2
        return box(b[0], b[1], b[half], b[half + 1])
    return None


def _baseline_key(pb: str | None) -> tuple[int, int]:
    try:
        major, minor = (pb or "0.0").split(".")
        return (int(major), int(minor))
    except ValueError:
        return (0, 0)


def processing_rank(item: dict[str, Any]) -> tuple:
    """Sort key: higher means newer processing of the same acquisition."""
    props = item.get("properties", {})
    seq = props.get("s2:sequence")
    if seq is None:
        m = _SEQUENCE_IN_ID.search(item.get("id", ""))
        seq = m.group(1) if m else 0
    generated = str(
        props.get("s2:generation_time") or props.get("updated") or props.get("created") or ""
    )
    return (_baseline_key(processing_baseline(item)), generated, int(seq), item.get("id", ""))


def scene_key(item: dict[str, Any]) -> tuple[str, str, str]:
    """Identity of an acquisition: platform, tile and sensing time to the minute."""
    platform = str(item.get("properties", {}).get("platform", "")).lower()
    when = item_datetime(item).strftime("%Y-%m-%dT%H:%M")
    return (platform, tile_id(item), when)


_LANDSAT_CORRECTION_IN_ID = re.compile(r"_(L2SP|L2SR)_")


def landsat_correction(item: dict[str, Any]) -> tuple[str, str]:
    """Landsat Level-2 correction (``L2SP``: SR + ST, ``L2SR``: SR only) and where it came from.

    Evidence in order: ``landsat:correction``, the id (``LC09_L2SR_...``), the presence of a
    thermal asset (``lwir11``/``lwir``); ``L2SP`` when nothing tells.

    >>> landsat_correction({"id": "LC09_L2SR_084082_20250722_02_T1", "properties": {}})
    ('L2SR', 'id')
    """
    props = item.get("properties", {})
    value = str(props.get("landsat:correction") or "").upper()
    if value in ("L2SP", "L2SR"):
        return value, "landsat:correction"
    m = _LANDSAT_CORRECTION_IN_ID.search(str(item.get("id", "")))
    if m:
        return m.group(1), "id"
    assets = {k.lower() for k in item.get("assets", {})}
    if assets & {"lwir11", "lwir", "st_b10", "st_b6"}:
        return "L2SP", "thermal asset"
    if assets:
        return "L2SR", "absence of a thermal asset"
    return "L2SP", "default"
