"""Synthetic catalogs of every mission in the style of every catalog: real COGs/JP2s + STAC items.

Complements :mod:`stac2cube.testing.synthetic` (Sentinel-2 L2A in the styles of Earth Search and
Planetary Computer) with:

=================  =================================  ===================================  ============================================
mission            earth-search                       planetary-computer                   terrabyte
=================  =================================  ===================================  ============================================
sentinel-2-l2a     (synthetic.py)                     (synthetic.py)                       ``sentinel-2-c1-l2a``, JP2, keys ``B04``
sentinel-2-l1c     ``sentinel-2-l1c``, JP2, ``red``   --                                   ``sentinel-2-c1-l1c``, JP2, keys ``B04``
landsat-c2-l2      ``landsat-c2-l2`` (real item)      ``landsat-c2-l2`` L2SP + L2SR (real)  ``landsat-ot-c2-l2`` / ``-etm-`` / ``-tm-``
sentinel-1-rtc     --                                 ``sentinel-1-rtc`` (real item)       ``sentinel-1-nrb`` (keys ``vv-g-lin``)
cop-dem-glo-30     ``cop-dem-glo-30`` (real item)     ``cop-dem-glo-30``                   ``cop-dem-glo-30``
=================  =================================  ===================================  ============================================

Items are deep copies of real recorded items (``templates/``) with ids, times, footprints,
projection and hrefs replaced. No terrabyte item JSON is public: terrabyte items are built from
what FACTS.md records (Sentinel-2 keys ``B01``..``B12``/``SCL``, ``file://`` JP2 hrefs; Landsat
in three collections; Sentinel-1 as CEOS-ARD NRB with ``<pol>-g-lin`` keys, which are
*unverified*), starting from the closest real template.

Every value written is known (:meth:`MissionScene.dn`); tests read it back from the files with
rasterio and apply the documented formulas themselves:

* Sentinel-2: DN = reflectance * 10000 (+ 1000 for baseline >= 04.00), reflectance in
  0.0500..0.3499; 0 = nodata (an east strip of ``nodata_cols``). SCL: 4, 9 in ``cloud_rows``,
  3 in ``shadow_rows``, 0 in the strip.
* Landsat: SR DN 7300..37299, ST DN 30000..49999, 0 = nodata; QA_PIXEL 21824 (clear),
  22280 (cloud, ``cloud_rows``), 21762 (dilated cloud, one row below), 23888 (cloud shadow,
  ``shadow_rows``), 1 (fill) in the strip. L2SR items have no thermal asset; Landsat 4-7 items
  have ``lwir`` (ST_B6) and no ``coastal``.
* Sentinel-1: float32 linear gamma0 0.0050..0.4999; the middle row holds 0.0 (no dB); the strip
  holds -32768 (Planetary Computer) or NaN (terrabyte NRB).
* DEM: float32 metres 400.00..1149.75, EPSG:4326 pixel-is-point tiles without nodata, with the
  latitude-dependent longitude spacing of GLO-30 (1" below 50 N, 1.5" from 50 N).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stac2cube.testing.synthetic import SceneSpec, make_collection, make_item, with_extent

CatalogStyle = Literal["earth-search", "planetary-computer", "terrabyte"]
UTC = dt.UTC

QA_CLEAR, QA_CLOUD, QA_DILATED, QA_SHADOW, QA_FILL = 21824, 22280, 21762, 23888, 1
S2_RES = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B10": 60,
    "B11": 20,
    "B12": 20,
    "SCL": 20,
}
S2_ES_KEYS = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
}
LANDSAT_OLI = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "lwir11", "qa_pixel")
LANDSAT_TM = ("blue", "green", "red", "nir08", "swir16", "swir22", "lwir", "qa_pixel")
DEM_DATETIME = "2021-04-22T00:00:00Z"


def texture(seed: int, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The integer texture every synthetic band is derived from (every pixel differs from its
    neighbours, so a shifted or resampled read is caught)."""
    return rows * 7 + cols * 13 + seed * 101 + k * 37 + (rows * cols) % 11


@dataclass(frozen=True)
class BandFile:
    """One asset of a synthetic item: canonical band, asset key, pixel size, dtype, nodata tag."""

    band: str
    key: str
    pixel: tuple[float, float]
    dtype: str
    nodata: float | None
    driver: str = "COG"

    @property
    def suffix(self) -> str:
        return ".jp2" if self.driver == "JP2OpenJPEG" else ".tif"


@dataclass(frozen=True)
class MissionScene:
    """One synthetic granule of any mission, in the style of one catalog.

    Attributes:
        mission: mission id (``landsat-c2-l2``, ...).
        style: the catalog whose items are imitated.
        datetime: acquisition time (UTC); DEM items keep the real production date instead.
        epsg: CRS of the files (4326 for the DEM).
        origin: upper-left corner ``(x, y)`` of the files, in CRS units.
        size: width and height in pixels at the finest native resolution.
        pixel: ``(x, y)`` size of those pixels (degrees for the DEM).
        seed: texture seed.
        tile: MGRS tile, ``PPPRRR`` WRS-2 path/row, or DEM tile name (``N49E011``).
        platform: platform as the catalog spells it (default per mission).
        baseline: Sentinel-2 processing baseline.
        correction: Landsat ``L2SP`` (SR + ST) or ``L2SR`` (SR only).
        polarizations: Sentinel-1 polarisations.
        cloud_rows: rows of cloud (SCL 9 / QA cloud) from the north edge.
        shadow_rows: rows of cloud shadow below the clouds.
        nodata_cols: columns of nodata on the east edge.
        height: rows, when not ``size``.
        item_id: explicit id.
        collection: explicit collection id (default per mission and style).
        strip_projection: drop every ``proj:*`` field (items without projection metadata).
        extra_properties: merged into the item's properties.
    """

    mission: str
    style: CatalogStyle
    datetime: dt.datetime
    epsg: int
    origin: tuple[float, float]
    size: int = 120
    pixel: tuple[float, float] = (10.0, 10.0)
    seed: int = 0
    tile: str = "32UPU"
    platform: str | None = None
    baseline: str = "05.10"
    correction: str = "L2SP"
    polarizations: tuple[str, ...] = ("VV", "VH")
    cloud_rows: int = 0
    shadow_rows: int = 0
    nodata_cols: int = 0
    height: int | None = None
    item_id: str | None = None
    collection: str | None = None
    strip_projection: bool = False
    extra_properties: dict[str, Any] = field(default_factory=dict)

    # --- identity -----------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self.height or self.size

    @property
    def plat(self) -> str:
        if self.platform:
            return self.platform
        return {
            "sentinel-2-l2a": "sentinel-2a",
            "sentinel-2-l1c": "sentinel-2a",
            "landsat-c2-l2": "landsat-8",
            "sentinel-1-rtc": "sentinel-1a",
            "cop-dem-glo-30": "tandem-x",
        }[self.mission]

    @property
    def landsat_tm(self) -> bool:
        return self.mission == "landsat-c2-l2" and self.plat in (
            "landsat-4",
            "landsat-5",
            "landsat-7",
        )

    @property
    def coll(self) -> str:
        if self.collection:
            return self.collection
        if self.style == "terrabyte":
            return {
                "sentinel-2-l2a": "sentinel-2-c1-l2a",
                "sentinel-2-l1c": "sentinel-2-c1-l1c",
                "sentinel-1-rtc": "sentinel-1-nrb",
                "landsat-c2-l2": "landsat-etm-c2-l2"
                if self.plat == "landsat-7"
                else "landsat-tm-c2-l2"
                if self.landsat_tm
                else "landsat-ot-c2-l2",
                "cop-dem-glo-30": "cop-dem-glo-30",
            }[self.mission]
        return self.mission

    @property
    def id(self) -> str:
        if self.item_id:
            return self.item_id
        t = self.datetime
        if self.mission.startswith("sentinel-2"):
            level = "L1C" if self.mission.endswith("l1c") else "L2A"
            sat = "S2" + self.plat[-1].upper()
            if self.style == "earth-search":
                return f"{sat}_{self.tile}_{t:%Y%m%d}_0_{level}"
            nxxyy = "N" + self.baseline.replace(".", "")
            return f"{sat}_MSI{level}_{t:%Y%m%dT%H%M%S}_{nxxyy}_R065_T{self.tile}_{t:%Y%m%dT%H%M%S}"
        if self.mission == "landsat-c2-l2":
            sensor = {"landsat-4": "LT04", "landsat-5": "LT05", "landsat-7": "LE07"}
            code = sensor.get(self.plat, "LC0" + self.plat[-1])
            return f"{code}_{self.correction}_{self.tile}_{t:%Y%m%d}_02_T1"
        if self.mission == "sentinel-1-rtc":
            sat = "S1" + self.plat[-1].upper()
            pol = "1SDV" if "VV" in self.polarizations else "1SDH"
            if self.style == "terrabyte":
                return f"{sat}_IW_NRB__{pol}_{t:%Y%m%dT%H%M%S}_000000_000000_{self.tile}_0000"
            end = t + dt.timedelta(seconds=25)
            return f"{sat}_IW_GRDH_{pol}_{t:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}_000000_000000_rtc"
        return f"Copernicus_DSM_COG_10_{self.tile[:3]}_00_{self.tile[3:]}_00_DEM"

    # --- pixels -------------------------------------------------------------------------------

    def band_files(self) -> list[BandFile]:
        """The assets of this scene (canonical band, key, pixel size, dtype, nodata tag)."""
        px = self.pixel
        if self.mission.startswith("sentinel-2"):
            bands = [b for b in S2_RES if b != "B10" or self.mission.endswith("l1c")]
            if self.mission.endswith("l1c"):
                bands = [b for b in bands if b != "SCL"]
            out = []
            for b in bands:
                key = S2_ES_KEYS[b] if self.style == "earth-search" else b
                res = float(S2_RES[b])
                dtype = "uint8" if b == "SCL" else "uint16"
                out.append(BandFile(b, key, (res, res), dtype, None, "JP2OpenJPEG"))
            return out
        if self.mission == "landsat-c2-l2":
            keys = LANDSAT_TM if self.landsat_tm else LANDSAT_OLI
            if self.correction == "L2SR":
                keys = tuple(k for k in keys if not k.startswith("lwir"))
            return [
                BandFile(
                    "lwir11" if k == "lwir" else k,
                    k,
                    px,
                    "uint16",
                    1 if k == "qa_pixel" else 0,
                )
                for k in keys
            ]
        if self.mission == "sentinel-1-rtc":
            tb = self.style == "terrabyte"
            return [
                BandFile(
                    p.lower(),
                    f"{p.lower()}-g-lin" if tb else p.lower(),
                    px,
                    "float32",
                    float("nan") if tb else -32768.0,
                )
                for p in self.polarizations
            ]
        return [BandFile("elevation", "data", px, "float32", None)]

    def shape(self, bf: BandFile) -> tuple[int, int]:
        fx = round(bf.pixel[0] / self.pixel[0])
        fy = round(bf.pixel[1] / self.pixel[1])
        return self.rows // fy, self.size // fx

    def transform(self, bf: BandFile) -> list[float]:
        return [bf.pixel[0], 0.0, float(self.origin[0]), 0.0, -bf.pixel[1], float(self.origin[1])]

    @property
    def dn_offset(self) -> int:
        return 1000 if float(self.baseline) >= 4.0 else 0

    def dn(self, band: str) -> np.ndarray:
        """The array written for canonical ``band``."""
        bf = next(b for b in self.band_files() if b.band == band)
        n_rows, n_cols = self.shape(bf)
        rows, cols = np.mgrid[0:n_rows, 0:n_cols]
        ry = bf.pixel[1] / self.pixel[1]  # source rows per band row
        rx = bf.pixel[0] / self.pixel[0]
        base_row = rows * ry  # in finest-resolution rows
        strip = cols * rx >= self.size - self.nodata_cols
        k = [b.band for b in self.band_files()].index(band)
        tex = texture(self.seed, k, rows, cols)
        cloud = base_row < self.cloud_rows
        shadow = (base_row >= self.cloud_rows + 1) & (
            base_row < self.cloud_rows + 1 + self.shadow_rows
        )
        if self.mission.startswith("sentinel-2"):
            if band == "SCL":
                out = np.full(rows.shape, 4, "uint8")
                out[cloud] = 9
                out[shadow] = 3
                out[strip] = 0
                return out
            out = (500 + tex % 3000 + self.dn_offset).astype("uint16")
            out[strip] = 0
            return out
        if self.mission == "landsat-c2-l2":
            if band == "qa_pixel":
                out = np.full(rows.shape, QA_CLEAR, "uint16")
                out[cloud] = QA_CLOUD
                if self.cloud_rows:
                    out[base_row == self.cloud_rows] = QA_DILATED
                out[shadow] = QA_SHADOW
                out[strip] = QA_FILL
                return out
            lo, span = (30000, 20000) if band == "lwir11" else (7300, 30000)
            out = (lo + tex % span).astype("uint16")
            out[strip] = 0
            return out
        if self.mission == "sentinel-1-rtc":
            out = ((50 + tex % 4950) / 10000.0).astype("float32")
            out[self.rows // 2, :] = 0.0
            out[strip] = bf.nodata
            return out
        return (400 + (tex % 3000) * 0.25).astype("float32")

    # --- footprint ----------------------------------------------------------------------------

    def bounds(self) -> tuple[float, float, float, float]:
        x0, y1 = self.origin
        return (x0, y1 - self.rows * self.pixel[1], x0 + self.size * self.pixel[0], y1)

    def footprint(self) -> tuple[list[float], dict[str, Any]]:
        from pyproj import Transformer

        x0, y0, x1, y1 = self.bounds()
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        if self.epsg != 4326:
            tr = Transformer.from_crs(f"EPSG:{self.epsg}", "EPSG:4326", always_xy=True)
            ring = [tr.transform(x, y) for x, y in ring]
        lons, lats = zip(*ring, strict=True)
        bbox = [min(lons), min(lats), max(lons), max(lats)]
        return bbox, {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


# --- writing files -------------------------------------------------------------------------------


def write_raster(
    path: Path,
    array: np.ndarray,
    epsg: int,
    transform: Sequence[float],
    *,
    nodata: float | None,
    driver: str = "COG",
) -> None:
    """Write a single-band raster: a tiled deflate COG, or a lossless JPEG 2000 (like ESA's)."""
    import rasterio
    from rasterio.transform import Affine

    height, width = array.shape
    profile: dict[str, Any] = {
        "driver": driver,
        "width": width,
        "height": height,
        "count": 1,
        "dtype": array.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": Affine(*transform),
    }
    if driver == "COG":
        profile.update(blocksize=128, compress="deflate", overview_resampling="nearest")
        if nodata is not None:
            profile["nodata"] = nodata
    else:  # JP2OpenJPEG: lossless, no nodata tag (as ESA's granules)
        profile.update(QUALITY="100", REVERSIBLE="YES", YCBCR420="NO")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def _template(kind: str, name: str) -> dict[str, Any]:
    text = resources.files("stac2cube.testing").joinpath("templates", name).read_text()
    return copy.deepcopy(json.loads(text)[kind])


def _iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _drop(props: dict[str, Any], *prefixes: str) -> None:
    for key in [k for k in props if k.startswith(prefixes)]:
        props.pop(key)


def _base_item(scene: MissionScene) -> dict[str, Any]:
    """The real template closest to ``scene``'s mission and catalog style."""
    m, s = scene.mission, scene.style
    if m.startswith("sentinel-2"):
        if s == "earth-search":
            return _template("item", "item_earth-search__sentinel-2-l1c.json")
        item = _template("item", "item_planetary-computer__sentinel-2-l2a.json")
        if m.endswith("l1c"):  # terrabyte L1C: the same ESA product layout, with B10
            cirrus = copy.deepcopy(item["assets"]["B09"])
            cirrus["eo:bands"] = [{"name": "B10", "common_name": "cirrus"}]
            cirrus["title"] = "Band 10 - SWIR - Cirrus - 60m"
            item["assets"]["B10"] = cirrus
            item["assets"].pop("SCL", None)
            item["properties"]["s2:product_type"] = "S2MSI1C"
        return item
    if m == "landsat-c2-l2":
        if s == "planetary-computer":
            name = f"item_planetary-computer__landsat-c2-l2_{scene.correction}.json"
            item = _template("item", name)
        else:
            item = _template("item", "item_earth-search__landsat-c2-l2.json")
            if s == "terrabyte":
                _drop(item["properties"], "earthsearch:", "storage:", "processing:")
        if "lwir11" not in item["assets"]:  # L2SR template: borrow the thermal asset description
            sp = _template("item", "item_earth-search__landsat-c2-l2.json")
            item["assets"]["lwir11"] = sp["assets"]["lwir11"]
        if scene.landsat_tm:
            lwir = item["assets"].pop("lwir11")
            lwir["eo:bands"] = [{"name": "TM_B6", "common_name": "lwir"}]
            lwir["description"] = "Collection 2 Level-2 Thermal Infrared Band (ST_B6)"
            item["assets"]["lwir"] = lwir
        return item
    if m == "sentinel-1-rtc":
        item = _template("item", "item_planetary-computer__sentinel-1-rtc.json")
        if s == "terrabyte":  # CEOS-ARD NRB as s1ard writes it (keys unverified)
            props = item["properties"]
            _drop(props, "eda:", "s1:")
            props.update(
                {
                    "sar:product_type": "NRB",
                    "card4l:specification": "NRB",
                    "card4l:specification_version": "5.5",
                    "platform": scene.plat,
                }
            )
            vv = item["assets"]["vv"]
            for pol in ("vv", "vh", "hh", "hv"):
                asset = copy.deepcopy(vv)
                asset["title"] = f"{pol.upper()} gamma0 RTC backscatter, linear"
                asset["roles"] = ["backscatter", "data"]
                asset["raster:bands"] = [{"data_type": "float32", "unit": "natural"}]
                asset.pop("file:checksum", None)
                item["assets"][f"{pol}-g-lin"] = asset
        else:
            for pol in ("hh", "hv"):
                item["assets"][pol] = copy.deepcopy(item["assets"]["vv"])
        return item
    item = _template("item", "item_earth-search__cop-dem-glo-30.json")
    if s != "earth-search":
        _drop(item["properties"], "earthsearch:", "storage:", "processing:")
    return item


def _set_projection(fields: dict[str, Any], scene: MissionScene, shape, transform) -> None:
    """Overwrite the projection fields ``fields`` has, in the same style (``proj:code``, 3x3)."""
    x0, y0, x1, y1 = scene.bounds()
    if "proj:code" in fields or "proj:epsg" not in fields:
        fields["proj:code"] = f"EPSG:{scene.epsg}"
    if "proj:epsg" in fields:
        fields["proj:epsg"] = scene.epsg
    nine = len(fields.get("proj:transform") or []) == 9
    fields["proj:transform"] = list(transform) + ([0.0, 0.0, 1.0] if nine else [])
    fields["proj:shape"] = list(shape)
    if "proj:bbox" in fields:
        fields["proj:bbox"] = [x0, y0, x1, y1]
    fields.pop("proj:centroid", None)


def make_mission_item(scene: MissionScene, root: Path) -> dict[str, Any]:
    """Write the files of ``scene`` under ``root`` and return its STAC item dict."""
    item = _base_item(scene)
    props = item["properties"]
    bbox, geometry = scene.footprint()
    t = scene.datetime
    props["datetime"] = DEM_DATETIME if scene.mission == "cop-dem-glo-30" else _iso(t)
    for key in ("start_datetime", "end_datetime"):
        if key in props:
            props[key] = _iso(t if key.startswith("start") else t + dt.timedelta(seconds=25))
    props["created"] = props["updated"] = _iso(t + dt.timedelta(hours=2))
    _drop(props, "earthsearch:s3_path", "earthsearch:payload_id", "proj:centroid")
    if scene.mission.startswith("sentinel-2"):
        level = "L1C" if scene.mission.endswith("l1c") else "L2A"
        nxxyy = "N" + scene.baseline.replace(".", "")
        props.update(
            {
                "platform": scene.plat,
                "eo:cloud_cover": round(100.0 * scene.cloud_rows / scene.rows, 4),
                "s2:processing_baseline": scene.baseline,
                "s2:generation_time": _iso(t + dt.timedelta(hours=1)),
                "s2:product_uri": f"S2{scene.plat[-1].upper()}_MSI{level}_{t:%Y%m%dT%H%M%S}_"
                f"{nxxyy}_R065_T{scene.tile}_{t + dt.timedelta(hours=1):%Y%m%dT%H%M%S}.SAFE",
            }
        )
        for key in ("s2:tile_id", "s2:granule_id", "s2:datastrip_id", "s2:datatake_id"):
            if key in props:
                props[key] = f"S2_OPER_MSI_{level}_{scene.tile}_{t:%Y%m%dT%H%M%S}_{nxxyy}"
        if scene.style == "earth-search":
            props.update(
                {
                    "mgrs:utm_zone": int(scene.tile[:2]),
                    "mgrs:latitude_band": scene.tile[2],
                    "mgrs:grid_square": scene.tile[3:],
                    "grid:code": f"MGRS-{scene.tile}",
                }
            )
        else:
            props["s2:mgrs_tile"] = scene.tile
    elif scene.mission == "landsat-c2-l2":
        path, row = scene.tile[:3], scene.tile[3:]
        props.update(
            {
                "platform": scene.plat,
                "instruments": ["tm"] if scene.landsat_tm else ["oli", "tirs"],
                "eo:cloud_cover": round(100.0 * scene.cloud_rows / scene.rows, 4),
                "landsat:correction": scene.correction,
                "landsat:wrs_path": path,
                "landsat:wrs_row": row,
                "landsat:scene_id": f"LC8{path}{row}{t:%Y%j}LGN00",
            }
        )
        if "grid:code" in props:
            props["grid:code"] = f"WRS2-{path}{row}"
    elif scene.mission == "sentinel-1-rtc":
        if scene.style != "terrabyte":
            props["platform"] = scene.plat.upper()  # Planetary Computer spells SENTINEL-1A
        props["sar:polarizations"] = list(scene.polarizations)
    else:
        props["grid:code"] = f"CDEM-{scene.tile}"
    props.update(scene.extra_properties)

    files = scene.band_files()
    main = min(files, key=lambda f: f.pixel)  # the item-level grid: the finest band
    _set_projection(props, scene, scene.shape(main), scene.transform(main))

    out_dir = root / "data" / scene.coll / scene.id
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = {}
    for bf in files:
        asset = copy.deepcopy(item["assets"][bf.key])
        path = out_dir / f"{bf.band}{bf.suffix}"
        write_raster(
            path,
            scene.dn(bf.band),
            scene.epsg,
            scene.transform(bf),
            nodata=bf.nodata,
            driver=bf.driver,
        )
        asset["href"] = path.resolve().as_uri()
        asset["type"] = (
            "image/jp2"
            if bf.driver == "JP2OpenJPEG"
            else "image/tiff; application=geotiff; profile=cloud-optimized"
        )
        for key in ("file:checksum", "alternate", "storage:platform", "storage:region"):
            asset.pop(key, None)
        if "storage:requester_pays" in asset:
            asset["storage:requester_pays"] = False  # local files
        asset["file:size"] = path.stat().st_size
        if any(k.startswith("proj:") for k in asset) or scene.mission.startswith("sentinel-2"):
            _set_projection(asset, scene, scene.shape(bf), scene.transform(bf))
            asset.pop("proj:code", None)
        assets[bf.key] = asset
    item.update(
        {
            "id": scene.id,
            "collection": scene.coll,
            "bbox": bbox,
            "geometry": geometry,
            "assets": assets,
            "links": [],
        }
    )
    if scene.strip_projection:
        _drop(props, "proj:")
        for asset in assets.values():
            _drop(asset, "proj:")
    return item


_COLLECTION_TEMPLATES = {
    ("earth-search", "sentinel-2-l1c"): "collection_earth-search__sentinel-2-l1c.json",
    ("earth-search", "landsat-c2-l2"): "collection_earth-search__landsat-c2-l2.json",
    ("earth-search", "cop-dem-glo-30"): "collection_earth-search__cop-dem-glo-30.json",
    ("planetary-computer", "landsat-c2-l2"): "collection_planetary-computer__landsat-c2-l2.json",
    ("planetary-computer", "sentinel-1-rtc"): "collection_planetary-computer__sentinel-1-rtc.json",
    ("planetary-computer", "cop-dem-glo-30"): "collection_planetary-computer__cop-dem-glo-30.json",
}


def make_mission_collection(
    style: CatalogStyle, collection_id: str, mission: str, items: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """A collection document: the real one of ``style`` where recorded, else a minimal one."""
    name = _COLLECTION_TEMPLATES.get((style, collection_id))
    if name:
        coll = _template("collection", name)
    else:
        coll = {
            "type": "Collection",
            "stac_version": "1.0.0",
            "description": f"Synthetic {style} {collection_id} ({mission})",
            "license": "proprietary",
        }
    return with_extent(coll, collection_id, items)


@dataclass
class MissionCatalog:
    """What :func:`write_mission_catalog` wrote."""

    root: Path
    style: CatalogStyle
    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]
    scenes: list[MissionScene | SceneSpec]

    def item(self, item_id: str) -> dict[str, Any]:
        return next(i for i in self.items if i["id"] == item_id)

    def scene(self, item_id: str) -> MissionScene | SceneSpec:
        return next(s for s in self.scenes if s.id == item_id)


def write_mission_catalog(
    root: str | Path,
    style: CatalogStyle,
    scenes: Sequence[MissionScene],
    s2_scenes: Sequence[SceneSpec] = (),
    s2_bands: Sequence[str] = ("B02", "B04", "B08", "B11", "SCL"),
) -> MissionCatalog:
    """Write ``scenes`` (and Sentinel-2 L2A ``s2_scenes`` of :mod:`synthetic`) under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    items = [make_mission_item(s, root) for s in scenes]
    s2_items = [make_item(s, root, s2_bands) for s in s2_scenes]
    collections = []
    for coll_id in dict.fromkeys(s.coll for s in scenes):
        mission = next(s.mission for s in scenes if s.coll == coll_id)
        members = [i for i in items if i["collection"] == coll_id]
        collections.append(make_mission_collection(style, coll_id, mission, members))
    for coll_id in dict.fromkeys(s.coll for s in s2_scenes):
        s2_style = next(s.style for s in s2_scenes if s.coll == coll_id)
        members = [i for i in s2_items if i["collection"] == coll_id]
        collections.append(make_collection(s2_style, coll_id, members))
    return MissionCatalog(root, style, collections, items + s2_items, [*scenes, *s2_scenes])


# --- the standard scenes of the mission tests ----------------------------------------------------

#: UTM 32N, near Munich: the area of :func:`stac2cube.testing.synthetic.demo_bbox` lies inside
#: every scene below (Sentinel-2 tile A; a Landsat path/row; a Sentinel-1 frame).
S2_ORIGIN = (690000.0, 5340000.0)
LANDSAT_ORIGIN = (689985.0, 5340015.0)  # Landsat grids: pixel corners at 15 m mod 30 m
S1_ORIGIN = (689000.0, 5341000.0)
#: The DEM test area straddles 50 N, where GLO-30's longitude spacing changes from 1" to 1.5".
DEM_BBOX = (11.595, 49.985, 11.625, 50.015)


def _at(day: str, hms: str = "10:30:21") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hms}").replace(tzinfo=UTC)


def dem_tiles(style: CatalogStyle) -> list[MissionScene]:
    """Two GLO-30 tile windows meeting at 50 N (pixel-is-point: they share the 50 N row)."""
    arcsec = 1.0 / 3600.0
    south = MissionScene(
        "cop-dem-glo-30",
        style,
        _at("2021-04-22", "00:00:00"),
        4326,
        (11.58 - arcsec / 2, 50.0 + arcsec / 2),
        size=216,
        height=144,
        pixel=(arcsec, arcsec),
        seed=21,
        tile="N49E011",
    )
    north = replace(
        south,
        origin=(11.58 - 0.75 * arcsec, 50.04 + arcsec / 2),
        size=144,
        height=145,
        pixel=(1.5 * arcsec, arcsec),
        seed=22,
        tile="N50E011",
    )
    return [south, north]


def standard_mission_scenes(style: CatalogStyle) -> tuple[list[MissionScene], list[SceneSpec]]:
    """The scenes a catalog of ``style`` serves in the mission tests.

    Every catalog: Landsat (2024-01-05: two rows of one path, the first with a cloud band, a
    shadow band and a nodata strip, the second 300 m further south covering part of them;
    2024-01-21: one clear scene) and the two DEM tiles. Per catalog besides:

    * earth-search: Sentinel-2 L1C 2021-12-20 (baseline 03.01) and 2024-01-05 (05.10); S2 L2A
      ``sentinel-2-c1-l2a`` 2024-01-05 and legacy ``sentinel-2-l2a`` 2021-12-20 / 2022-02-10.
    * planetary-computer: Sentinel-1 RTC 2024-01-04 and 2024-01-16 (VV+VH, nodata strip);
      Landsat 2024-01-21 is L2SR (no thermal); S2 L2A across 04.00 (2021-11-03 .. 2022-03-05).
    * terrabyte: Sentinel-2 ``sentinel-2-c1-l2a`` and ``sentinel-2-c1-l1c`` 2024-01-05 (JP2,
      ``B04`` keys, clouds in SCL); Sentinel-1 NRB 2024-01-04; Landsat 7 (``landsat-etm-c2-l2``,
      ``lwir``, no ``coastal``) 2024-01-13 besides Landsat 8.
    """
    z = 32632
    ls = "landsat-c2-l2"
    landsat = [
        MissionScene(ls, style, _at("2024-01-05", "10:05:10"), z, LANDSAT_ORIGIN, size=100,
                     pixel=(30.0, 30.0), seed=31, tile="193026", cloud_rows=14, shadow_rows=5,
                     nodata_cols=20),
        MissionScene(ls, style, _at("2024-01-05", "10:05:34"), z,
                     (LANDSAT_ORIGIN[0], LANDSAT_ORIGIN[1] - 300.0), size=100,
                     pixel=(30.0, 30.0), seed=32, tile="193027"),
        MissionScene(ls, style, _at("2024-01-21", "10:05:12"), z, LANDSAT_ORIGIN, size=100,
                     pixel=(30.0, 30.0), seed=33, tile="193026", platform="landsat-9",
                     correction="L2SR" if style == "planetary-computer" else "L2SP"),
    ]  # fmt: skip
    scenes: list[MissionScene] = [*landsat, *dem_tiles(style)]
    s2: list[SceneSpec] = []
    a = ("32UPU", z, S2_ORIGIN)

    def spec(when, **kw):
        return SceneSpec(tile=a[0], epsg=a[1], origin=a[2], datetime=when, **kw)

    if style == "earth-search":
        l1c = "sentinel-2-l1c"
        scenes += [
            MissionScene(l1c, style, _at("2021-12-20"), z, S2_ORIGIN, size=240, seed=41,
                         baseline="03.01"),
            MissionScene(l1c, style, _at("2024-01-05"), z, S2_ORIGIN, size=240, seed=42,
                         nodata_cols=60),
        ]  # fmt: skip
        s2 += [
            spec(_at("2024-01-05"), seed=43, style="earth-search-c1", cloud_rows=60),
            spec(_at("2021-12-20"), seed=44, baseline="03.01", style="earth-search-legacy"),
            spec(_at("2022-02-10"), seed=44, baseline="04.00", style="earth-search-legacy"),
        ]
    elif style == "planetary-computer":
        s1 = "sentinel-1-rtc"
        scenes += [
            MissionScene(s1, style, _at("2024-01-04", "05:32:11"), z, S1_ORIGIN, size=300,
                         seed=51, nodata_cols=40),
            MissionScene(s1, style, _at("2024-01-16", "05:32:11"), z, S1_ORIGIN, size=300,
                         seed=52),
        ]  # fmt: skip
        pc = "planetary-computer"
        s2 += [
            spec(_at(day), seed=45, baseline=pb, style=pc, collection="sentinel-2-l2a")
            for day, pb in (
                ("2021-11-03", "03.00"),
                ("2021-12-13", "03.01"),
                ("2022-01-22", "03.01"),
                ("2022-01-27", "04.00"),
                ("2022-03-05", "04.00"),
                ("2023-06-01", "05.09"),
            )
        ]
    else:
        scenes += [
            MissionScene("sentinel-2-l2a", style, _at("2024-01-05"), z, S2_ORIGIN, size=240,
                         seed=46, cloud_rows=60, shadow_rows=12, nodata_cols=60),
            MissionScene("sentinel-2-l2a", style, _at("2024-01-05", "10:30:25"), z,
                         (S2_ORIGIN[0], S2_ORIGIN[1] - 300.0), size=240, seed=47,
                         tile="32UPT"),
            MissionScene("sentinel-2-l1c", style, _at("2024-01-05"), z, S2_ORIGIN, size=240,
                         seed=48),
            MissionScene("sentinel-1-rtc", style, _at("2024-01-04", "05:32:11"), z, S2_ORIGIN,
                         size=240, seed=53, nodata_cols=40),
            MissionScene(ls, style, _at("2024-01-13", "10:01:40"), z, LANDSAT_ORIGIN,
                         size=100, pixel=(30.0, 30.0), seed=34, tile="193026",
                         platform="landsat-7"),
        ]  # fmt: skip
    return scenes, s2
