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


_LANDSAT_TIER = {"RT": 0, "T2": 1, "T1": 1}
_S1_ORBIT = {"PREORB": 0, "RESORB": 1, "POEORB": 2}
_GENERATION_IN_URI = re.compile(r"_(\d{8}T\d{6})(?:\.SAFE)?$")


def generation_time(item: dict[str, Any]) -> str:
    """When the item's data were produced: ``s2:generation_time``, ``landsat:product_generated``,
    else the discriminator of ``s2:product_uri``; ``""`` when unknown.

    Catalog bookkeeping (``updated``, ``created``) is not a production time: a metadata touch in
    the catalog must not look like a reprocessing.

    >>> generation_time({"properties": {"updated": "2025-01-01T00:00:00Z"}})
    ''
    >>> generation_time({"properties": {"s2:product_uri":
    ...     "S2A_MSIL2A_20240422T173911_N0510_R098_T13TDE_20240423T004950.SAFE"}})
    '2024-04-23T00:49:50Z'
    """
    props = item.get("properties", {})
    value = props.get("s2:generation_time") or props.get("landsat:product_generated")
    if value:
        return str(value)
    m = _GENERATION_IN_URI.search(str(props.get("s2:product_uri") or ""))
    if m:
        return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    return ""


def processing_rank(item: dict[str, Any]) -> tuple:
    """Sort key: higher means newer processing of the same acquisition.

    Processing baseline, then :func:`generation_time`, then a refinement level (Landsat
    real-time ``RT`` < final ``T1``/``T2``; Sentinel-1 orbit ``PREORB`` < ``RESORB`` <
    ``POEORB``), then the ``_0``/``_1`` sequence number, then the id.
    """
    props = item.get("properties", {})
    seq = props.get("s2:sequence")
    if seq is None:
        m = _SEQUENCE_IN_ID.search(item.get("id", ""))
        seq = m.group(1) if m else 0
    refinement = max(
        _LANDSAT_TIER.get(str(props.get("landsat:collection_category", "")).upper(), 0),
        _S1_ORBIT.get(str(props.get("s1:orbit_source", "")).upper(), 0),
    )
    return (
        _baseline_key(processing_baseline(item)),
        generation_time(item),
        refinement,
        int(seq),
        item.get("id", ""),
    )


#: two items more than this apart in sensing time are never the same acquisition
SAME_PASS_SECONDS = 600
#: footprints overlapping at least this much (intersection over union) hold the same pixels
SAME_FOOTPRINT_IOU = 0.9
_DATATAKE_START = re.compile(r"^G?S2([A-D])_(?:MSIL[12][AC]_)?(\d{8}T\d{6})_")
_DATASTRIP_SENSING = re.compile(r"_S(\d{8}T\d{6})(?:_|$)")


def acquisition(item: dict[str, Any]) -> dict[str, Any]:
    """What identifies the acquisition behind an item, as a JSON-ready record.

    ``platform`` and ``tile``; ``datatake``: the pass (Sentinel-2 datatake sensing start from
    ``s2:datatake_id`` or ``s2:product_uri``, Landsat ``landsat:scene_id`` without station and
    version, Sentinel-1 ``s1:datatake_id``), None when the item does not say; ``datastrip``:
    the sensing start of the Sentinel-2 datastrip (the same over reprocessings), or None;
    ``datetime`` and ``bbox`` (the footprint).

    >>> a = acquisition({"id": "x", "bbox": [0, 0, 1, 1], "properties": {
    ...     "datetime": "2024-04-22T17:53:02Z", "platform": "sentinel-2a", "grid:code": "MGRS-13TDE",
    ...     "s2:datatake_id": "GS2A_20240422T173911_046141_N05.10", "s2:datastrip_id":
    ...     "S2A_OPER_MSI_L2A_DS_2APS_20240423T004950_S20240422T174753_N05.10"}})
    >>> a["tile"], a["datatake"], a["datastrip"]
    ('13TDE', 'S2A/20240422T173911', '20240422T174753')
    """
    props = item.get("properties", {})
    platform = str(props.get("platform", "")).lower()
    datatake = None
    for text in (props.get("s2:datatake_id"), props.get("s2:product_uri")):
        m = _DATATAKE_START.search(str(text or ""))
        if m:
            datatake = f"S2{m.group(1)}/{m.group(2)}"
            break
    if datatake is None and props.get("landsat:scene_id"):
        datatake = str(props["landsat:scene_id"])[:16]
    if datatake is None and props.get("s1:datatake_id"):
        datatake = f"{platform}/{props['s1:datatake_id']}"
    m = _DATASTRIP_SENSING.search(str(props.get("s2:datastrip_id") or ""))
    return {
        "platform": platform,
        "tile": tile_id(item),
        "datatake": datatake,
        "datastrip": m.group(1) if m else None,
        "datetime": item_datetime(item).isoformat(),
        "bbox": [float(v) for v in item["bbox"]] if item.get("bbox") else None,
    }


def same_acquisition(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two :func:`acquisition` records are one acquisition (processed or served twice).

    Same platform and tile, sensing times at most :data:`SAME_PASS_SECONDS` apart, the same
    datatake where both name one; then the same datastrip where both name one, or footprints
    overlapping by at least :data:`SAME_FOOTPRINT_IOU`. Partial granules of one tile from two
    datastrips (complementary footprints) are different acquisitions.
    """
    if (a["platform"], a["tile"]) != (b["platform"], b["tile"]):
        return False
    apart = dt.datetime.fromisoformat(a["datetime"]) - dt.datetime.fromisoformat(b["datetime"])
    if abs(apart.total_seconds()) > SAME_PASS_SECONDS:
        return False
    if a["datatake"] and b["datatake"] and a["datatake"] != b["datatake"]:
        return False
    if a["datastrip"] and a["datastrip"] == b["datastrip"]:
        return True
    return footprint_overlap(a["bbox"], b["bbox"]) >= SAME_FOOTPRINT_IOU


def footprint_overlap(a: list[float] | None, b: list[float] | None) -> float:
    """Intersection over union of two ``[west, south, east, north]`` boxes; 1.0 when either is
    unknown or crosses the antimeridian (nothing tells them apart).

    >>> footprint_overlap([0, 0, 2, 1], [1, 0, 3, 1])
    0.3333333333333333
    """
    if not a or not b or a[0] > a[2] or b[0] > b[2]:
        return 1.0
    w, s, e, n = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, e - w) * max(0.0, n - s)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


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
