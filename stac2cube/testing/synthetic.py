"""Synthetic Sentinel-2 catalogs: real COGs plus STAC items shaped like the real catalogs' items.

Items are deep copies of real recorded items (``templates/``: Earth Search ``sentinel-2-c1-l2a``
and legacy ``sentinel-2-l2a``, Planetary Computer ``sentinel-2-l2a``) with ids, times, footprints,
projection and hrefs replaced; hrefs are ``file://`` paths of tiled, compressed COGs with
overviews, written at each band's native resolution (10/20/60 m).

Every pixel's value is known: the *true* reflectance of band ``b`` at native pixel ``(row, col)``
of a scene with seed ``s`` is :func:`true_reflectance`; the DN written is that times 10000 plus the
offset the scene's style and baseline imply (+1000 for baseline >= 04.00 unless the catalog
already removed it). Tests read the DN back from the COG and apply the documented formula
themselves.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

Style = Literal["earth-search-c1", "earth-search-legacy", "planetary-computer"]

#: canonical band -> (native resolution m, Earth Search asset key)
S2_BANDS: dict[str, tuple[int, str]] = {
    "B01": (60, "coastal"),
    "B02": (10, "blue"),
    "B03": (10, "green"),
    "B04": (10, "red"),
    "B05": (20, "rededge1"),
    "B06": (20, "rededge2"),
    "B07": (20, "rededge3"),
    "B08": (10, "nir"),
    "B8A": (20, "nir08"),
    "B09": (60, "nir09"),
    "B11": (20, "swir16"),
    "B12": (20, "swir22"),
    "SCL": (20, "scl"),
}
BAND_INDEX = {b: i for i, b in enumerate(S2_BANDS)}
DEFAULT_COLLECTION: dict[str, str] = {
    "earth-search-c1": "sentinel-2-c1-l2a",
    "earth-search-legacy": "sentinel-2-l2a",
    "planetary-computer": "pc-sentinel-2-l2a",
}
SCL_VEGETATION, SCL_CLOUD_HIGH = 4, 9


def true_reflectance(seed: int, band: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The reflectance a synthetic scene holds at native pixel ``(row, col)`` of ``band``.

    A fine texture (every pixel differs from its neighbours) in 0.0500 .. 0.3499.

    >>> float(true_reflectance(0, "B04", np.array(0), np.array(0)))
    0.0611
    """
    k = BAND_INDEX[band]
    base = 500 + (rows * 7 + cols * 13 + seed * 101 + k * 37 + rows * cols % 11) % 3000
    return base / 10000.0


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic granule.

    Attributes:
        tile: MGRS-like tile id (``32UPU``).
        epsg: UTM EPSG code of the tile.
        origin: upper-left corner ``(x, y)`` in the tile's CRS; multiples of 60 m.
        datetime: acquisition time (UTC).
        baseline: processing baseline (``"05.10"``); before ``"04.00"`` there is no DN offset.
        style: which real catalog's items to imitate.
        size: tile width and height in 10 m pixels (a multiple of 6).
        seed: texture seed (scenes with equal seeds hold equal reflectance).
        nodata_cols: this many 10 m columns on the east edge are nodata (DN 0), like a swath edge.
        cloud_rows: this many 10 m rows on the north edge are cloud (SCL 9).
        cloud_cover: ``eo:cloud_cover``; default derived from ``cloud_rows``.
        boa_offset_applied: Earth Search legacy flag; default: true for baseline >= 04.00.
        offset_in_dn: whether the written DN carry +1000; default per style and baseline.
        sequence: granule sequence number (legacy ids, ``_0``/``_1``).
        generation_time: processing time; default one hour after acquisition.
        item_id: explicit id (default built like the real catalog's ids).
        collection: collection id (default per style, see ``DEFAULT_COLLECTION``).
        corrupt: band whose COG is written as garbage bytes (to test read errors).
    """

    tile: str
    epsg: int
    origin: tuple[float, float]
    datetime: dt.datetime
    baseline: str = "05.10"
    style: Style = "earth-search-c1"
    platform: str = "sentinel-2a"
    size: int = 240
    seed: int = 0
    nodata_cols: int = 0
    cloud_rows: int = 0
    cloud_cover: float | None = None
    boa_offset_applied: bool | None = None
    offset_in_dn: bool | None = None
    sequence: int = 0
    generation_time: dt.datetime | None = None
    item_id: str | None = None
    collection: str | None = None
    corrupt: str | None = None
    extra_properties: dict[str, Any] = field(default_factory=dict)

    @property
    def post_04(self) -> bool:
        return float(self.baseline) >= 4.0

    @property
    def flag(self) -> bool | None:
        if self.style != "earth-search-legacy":
            return None
        return self.post_04 if self.boa_offset_applied is None else self.boa_offset_applied

    @property
    def dn_offset(self) -> int:
        """DN added to ``reflectance * 10000`` in the written COGs."""
        if self.offset_in_dn is not None:
            return 1000 if self.offset_in_dn else 0
        if not self.post_04:
            return 0
        return 0 if self.style == "earth-search-legacy" and self.flag else 1000

    @property
    def coll(self) -> str:
        return self.collection or DEFAULT_COLLECTION[self.style]

    @property
    def gen_time(self) -> dt.datetime:
        return self.generation_time or self.datetime + dt.timedelta(hours=1)

    @property
    def id(self) -> str:
        if self.item_id:
            return self.item_id
        sat = "S2" + self.platform[-1].upper()
        t = self.datetime
        if self.style == "earth-search-c1":
            return f"{sat}_T{self.tile}_{t:%Y%m%dT%H%M%S}_L2A"
        if self.style == "earth-search-legacy":
            return f"{sat}_{self.tile}_{t:%Y%m%d}_{self.sequence}_L2A"
        return f"{sat}_MSIL2A_{t:%Y%m%dT%H%M%S}_R065_T{self.tile}_{self.gen_time:%Y%m%dT%H%M%S}"

    def dn(self, band: str) -> np.ndarray:
        """The DN array written for ``band`` at its native resolution."""
        res = S2_BANDS[band][0]
        n = self.size * 10 // res
        rows, cols = np.mgrid[0:n, 0:n]
        if band == "SCL":
            out = np.full((n, n), SCL_VEGETATION, "uint8")
            out[rows * res < self.cloud_rows * 10] = SCL_CLOUD_HIGH
            out[cols * res >= (self.size - self.nodata_cols) * 10] = 0
            return out
        refl = true_reflectance(self.seed, band, rows, cols)
        out = np.round(refl * 10000).astype("uint16") + self.dn_offset
        # a native pixel is nodata where its whole footprint lies in the nodata strip
        out[cols * res >= (self.size - self.nodata_cols) * 10] = 0
        return out.astype("uint16")

    def transform(self, band: str) -> list[float]:
        res = float(S2_BANDS[band][0])
        return [res, 0.0, float(self.origin[0]), 0.0, -res, float(self.origin[1])]

    def footprint(self) -> tuple[list[float], dict[str, Any]]:
        """WGS 84 bbox and polygon of the tile."""
        from pyproj import Transformer

        x0, y1 = self.origin
        x1, y0 = x0 + self.size * 10, y1 - self.size * 10
        tr = Transformer.from_crs(f"EPSG:{self.epsg}", "EPSG:4326", always_xy=True)
        ring = [tr.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        lons, lats = zip(*ring, strict=True)
        bbox = [min(lons), min(lats), max(lons), max(lats)]
        return bbox, {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def _template(kind: str, name: str) -> dict[str, Any]:
    text = resources.files("stac2cube.testing").joinpath("templates", name).read_text()
    return json.loads(text)[kind]


_TEMPLATE_FILE = {
    "earth-search-c1": "item_earth-search__sentinel-2-c1-l2a.json",
    "earth-search-legacy": "item_earth-search__sentinel-2-l2a.json",
    "planetary-computer": "item_planetary-computer__sentinel-2-l2a.json",
}
_COLLECTION_FILE = {
    "earth-search-c1": "collection_earth-search__sentinel-2-c1-l2a.json",
    "earth-search-legacy": "collection_earth-search__sentinel-2-l2a.json",
    "planetary-computer": "collection_planetary-computer__sentinel-2-l2a.json",
}


def _asset_key(style: Style, band: str) -> str:
    return band if style == "planetary-computer" else S2_BANDS[band][1]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_cog(path: Path, array: np.ndarray, epsg: int, transform: Sequence[float]) -> None:
    """Write a tiled, deflate-compressed COG with overviews and nodata 0."""
    import rasterio
    from rasterio.transform import Affine

    height, width = array.shape
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=width,
        height=height,
        count=1,
        dtype=array.dtype.name,
        crs=f"EPSG:{epsg}",
        transform=Affine(*transform),
        nodata=0,
        blocksize=128 if max(array.shape) <= 512 else 256,
        compress="deflate",
        overview_resampling="nearest",
    ) as dst:
        dst.write(array, 1)


def make_item(scene: SceneSpec, root: Path, bands: Iterable[str]) -> dict[str, Any]:
    """Write the COGs of ``scene`` under ``root`` and return its STAC item dict."""
    item = copy.deepcopy(_template("item", _TEMPLATE_FILE[scene.style]))
    bbox, geometry = scene.footprint()
    sid = scene.id
    props = item["properties"]
    pb = scene.baseline
    nxxyy = "N" + pb.replace(".", "")
    cloud = scene.cloud_cover
    if cloud is None:
        cloud = round(100.0 * scene.cloud_rows / scene.size, 4)
    props.update(
        {
            "datetime": _iso(scene.datetime),
            "platform": scene.platform
            if scene.style != "planetary-computer"
            else scene.platform.title(),
            "eo:cloud_cover": cloud,
            "proj:epsg": scene.epsg,
            "s2:processing_baseline": pb,
            "s2:generation_time": _iso(scene.gen_time),
            "s2:product_uri": f"S2{scene.platform[-1].upper()}_MSIL2A_{scene.datetime:%Y%m%dT%H%M%S}_"
            f"{nxxyy}_R065_T{scene.tile}_{scene.gen_time:%Y%m%dT%H%M%S}.SAFE",
            "s2:datatake_id": f"GS2{scene.platform[-1].upper()}_{scene.datetime:%Y%m%dT%H%M%S}_000000_{pb}",
            "created": _iso(scene.gen_time),
            "updated": _iso(scene.gen_time),
        }
    )
    for key in ("s2:tile_id", "s2:granule_id", "s2:datastrip_id"):
        if key in props:
            props[key] = f"S2_OPER_MSI_L2A_{scene.tile}_{scene.gen_time:%Y%m%dT%H%M%S}_{nxxyy}"
    for key in ("proj:centroid", "earthsearch:s3_path", "earthsearch:payload_id"):
        props.pop(key, None)
    if scene.style == "planetary-computer":
        props["s2:mgrs_tile"] = scene.tile
    else:
        props.update(
            {
                "mgrs:utm_zone": int(scene.tile[:2]),
                "mgrs:latitude_band": scene.tile[2],
                "mgrs:grid_square": scene.tile[3:],
                "grid:code": f"MGRS-{scene.tile}",
            }
        )
    if scene.style == "earth-search-legacy":
        props["earthsearch:boa_offset_applied"] = scene.flag
        props["s2:sequence"] = str(scene.sequence)
    props.update(scene.extra_properties)

    cog_dir = root / "cogs" / scene.coll / sid
    cog_dir.mkdir(parents=True, exist_ok=True)
    assets = {}
    for band in bands:
        key = _asset_key(scene.style, band)
        asset = copy.deepcopy(item["assets"][key])
        path = cog_dir / f"{band}.tif"
        if band == scene.corrupt:
            path.write_bytes(b"II*\x00this is not a valid tiff" * 10)
        else:
            write_cog(path, scene.dn(band), scene.epsg, scene.transform(band))
        res = S2_BANDS[band][0]
        n = scene.size * 10 // res
        asset["href"] = path.resolve().as_uri()
        asset["proj:shape"] = [n, n]
        asset["proj:transform"] = scene.transform(band)
        asset.pop("file:checksum", None)
        asset["file:size"] = path.stat().st_size
        assets[key] = asset
    item.update(
        {
            "id": sid,
            "collection": scene.coll,
            "bbox": bbox,
            "geometry": geometry,
            "assets": assets,
            "links": [],
        }
    )
    return item


def make_collection(style: Style, collection_id: str, items: Sequence[dict]) -> dict[str, Any]:
    """A collection document from the real one of ``style``, with extents covering ``items``."""
    coll = copy.deepcopy(_template("collection", _COLLECTION_FILE[style]))
    return with_extent(coll, collection_id, items)


def with_extent(coll: dict[str, Any], collection_id: str, items: Sequence[dict]) -> dict[str, Any]:
    """``coll`` renamed to ``collection_id``, links dropped, extents covering ``items``."""
    coll["id"] = collection_id
    coll["links"] = []
    if items:
        boxes = np.array([i["bbox"] for i in items])
        times = sorted(i["properties"]["datetime"] for i in items)
        coll["extent"] = {
            "spatial": {"bbox": [[*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        }
    return coll


@dataclass
class SyntheticCatalog:
    """What :func:`write_catalog` wrote: collections, items and the scenes behind them."""

    root: Path
    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]
    scenes: list[SceneSpec]

    def scene(self, item_id: str) -> SceneSpec:
        return next(s for s in self.scenes if s.id == item_id)


def write_catalog(
    root: str | Path, scenes: Sequence[SceneSpec], bands: Iterable[str] = tuple(S2_BANDS)
) -> SyntheticCatalog:
    """Write the COGs of ``scenes`` under ``root`` and build their collections and items."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bands = list(bands)
    items = [make_item(s, root, bands) for s in scenes]
    collections = []
    for coll_id in dict.fromkeys(s.coll for s in scenes):
        style = next(s.style for s in scenes if s.coll == coll_id)
        collections.append(
            make_collection(style, coll_id, [i for i in items if i["collection"] == coll_id])
        )
    return SyntheticCatalog(root, collections, items, list(scenes))


# --- the standard test scenes ------------------------------------------------------------------

UTC = dt.UTC
#: Tile A near Munich (UTM 32N); tile B overlaps A's east part (same orbit, same day);
#: tiles C (32N) and D (33N) meet at 12 degrees east, the zone boundary.
TILE_A = ("32UPU", 32632, (690000.0, 5340000.0))
TILE_B = ("32UQU", 32632, (691800.0, 5340000.0))
TILE_C = ("32UQV", 32632, (720000.0, 5366040.0))
TILE_D = ("33UUP", 32633, (277560.0, 5366040.0))


def _at(day: str, hms: str = "10:30:21") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hms}").replace(tzinfo=UTC)


def standard_scenes() -> list[SceneSpec]:
    """The scenarios the test suite and the demo use.

    * ``sentinel-2-c1-l2a`` (Earth Search Collection-1): Jan-Feb 2024, baseline 05.10;
      2024-01-05 tiles A and B of one orbit (A has a nodata strip B fills); 2024-01-10 the same
      granule twice (baselines 05.09 and 05.10, different texture: the 05.10 one must win);
      2024-01-15 a cloudy scene (85%); 2024-02-01 tiles C and D in two UTM zones.
    * ``sentinel-2-l2a`` (Earth Search legacy): 2021-12-20 baseline 03.01 (no offset) and
      2022-02-10 baseline 04.00 with ``boa_offset_applied`` (offset already removed).
    * ``pc-sentinel-2-l2a`` (Planetary Computer style): 2021-11-03 baseline 03.00 and
      2022-03-05 baseline 04.00 (offset in the DN, no metadata about it).
    """
    a, b, c, d = TILE_A, TILE_B, TILE_C, TILE_D
    c1: list[SceneSpec] = []

    def s(tile, when, **kw):
        return SceneSpec(tile=tile[0], epsg=tile[1], origin=tile[2], datetime=when, **kw)

    c1 += [
        s(a, _at("2024-01-05"), seed=1, nodata_cols=60, platform="sentinel-2b"),
        s(b, _at("2024-01-05", "10:30:25"), seed=2, platform="sentinel-2b"),
        s(
            a,
            _at("2024-01-10"),
            seed=3,
            baseline="05.09",
            item_id="S2A_T32UPU_20240110T103021_L2A_N0509",
        ),
        s(a, _at("2024-01-10"), seed=4, baseline="05.10"),
        s(a, _at("2024-01-15"), seed=5, cloud_rows=204),
        s(a, _at("2024-01-25"), seed=6, platform="sentinel-2b", nodata_cols=60),
        s(c, _at("2024-02-01"), seed=7),
        s(d, _at("2024-02-01", "10:30:30"), seed=8),
    ]
    legacy = [
        s(a, _at("2021-12-20"), seed=9, baseline="03.01", style="earth-search-legacy"),
        s(a, _at("2022-02-10"), seed=10, baseline="04.00", style="earth-search-legacy"),
    ]
    pc = [
        s(a, _at("2021-11-03"), seed=11, baseline="03.00", style="planetary-computer"),
        s(a, _at("2022-03-05"), seed=12, baseline="04.00", style="planetary-computer"),
    ]
    return c1 + legacy + pc


def demo_bbox() -> tuple[float, float, float, float]:
    """A WGS 84 bbox inside tile A (about 1.5 x 1.5 km) used by the demo and many tests."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 300, y1 - 1900)
    e, n = tr.transform(x0 + 1900, y1 - 300)
    return (round(w, 5), round(s, 5), round(e, 5), round(n, 5))


def zone_boundary_bbox() -> tuple[float, float, float, float]:
    """A WGS 84 bbox across 12 E covered by tiles C (UTM 32N) and D (33N); its centre is in 32N."""
    return (11.975, 48.39, 12.02, 48.402)


def with_time(scene: SceneSpec, when: dt.datetime, **changes: Any) -> SceneSpec:
    """A copy of ``scene`` acquired at ``when`` (helper for building time series)."""
    return replace(scene, datetime=when, **changes)
