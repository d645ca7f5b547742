"""Independent expectations for the mission tests: values computed from the files themselves.

Nothing here calls stac2cube's band matching, loading or radiometry code: the asset of a band is
looked up in the synthetic scene's own file table, raw values are read with rasterio, and the
documented formulas (FACTS.md / README) are applied here.
"""

from __future__ import annotations

import numpy as np
import rasterio
from pyproj import Transformer

from stac2cube.testing.synthetic import S2_BANDS
from stac2cube.testing.synthetic_missions import MissionCatalog, MissionScene

#: documented formulas (FACTS.md)
LANDSAT_SR = (2.75e-05, -0.2)
LANDSAT_ST = (0.00341802, 149.0)
QA_BITS = {"dilated_cloud": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4}


def asset_href(cat: MissionCatalog, item_id: str, band: str) -> str | None:
    """href of ``band`` of an item, from the synthetic scene's own file table (None if absent)."""
    scene = cat.scene(item_id)
    item = cat.item(item_id)
    if isinstance(scene, MissionScene):
        keys = [bf.key for bf in scene.band_files() if bf.band == band]
        if not keys:
            return None
        key = keys[0]
    else:
        key = band if scene.style == "planetary-computer" else S2_BANDS[band][1]
    return item["assets"][key]["href"]


def raw_on_grid(href: str, xs: np.ndarray, ys: np.ndarray, epsg: int, margin: float = 0.05):
    """Raw values under each cube pixel centre (the containing source pixel).

    Returns ``(values, inside, safe)``: ``safe`` is False where the centre lies within
    ``margin`` (in source pixels) of a source pixel edge, where a reprojecting reader may pick
    either neighbour.
    """
    with rasterio.open(href.removeprefix("file://")) as src:
        data = src.read(1)
        src_epsg = src.crs.to_epsg()
        t = src.transform
    X, Y = np.meshgrid(xs, ys)
    if src_epsg != epsg:
        X, Y = Transformer.from_crs(epsg, src_epsg, always_xy=True).transform(X, Y)
    colf = (X - t.c) / t.a
    rowf = (Y - t.f) / t.e
    col = np.floor(colf).astype(int)
    row = np.floor(rowf).astype(int)
    inside = (row >= 0) & (row < data.shape[0]) & (col >= 0) & (col < data.shape[1])
    out = np.zeros(X.shape, data.dtype)
    out[inside] = data[row[inside], col[inside]]
    fr, fc = rowf - row, colf - col
    safe = (fr > margin) & (fr < 1 - margin) & (fc > margin) & (fc < 1 - margin)
    return out, inside, safe


def s2_offset_dn(item: dict) -> int:
    """The documented Sentinel-2 rule: -1000 DN for baseline >= 04.00, unless Earth Search's
    legacy flag says the COGs already lost it."""
    props = item["properties"]
    if float(props["s2:processing_baseline"]) < 4.0:
        return 0
    return 0 if props.get("earthsearch:boa_offset_applied") is True else -1000


def physical(mission: str, item: dict, band: str, raw: np.ndarray, inside, sar_scale="db"):
    """The documented formula for ``band`` of ``item``; NaN for nodata and outside the file."""
    raw64 = raw.astype("float64")
    if mission.startswith("sentinel-2"):
        if band == "SCL":
            return np.where(inside, raw, 0)
        out = (raw64 + s2_offset_dn(item)) / 10000.0
        return np.where(inside & (raw != 0), out, np.nan)
    if mission == "landsat-c2-l2":
        if band == "qa_pixel":
            return np.where(inside, raw, 1)
        scale, offset = LANDSAT_ST if band == "lwir11" else LANDSAT_SR
        return np.where(inside & (raw != 0), raw64 * scale + offset, np.nan)
    if mission == "sentinel-1-rtc":
        valid = inside & np.isfinite(raw64) & (raw64 != -32768)
        if sar_scale == "linear":
            return np.where(valid, raw64, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10.0 * np.log10(raw64)
        return np.where(valid & (raw64 > 0), db, np.nan)
    return np.where(inside, raw64, np.nan)  # DEM metres


def expected_step(
    cat: MissionCatalog,
    mission: str,
    item_ids: list[str],
    band: str,
    xs,
    ys,
    epsg: int,
    *,
    margin: float = 0.05,
    sar_scale: str = "db",
    mask_flags: tuple[str, ...] = (),
    scl_classes: tuple[int, ...] = (),
):
    """The mosaic of one time step (first valid value in ``item_ids`` order) and where the
    expectation is exact (``safe``)."""
    out, safe_all = None, None
    discrete = band in ("SCL", "qa_pixel")
    for iid in item_ids:
        href = asset_href(cat, iid, band)
        if href is None:
            layer = np.full((len(ys), len(xs)), np.nan)
            inside = safe = np.zeros(layer.shape, bool)
        else:
            raw, inside, safe = raw_on_grid(href, xs, ys, epsg, margin)
            layer = physical(mission, cat.item(iid), band, raw, inside, sar_scale)
        if mask_flags and not discrete:
            qa, qin, _ = raw_on_grid(asset_href(cat, iid, "qa_pixel"), xs, ys, epsg, margin)
            bits = sum(1 << QA_BITS[f] for f in mask_flags)
            layer = np.where(qin & ((qa & bits) != 0), np.nan, layer)
        if scl_classes and not discrete:
            scl, sin, _ = raw_on_grid(asset_href(cat, iid, "SCL"), xs, ys, epsg, margin)
            layer = np.where(sin & np.isin(scl, scl_classes), np.nan, layer)
        valid = (layer != (1 if band == "qa_pixel" else 0)) if discrete else ~np.isnan(layer)
        if out is None:
            out, have = layer.astype("float64"), valid
            safe_all = safe | ~inside
        else:
            take = ~have & valid
            out = np.where(take, layer, out)
            have = have | valid
            safe_all &= safe | ~inside
    return out, safe_all
