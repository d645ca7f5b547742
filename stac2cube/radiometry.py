"""Radiometry decisions: how the digital numbers (DN) of one item become physical values.

Every item gets a :class:`Radiometry`: a rule id, a scale and offset per band, the evidence it was
based on and any contradiction found in its metadata. The decision is recorded per time step in
the cube (``radiometry_rule`` coordinate, ``stac2cube:ledger`` attribute), so a user can audit
what was applied. Never trust one metadata field.

Sentinel-2 L2A and L1C (rules ``s2-*``)
    The evidence is the processing baseline (from ``s2:processing_baseline``, the product URI or
    the id; from the acquisition date as a last resort), the collection, Earth Search's
    ``earthsearch:boa_offset_applied`` flag (earlier ``sentinel:boa_offset_applied``), the
    acquisition date and the ``raster:bands`` offset. In order:

    1. baseline < 04.00: reflectance = DN / 10000 (rule ``s2-pre-04.00``). Any offset the item
       declares is ignored (no offset exists in these products) and a warning recorded.
    2. baseline >= 04.00, an Earth Search legacy ``sentinel-2-l2a`` item (it carries the flag or
       a legacy id such as ``S2B_33UXP_20250302_0_L2A``; never a Collection-1 collection):
       Element84's pipeline has subtracted the -1000 from every scene acquired since
       :data:`ES_OFFSET_REMOVED_SINCE`, and the flag is known to be false on some of them
       (Element84/earth-search issues 66 and 71, cirrus-earth-search issue 33). So:

       * flag true: reflectance = DN / 10000 (rule ``s2-offset-applied-in-cog``);
       * flag false or missing, acquired since :data:`ES_OFFSET_REMOVED_SINCE`: the date wins,
         reflectance = DN / 10000 (rule ``s2-offset-applied-in-cog-despite-flag``), and the
         contradiction is recorded;
       * flag false, acquired earlier (made before the pipeline removed the offset): rule 3
         (a missing flag is recorded).

       The ``raster:bands`` offset (-0.1 on every legacy item, whatever the pixels hold) is
       ignored, with a warning.
    3. baseline >= 04.00 otherwise (Earth Search ``sentinel-2-c1-l2a`` and ``sentinel-2-l1c``,
       Planetary Computer, terrabyte): reflectance = (DN - 1000) / 10000 (rule
       ``s2-offset-1000``; L1C: ``RADIO_ADD_OFFSET``, same value). A flag on a Collection-1
       item contradicts its collection and is ignored, with a warning.

    DN 0 is nodata and DN 65535 (ESA's saturated value) is nodata too, in every case.

Landsat Collection 2 Level-2 (rules ``landsat-c2-l2sp`` / ``landsat-c2-l2sr``)
    Surface reflectance = DN * 2.75e-05 - 0.2; surface temperature (``lwir11``) = DN *
    0.00341802 + 149.0 kelvin; DN 0 is nodata. These are USGS's fixed Collection 2 factors:
    a ``raster:bands`` scale/offset that differs is warned about and ignored. ``L2SP`` items
    carry SR and ST; ``L2SR`` items (``landsat:correction``, else the id) have no thermal band,
    so ``lwir11`` is nodata for them (recorded). ``qa_pixel`` keeps its bit flags (nodata = the
    fill bit, 1).

Sentinel-1 RTC / NRB (rules ``s1-gamma0-db`` / ``s1-gamma0-linear``)
    Assets hold linear terrain-flattened gamma0 (float32). By default the cube holds
    10 * log10(gamma0) dB; ``sar_scale="linear"`` keeps linear values. Nodata: the asset's
    ``raster:bands`` nodata (Planetary Computer: -32768), NaN, and for dB also gamma0 <= 0
    (no logarithm). A GRD item (integer amplitude, not terrain-corrected) is refused.

Copernicus DEM GLO-30 (rule ``cop-dem``)
    Heights in metres, as stored (float32); no nodata is declared, pixels outside every tile are
    NaN.

Masking (opt-in, :class:`ProcessingOptions`): ``mask_clouds`` sets reflectance (and Landsat
temperature) to nodata per scene *before* the scenes of a day are mosaicked, so a clear pixel of
another scene of the same day fills it: Sentinel-2 L2A by SCL classes (default
:data:`DEFAULT_SCL_MASK`), Landsat by QA_PIXEL flags (default :data:`DEFAULT_QA_MASK`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stac2cube.errors import InvalidRequestError

BASELINE_04_START = dt.date(2022, 1, 25)
#: Earth Search's legacy pipeline subtracts the baseline offset from every scene acquired since
#: (new scenes from late February 2022: cirrus-earth-search issues 21, 25, 26).
ES_OFFSET_REMOVED_SINCE = dt.date(2022, 3, 1)
#: Earth Search's flag that the offset was removed from the COGs (its earlier name second).
BOA_FLAGS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
#: Ids of Earth Search's legacy ``sentinel-2-l2a`` items: ``S2B_33UXP_20250302_0_L2A``.
ES_LEGACY_ID = re.compile(r"S2[A-D]_\d{1,2}[A-Z]{3}_\d{8}_\d+_L2A")
#: Collection-1 collections: COGs as ESA made them, the offset still in the DN.
C1_COLLECTIONS = ("sentinel-2-c1-l2a", "sentinel-2-c1-l1c")
S2_SCALE = 1e-4
S2_OFFSET = -0.1
#: ESA's SATURATED special value of Sentinel-2 bands (nodata in the cube).
S2_SATURATED = 65535
LANDSAT_SR_SCALE = 2.75e-05
LANDSAT_SR_OFFSET = -0.2
LANDSAT_ST_SCALE = 0.00341802
LANDSAT_ST_OFFSET = 149.0
S1_NODATA = -32768.0

#: Landsat QA_PIXEL single-bit flags: name -> bit (USGS Collection 2).
QA_PIXEL_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}
#: The QA_PIXEL flags decoded into their own mask variables (``qa_<flag>``).
QA_MASK_FLAGS = ("fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow")
#: QA_PIXEL flags masked by ``mask_clouds`` unless the user names others.
DEFAULT_QA_MASK = ("dilated_cloud", "cirrus", "cloud", "cloud_shadow")
#: Sentinel-2 SCL classes masked by ``mask_clouds`` unless the user names others:
#: 1 saturated/defective, 3 cloud shadow, 8 cloud medium probability, 9 cloud high probability,
#: 10 thin cirrus. (0 nodata is nodata anyway; 11 snow is kept.)
DEFAULT_SCL_MASK = (1, 3, 8, 9, 10)
SCL_CLASSES = range(0, 12)


@dataclass(frozen=True)
class ProcessingOptions:
    """Opt-in processing choices; recorded with the cube's request.

    Attributes:
        mask_clouds: mask clouds and shadows per scene before mosaicking (Sentinel-2 L2A by
            SCL, Landsat by QA_PIXEL); the QA band is read even when not requested.
        scl_classes: SCL classes that count as masked.
        qa_flags: QA_PIXEL flags that count as masked (names of :data:`QA_PIXEL_BITS`).
        sar_scale: ``db`` (default) or ``linear`` Sentinel-1 backscatter.
    """

    mask_clouds: bool = False
    scl_classes: tuple[int, ...] = DEFAULT_SCL_MASK
    qa_flags: tuple[str, ...] = DEFAULT_QA_MASK
    sar_scale: Literal["db", "linear"] = "db"

    def __post_init__(self) -> None:
        bad = [c for c in self.scl_classes if int(c) not in SCL_CLASSES]
        if bad:
            raise InvalidRequestError(f"SCL classes must be 0..11, got {bad}")
        unknown = [f for f in self.qa_flags if f not in QA_PIXEL_BITS]
        if unknown:
            raise InvalidRequestError(
                f"unknown QA_PIXEL flag(s) {unknown}; use: {', '.join(QA_PIXEL_BITS)}"
            )
        if self.sar_scale not in ("db", "linear"):
            raise InvalidRequestError(f"sar_scale must be 'db' or 'linear', got {self.sar_scale!r}")
        object.__setattr__(self, "scl_classes", tuple(sorted({int(c) for c in self.scl_classes})))
        object.__setattr__(self, "qa_flags", tuple(dict.fromkeys(self.qa_flags)))

    @property
    def qa_mask_bits(self) -> int:
        """The QA_PIXEL bit mask of :attr:`qa_flags`."""
        return sum(1 << QA_PIXEL_BITS[f] for f in self.qa_flags)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record (stored with the request, so ``update`` repeats it)."""
        return {
            "mask_clouds": self.mask_clouds,
            "scl_classes": list(self.scl_classes),
            "qa_flags": list(self.qa_flags),
            "sar_scale": self.sar_scale,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> ProcessingOptions:
        """Inverse of :meth:`describe` (missing keys take their defaults)."""
        record = dict(record or {})
        kw: dict[str, Any] = {}
        if "mask_clouds" in record:
            kw["mask_clouds"] = bool(record["mask_clouds"])
        if record.get("scl_classes") is not None:
            kw["scl_classes"] = tuple(record["scl_classes"])
        if record.get("qa_flags") is not None:
            kw["qa_flags"] = tuple(record["qa_flags"])
        if record.get("sar_scale"):
            kw["sar_scale"] = record["sar_scale"]
        return cls(**kw)


@dataclass(frozen=True)
class Radiometry:
    """value = DN * scale + offset, for every DN != nodata (then ``transform``, if any).

    Attributes:
        rule: id of the rule that decided (see module docs).
        scale: physical units per DN (of the mission's main kind: reflectance, backscatter...).
        offset: physical offset added after scaling.
        baseline: processing baseline (Sentinel-2) or correction level (Landsat) the decision
            was based on.
        warnings: contradictions found in the item's metadata.
        band_scaling: ``(band, scale, offset)`` for bands that differ from ``scale``/``offset``
            (Landsat ``lwir11``).
        nodata: the raw nodata value used (None: the mission's).
        saturated: the raw value marking a saturated pixel (nodata in the cube), if any.
        transform: applied after scaling: ``db`` (10 * log10) or None.
        missing: canonical bands this item does not have (read as nodata).
    """

    rule: str
    scale: float
    offset: float
    baseline: str | None = None
    warnings: tuple[str, ...] = ()
    band_scaling: tuple[tuple[str, float, float], ...] = ()
    nodata: float | None = None
    transform: str | None = None
    missing: tuple[str, ...] = ()
    saturated: float | None = None

    @property
    def offset_dn(self) -> int:
        """The offset in DN (``-1000`` for rule ``s2-offset-1000``)."""
        return round(self.offset / self.scale)

    def scaling(self, band: str) -> tuple[float, float]:
        """``(scale, offset)`` of ``band``."""
        for name, scale, offset in self.band_scaling:
            if name == band:
                return scale, offset
        return self.scale, self.offset

    def record(self) -> dict[str, Any]:
        """JSON-ready ledger entry of this decision."""
        out: dict[str, Any] = {
            "processing_baseline": self.baseline,
            "rule": self.rule,
            "scale": self.scale,
            "offset": self.offset,
            "warnings": list(self.warnings),
        }
        if self.band_scaling:
            out["band_scaling"] = {b: [s, o] for b, s, o in self.band_scaling}
        if self.nodata is not None and not (
            isinstance(self.nodata, float) and math.isnan(self.nodata)
        ):
            out["nodata"] = self.nodata
        if self.saturated is not None:
            out["saturated"] = self.saturated
        if self.transform:
            out["transform"] = self.transform
        if self.missing:
            out["missing_bands"] = list(self.missing)
        return out


# --- Sentinel-2 ---------------------------------------------------------------------------------


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
    day = item_datetime(item).date()
    baseline = processing_baseline(item)
    if baseline is None:
        ge4 = day >= BASELINE_04_START
        warnings.append(
            f"{iid}: no processing baseline in metadata; assumed "
            f"{'>= 04.00' if ge4 else '< 04.00'} from acquisition date {day}"
        )
    else:
        try:
            ge4 = float(baseline) >= 4.0
        except ValueError:
            ge4 = day >= BASELINE_04_START
            warnings.append(f"{iid}: unreadable processing baseline {baseline!r}; used the date")
    props = item.get("properties", {})
    flag = next((props[k] for k in BOA_FLAGS if k in props), None)
    declared = sorted(o for o in _declared_offsets(item) if o != 0)
    collection = item.get("collection")

    def rule(name: str, offset: float) -> Radiometry:
        return Radiometry(
            name, S2_SCALE, offset, baseline, tuple(warnings), nodata=0, saturated=S2_SATURATED
        )

    if not ge4:
        if flag:
            warnings.append(
                f"{iid}: earthsearch:boa_offset_applied=true but baseline {baseline} predates "
                "04.00, which has no offset; ignored"
            )
        if declared:
            warnings.append(
                f"{iid}: raster:bands offset {declared} ignored: baseline {baseline} predates 04.00"
            )
        return rule("s2-pre-04.00", 0.0)
    legacy = flag is not None or ES_LEGACY_ID.fullmatch(iid) is not None
    if collection in C1_COLLECTIONS or not legacy:
        if flag:
            warnings.append(
                f"{iid}: earthsearch:boa_offset_applied=true contradicts collection "
                f"{collection}, whose COGs keep the offset in the DN; followed the collection"
            )
        return rule("s2-offset-1000", S2_OFFSET)
    if flag is True:
        if declared:
            warnings.append(
                f"{iid}: raster:bands offset {declared} contradicts "
                "earthsearch:boa_offset_applied=true; followed the flag (offset already in DN)"
            )
        return rule("s2-offset-applied-in-cog", 0.0)
    stated = "missing" if flag is None else f"={str(flag).lower()}"
    if day >= ES_OFFSET_REMOVED_SINCE:
        also = f" and raster:bands offset {declared}" if declared else ""
        warnings.append(
            f"{iid}: earthsearch:boa_offset_applied {stated}{also} contradict the acquisition "
            f"date {day}: Earth Search removed the offset from every scene acquired since "
            f"{ES_OFFSET_REMOVED_SINCE} (Element84/earth-search issues 66, 71); followed the date"
        )
        return rule("s2-offset-applied-in-cog-despite-flag", 0.0)
    if flag is None:
        warnings.append(
            f"{iid}: earthsearch:boa_offset_applied missing on a scene acquired {day}, before "
            f"Earth Search removed the offset ({ES_OFFSET_REMOVED_SINCE}); assumed still in the DN"
        )
    return rule("s2-offset-1000", S2_OFFSET)


# --- Landsat ------------------------------------------------------------------------------------


def _landsat_declared(item: dict[str, Any], key: str) -> tuple[float, float] | None:
    asset = item.get("assets", {}).get(key) or {}
    bands = asset.get("raster:bands") or []
    if len(bands) != 1 or "scale" not in bands[0]:
        return None
    return float(bands[0]["scale"]), float(bands[0].get("offset", 0.0))


def landsat_radiometry(item: dict[str, Any]) -> Radiometry:
    """Decide the Landsat Collection 2 Level-2 radiometry of one item.

    >>> item = {"id": "LC09_L2SR_084082_20250722_02_T1", "properties": {}, "assets": {}}
    >>> r = landsat_radiometry(item)
    >>> r.rule, r.scaling("red"), r.missing
    ('landsat-c2-l2sr', (2.75e-05, -0.2), ('lwir11',))
    """
    from stac2cube.items import landsat_correction
    from stac2cube.missions import LANDSAT_C2_L2, find_asset

    iid = item.get("id", "?")
    warnings: list[str] = []
    correction, source = landsat_correction(item)
    if source != "landsat:correction":
        warnings.append(f"{iid}: no landsat:correction; {correction} taken from {source}")
    thermal_key = find_asset(item, LANDSAT_C2_L2.band("lwir11"))
    missing = [
        b.name
        for b in LANDSAT_C2_L2.bands
        if b.optional and b.name != "lwir11" and item.get("assets") and not find_asset(item, b)
    ]  # coastal: Landsat 4-7 have none
    if correction == "L2SR":
        missing.append("lwir11")
        if thermal_key is not None:
            warnings.append(f"{iid}: L2SR item has a thermal asset {thermal_key!r}; not used")
    elif thermal_key is None and item.get("assets"):
        missing.append("lwir11")
        warnings.append(f"{iid}: {correction} item without a thermal asset; lwir11 is nodata")
    documented = {"reflectance": (LANDSAT_SR_SCALE, LANDSAT_SR_OFFSET)}
    documented["temperature"] = (LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET)
    for band in LANDSAT_C2_L2.bands:
        if band.kind not in documented:
            continue
        key = find_asset(item, band)
        declared = _landsat_declared(item, key) if key else None
        want = documented[band.kind]
        if declared and not all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(declared, want, strict=True)
        ):
            warnings.append(
                f"{iid}: raster:bands of {key} declare scale/offset {list(declared)}, not the "
                f"Collection 2 {band.kind} factors {list(want)}; used the Collection 2 factors"
            )
    rule = "landsat-c2-l2sr" if correction == "L2SR" else "landsat-c2-l2sp"
    return Radiometry(
        rule,
        LANDSAT_SR_SCALE,
        LANDSAT_SR_OFFSET,
        correction,
        tuple(warnings),
        band_scaling=(("lwir11", LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET),),
        nodata=0,
        missing=tuple(missing),
    )


# --- Sentinel-1 ---------------------------------------------------------------------------------


def sentinel1_radiometry(
    item: dict[str, Any], options: ProcessingOptions | None = None
) -> Radiometry:
    """Decide the Sentinel-1 RTC/NRB radiometry of one item.

    Raises:
        InvalidRequestError: the item is a GRD product (integer amplitude DN, no terrain
            correction), naming the catalogs that serve terrain-corrected backscatter.
    """
    from stac2cube.missions import SENTINEL_1_RTC, find_asset

    options = options or ProcessingOptions()
    iid = item.get("id", "?")
    warnings: list[str] = []
    nodata: set[float] = set()
    pols = []
    for band in SENTINEL_1_RTC.bands:
        key = find_asset(item, band)
        if key is None:
            continue
        pols.append(band.name)
        rb = (item["assets"][key].get("raster:bands") or [{}])[0]
        dtype = str(rb.get("data_type", "float32"))
        if dtype.startswith(("uint", "int")):
            from stac2cube.catalogs import where_offered

            raise InvalidRequestError(
                f"item {iid} asset {key} holds {dtype} GRD amplitude, not terrain-corrected "
                f"gamma0 backscatter; use: {where_offered('sentinel-1-rtc')}"
            )
        if rb.get("nodata") is not None:
            nodata.add(float(rb["nodata"]))
    if len(nodata) > 1:
        warnings.append(f"{iid}: assets declare different nodata {sorted(nodata)}; used all")
    value = next(iter(nodata)) if len(nodata) == 1 else S1_NODATA
    if not nodata:
        warnings.append(f"{iid}: no nodata declared; used {S1_NODATA:g} and NaN")
    props = item.get("properties", {})
    product = props.get("sar:product_type") or ("NRB" if "nrb" in iid.lower() else "RTC")
    db = options.sar_scale == "db"
    return Radiometry(
        "s1-gamma0-db" if db else "s1-gamma0-linear",
        1.0,
        0.0,
        str(product),
        tuple(warnings),
        nodata=value,
        transform="db" if db else None,
    )


# --- Copernicus DEM -----------------------------------------------------------------------------


def dem_radiometry(item: dict[str, Any]) -> Radiometry:
    """Copernicus DEM: heights in metres as stored; nodata only if the asset declares one."""
    nodata = None
    for asset in item.get("assets", {}).values():
        for rb in asset.get("raster:bands") or []:
            if rb.get("nodata") is not None:
                nodata = float(rb["nodata"])
    return Radiometry("cop-dem", 1.0, 0.0, None, (), nodata=nodata)


def decide_radiometry(
    mission: str, item: dict[str, Any], *, options: ProcessingOptions | None = None
) -> Radiometry:
    """The radiometry of ``item`` for ``mission`` (dispatch on the mission's family)."""
    from stac2cube.missions import get_mission

    family = get_mission(mission).radiometry
    if family == "sentinel-2":
        return sentinel2_radiometry(item)
    if family == "landsat-c2-l2":
        return landsat_radiometry(item)
    if family == "sentinel-1-rtc":
        return sentinel1_radiometry(item, options)
    if family == "cop-dem":
        return dem_radiometry(item)
    raise NotImplementedError(f"no radiometry rule for mission family {family!r}")
