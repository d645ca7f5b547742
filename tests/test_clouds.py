"""Cloud layers (issue 13): s2cloudless on the matching L1C scenes, masks, shadows, pairing.

A private pair of collections of the session's STAC API holds synthetic L2A COGs and L1C JPEG
2000 granules (stac2cube.testing.clouds). Expected probabilities are computed here from the JP2
files themselves (rasterio, the documented TOA formula, s2cloudless's own detector), not from
stac2cube.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import rasterio
from helpers import small_bbox

from stac2cube import get_cloud_layers, get_stac_layers
from stac2cube.clouds import S2CLOUDLESS_BANDS
from stac2cube.cube import Cube
from stac2cube.testing.clouds import standard_cloud_scenes, write_cloud_catalog

pytestmark = pytest.mark.integration

THRESHOLDS = [40.0, 60.0]


@pytest.fixture(scope="module")
def cloud_catalog(stac_api, tmp_path_factory):
    l2a, l1c = standard_cloud_scenes()
    cat = write_cloud_catalog(tmp_path_factory.mktemp("clouds-catalog"), l2a, l1c)
    stac_api.load_collections(cat.collections)
    stac_api.load_items(cat.items)
    return cat


def build(url, cat, store, start="2024-01-01", end="2024-01-31", **kw):
    return get_stac_layers(
        mission="sentinel-2-l2a", bbox=small_bbox(), start=start, end=end, catalog=url,
        collection=cat.l2a_collection, bands=["B04", "B08"], store=str(store), **kw,
    )  # fmt: skip


def clouds(store, cat, **kw):
    kw = {"collection": cat.l1c_collection, "thresholds": THRESHOLDS, "cloud_resolution": 10,
          "shadows": True, **kw}  # fmt: skip
    return get_cloud_layers(str(store), **kw)


@pytest.fixture(scope="module")
def cube(stac_api, cloud_catalog, tmp_path_factory):
    """January 2024 in one build, then its cloud layers at 10 m: (store, summary)."""
    store = tmp_path_factory.mktemp("clouds-cube") / "cube.icechunk"
    build(stac_api.url, cloud_catalog, store)
    summary = clouds(store, cloud_catalog)
    return store, summary


def layers(store):
    return Cube(store).open_dataset(group="clouds").load()


def record(store):
    return json.loads(layers(store).attrs["stac2cube:clouds"])


# --- independent oracle: TOA from the JP2 files ------------------------------------------------


def toa_on_grid(item, x, y):
    """(y, x, 10) TOA of an L1C item at the cube's pixel centres: nearest native pixel,
    DN/10000 minus 0.1 for baseline >= 04.00, NaN where DN is 0 or outside."""
    keys = {b["name"]: k for k, a in item["assets"].items() for b in a.get("eo:bands", [])}
    post4 = float(item["properties"]["s2:processing_baseline"]) >= 4.0
    out = np.full((len(y), len(x), 10), np.nan, "float64")
    for k, band in enumerate(S2CLOUDLESS_BANDS):
        href = item["assets"][keys[band]]["href"].removeprefix("file://")
        with rasterio.open(href) as src:
            dn = src.read(1)
            t = src.transform
        cols = np.floor((x - t.c) / t.a).astype(int)
        rows = np.floor((y - t.f) / t.e).astype(int)
        inside = (rows[:, None] >= 0) & (rows[:, None] < dn.shape[0])
        inside = inside & (cols[None] >= 0) & (cols[None] < dn.shape[1])
        vals = dn[np.clip(rows, 0, dn.shape[0] - 1)][:, np.clip(cols, 0, dn.shape[1] - 1)]
        refl = (vals.astype("float64") - (1000 if post4 else 0)) / 10000
        refl[(vals == 0) | ~inside] = np.nan
        out[..., k] = refl
    return out


def expected_prob(items, x, y, *, offsets=True):
    """s2cloudless on the first-valid mosaic of ``items`` (NaN where no item is valid)."""
    from s2cloudless import S2PixelCloudDetector

    toa = np.full((len(y), len(x), 10), np.nan)
    for item in items:
        t = toa_on_grid(item, x, y)
        if not offsets and float(item["properties"]["s2:processing_baseline"]) >= 4.0:
            t = t + 0.1  # the common mistake: DN/10000 without the offset
        fill = np.isnan(toa).any(-1) & np.isfinite(t).all(-1)
        toa[fill] = t[fill]
    valid = np.isfinite(toa).all(-1)
    prob = np.full(valid.shape, np.nan)
    det = S2PixelCloudDetector()
    prob[valid] = det.get_cloud_probability_maps(toa[valid][None, None].astype("float32"))[0, 0]
    return prob


def step_items(cat, ds, t):
    ids = str(ds.l1c_item_ids.sel(time=t).values)
    return [cat.item(i) for i in ids.split(",") if i]


# --- tests ---------------------------------------------------------------------------------------


def test_cloud_prob_is_s2cloudless_on_toa_of_the_files(cube, cloud_catalog):
    store, _ = cube
    ds = layers(store)
    assert ds.cloud_prob.dims == ("time", "y", "x")
    assert ds.cloud_mask.dims == ("threshold", "time", "y", "x")
    assert ds.threshold.values.tolist() == THRESHOLDS
    x, y = ds.x.values, ds.y.values
    checked = 0
    for t in ds.time.values:
        items = step_items(cloud_catalog, ds, t)
        got = ds.cloud_prob.sel(time=t).values
        if not items:
            continue
        want = expected_prob(items, x, y)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        assert np.abs(got[ok] - want[ok]).max() <= 0.005 + 1e-6  # uint8 percent storage
        checked += int(ok.sum())
    assert checked > 3 * 1000
    raw = Cube(store).open_dataset(group="clouds", decode=False)
    fill = raw.cloud_prob.attrs.get("_FillValue", raw.cloud_prob.encoding.get("_FillValue"))
    assert raw.cloud_prob.dtype == np.uint8 and fill == 255
    attrs = ds.attrs
    assert attrs["s2cloudless_version"] == "1.7.3"
    assert attrs["processing_resolution"] == 10.0
    assert (attrs["average_over_m"], attrs["dilation_m"]) == (40.0, 20.0)
    assert attrs["thresholds"] == THRESHOLDS


def test_offset_decided_per_baseline(cube, cloud_catalog):
    """05.10 (DN + 1000) and 03.01 (no offset): only the right offset reproduces the layer."""
    store, _ = cube
    ds = layers(store)
    x, y = ds.x.values, ds.y.values
    steps = record(store)["steps"]
    new = pd.Timestamp("2024-01-05T10:30:21")
    old = pd.Timestamp("2024-01-10T10:30:21")
    rads = {r["baseline"]: r["offset"] for s in steps.values() for r in s["l1c_radiometry"]}
    assert rads == {"05.10": -0.1, "03.01": 0.0}
    got_new = ds.cloud_prob.sel(time=new).values
    wrong = expected_prob(step_items(cloud_catalog, ds, new), x, y, offsets=False)
    right = expected_prob(step_items(cloud_catalog, ds, new), x, y)
    ok = np.isfinite(right)
    assert np.abs(got_new[ok] - right[ok]).max() <= 0.005 + 1e-6
    assert np.abs(got_new[ok] - wrong[ok]).max() > 0.1  # told apart
    got_old = ds.cloud_prob.sel(time=old).values
    plain = expected_prob(step_items(cloud_catalog, ds, old), x, y, offsets=False)
    ok = np.isfinite(plain)
    assert np.abs(got_old[ok] - plain[ok]).max() <= 0.005 + 1e-6


def test_pairing_two_tiles_two_orbits_duplicate_processing(cube, cloud_catalog):
    store, summary = cube
    steps = record(store)["steps"]
    day1 = next(v for k, v in steps.items() if k.startswith("2024-01-05"))
    l1c = set(day1["l1c"])
    by_id = {i["id"]: i for i in cloud_catalog.l1c_items}
    tiles = sorted(by_id[i]["properties"]["grid:code"] for i in l1c)
    platforms = sorted(by_id[i]["properties"]["platform"] for i in l1c)
    assert tiles == ["MGRS-32UPU", "MGRS-32UPU", "MGRS-32UQU"]  # two tiles
    assert platforms == ["sentinel-2a", "sentinel-2a", "sentinel-2b"]  # two orbits
    # the granule processed twice: the newer processing (05.10) wins over 05.09
    assert all(by_id[i]["properties"]["s2:processing_baseline"] == "05.10" for i in l1c)
    assert not any("20240104" in i for i in l1c)  # the other day's granule is never taken
    assert len(day1["l2a"]) == 3
    # a step without L1C: NaN layers, named in the summary, recorded
    missing = next(k for k in steps if k.startswith("2024-01-15"))
    assert steps[missing]["l1c"] == [] and steps[missing]["unmatched"]
    assert list(summary["unmatched"]) == [missing]
    ds = layers(store)
    assert np.isnan(ds.cloud_prob.sel(time=pd.Timestamp(missing)).values).all()
    assert np.isnan(ds.cloud_mask.sel(time=pd.Timestamp(missing)).values).all()
    assert str(ds.l1c_item_ids.sel(time=pd.Timestamp(missing)).values) == ""


def test_masks_are_thresholds_after_the_documented_smoothing(cube):
    """cloud_mask = s2cloudless get_mask_from_prob on the stored percent (nodata as 0),
    average_over 40 m and dilation 20 m = 4 and 2 px at 10 m; nodata stays nodata."""
    import cv2

    store, _ = cube
    ds = layers(store)
    disk = {r: cv2.circle(np.zeros((2 * r + 1,) * 2, "uint8"), (r, r), r, 1, -1) for r in (2, 4)}
    conv = disk[4] / disk[4].sum()
    for t in ds.time.values:
        prob = ds.cloud_prob.sel(time=t).values
        nodata = np.isnan(prob)
        percent = np.where(nodata, 0, np.round(prob * 100)).astype("float32")
        smooth = cv2.filter2D(percent, -1, conv, borderType=cv2.BORDER_REFLECT)
        for thr in THRESHOLDS:
            want = cv2.dilate((smooth > thr).astype("uint8"), disk[2]).astype(float)
            want[nodata] = np.nan
            got = ds.cloud_mask.sel(threshold=thr, time=t).values
            np.testing.assert_array_equal(got, want)
    assert np.nansum(ds.cloud_mask.sel(threshold=40.0).values) >= np.nansum(
        ds.cloud_mask.sel(threshold=60.0).values
    )


def test_shadow_falls_away_from_the_sun(cube, cloud_catalog):
    """2024-01-20: a cloud block in the south, sun from the south-south-east at 60 degrees:
    shadow north-north-west of it, where the projection puts it; nothing on the sunward side."""
    store, _ = cube
    ds = layers(store)
    t = pd.Timestamp("2024-01-20T10:30:21")
    cloud = ds.cloud_mask.sel(threshold=40.0, time=t).values == 1
    shadow = ds.shadow_mask.sel(time=t).values == 1
    rows, cols = np.nonzero(cloud)
    assert cloud.any() and shadow.any()
    srows, scols = np.nonzero(shadow)
    sun = np.array([np.sin(np.radians(160.0)), np.cos(np.radians(160.0))])  # (east, north)
    towards_sun = (scols - cols.mean()) * sun[0] - (srows - rows.mean()) * sun[1]
    assert (towards_sun < 0).all()  # every shadow pixel lies away from the sun, none sunward
    # the projection, computed here: heights 200-2000 m at 60 degrees are 115-1155 m of
    # ground distance towards azimuth 340 (away from the sun); 10 m pixels, rows grow south
    away = np.radians(160.0 + 180.0)
    reach = np.zeros_like(cloud)
    h, w = cloud.shape
    for d in np.arange(200 / np.tan(np.radians(60)), 2000 / np.tan(np.radians(60)) + 10, 5.0):
        dr, dc = round(-np.cos(away) * d / 10), round(np.sin(away) * d / 10)
        for r, c in zip(rows, cols, strict=True):
            if 0 <= r + dr < h and 0 <= c + dc < w:
                reach[r + dr, c + dc] = True
    dark = ~cloud & np.isfinite(ds.shadow_mask.sel(time=t).values)
    assert not (shadow & ~reach).any()  # shadow only where the projection reaches
    assert (shadow == (reach & dark)).mean() > 0.98


def test_second_run_is_a_no_op(cube, cloud_catalog):
    store, _ = cube
    head = Cube(store).head()
    summary = clouds(store, cloud_catalog)
    assert summary["snapshot"] is None and summary["computed_time_steps"] == 0
    assert Cube(store).head() == head


def same_layers(a, b):
    assert list(a.time.values) == list(b.time.values)
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert list(a.l1c_item_ids.values) == list(b.l1c_item_ids.values)


def test_incremental_runs_equal_one_run(stac_api, cloud_catalog, cube, tmp_path):
    """Appended steps (cube extended after its end) and inserted steps (before it) get layers
    equal to those of one run over the whole cube: the extending build itself keeps the
    layers current (the stage's flow then has nothing left to do)."""
    one = layers(cube[0])
    appended = tmp_path / "appended.icechunk"
    build(stac_api.url, cloud_catalog, appended, end="2024-01-12")
    assert clouds(appended, cloud_catalog)["computed_time_steps"] == 2
    build(stac_api.url, cloud_catalog, appended)
    assert len(Cube(appended).history()) == 4  # init, build, clouds, build + its layers
    assert clouds(appended, cloud_catalog)["computed_time_steps"] == 0
    same_layers(layers(appended), one)
    inserted = tmp_path / "inserted.icechunk"
    build(stac_api.url, cloud_catalog, inserted, start="2024-01-08")
    clouds(inserted, cloud_catalog)
    build(stac_api.url, cloud_catalog, inserted)  # 2024-01-05 goes before the others
    assert clouds(inserted, cloud_catalog)["computed_time_steps"] == 0
    same_layers(layers(inserted), one)


def test_coarse_processing_resolution(cube, cloud_catalog, tmp_path):
    """At 60 m the layers lie on the cube's grid, close to the 10 m ones."""
    store = tmp_path / "coarse.icechunk"
    shutil.copytree(cube[0], store)
    clouds(store, cloud_catalog, cloud_resolution=60)  # other settings: every step again
    coarse, fine = layers(store), layers(cube[0])
    assert coarse.attrs["processing_resolution"] == 60.0
    assert coarse.cloud_prob.shape == fine.cloud_prob.shape
    t = pd.Timestamp("2024-01-20T10:30:21")
    a = coarse.cloud_mask.sel(threshold=40.0, time=t).values
    b = fine.cloud_mask.sel(threshold=40.0, time=t).values
    ok = np.isfinite(a) & np.isfinite(b)
    assert (a[ok] == b[ok]).mean() > 0.8


def test_masked_view_nans_exactly_the_masked_pixels(cube, tmp_path):
    from stac2cube import export_cube, open_cube
    from stac2cube.clouds import CloudLayerError

    store, _ = cube
    raw = open_cube(store).load()
    view = open_cube(store, cloud_threshold=40).load()
    lay = layers(store)
    cloud = lay.cloud_mask.sel(threshold=40.0).values
    masked = (cloud == 1) | (lay.shadow_mask.values == 1)
    assert masked.any() and (~masked & np.isfinite(raw.B04.values)).any()
    for band in ("B04", "B08"):
        got, was = view[band].values, raw[band].values
        assert np.isnan(got[masked]).all()
        np.testing.assert_array_equal(got[~masked], was[~masked])
    np.testing.assert_array_equal(open_cube(store).B04.values, raw.B04.values)  # not written
    valid = np.isfinite(cloud).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(valid > 0, (cloud == 1).sum((1, 2)) / valid, np.nan)
    np.testing.assert_allclose(view.cloud_fraction.values, want, rtol=1e-6)
    with pytest.raises(CloudLayerError, match="no mask at threshold 55"):
        open_cube(store, cloud_threshold=55)
    out = tmp_path / "masked.nc"
    export_cube(store, "netcdf", out, cloud_threshold=40)
    import xarray as xr

    with xr.open_dataset(out) as exported:
        np.testing.assert_array_equal(exported.B04.values, view.B04.values)


def test_build_switch_and_updates_keep_the_layers(stac_api, tmp_path):
    """``cloud_layers`` on a build writes the layers of its steps in its one commit; a later
    build or update of that cube (no switch) keeps them current with the stored settings;
    the result equals one build, and the stage's own flow on the same cube."""
    from stac2cube.flows.update import update_cube
    from stac2cube.testing.pgstac import start_local_stac_api

    l2a, l1c = standard_cloud_scenes()
    cat = write_cloud_catalog(tmp_path / "cat", l2a, l1c, l1c_collection="sentinel-2-l1c",
                              l2a_collection="sentinel-2-c1-l2a")  # fmt: skip
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        two = tmp_path / "two.icechunk"
        build(api.url, cat, two, end="2024-01-12", cloud_layers=True)
        assert len(Cube(two).history()) == 2  # init + one commit with bands and layers
        assert layers(two).sizes["time"] == 2
        update_cube(store=str(two), end="2024-01-31")  # no switch: kept current
        assert len(Cube(two).history()) == 3
        one = tmp_path / "one.icechunk"
        build(api.url, cat, one, cloud_layers=True)
        same_layers(layers(two), layers(one))
        assert layers(one).attrs["processing_resolution"] == 60.0
        flow = tmp_path / "flow.icechunk"
        build(api.url, cat, flow)
        assert get_cloud_layers(str(flow))["computed_time_steps"] == 4
        same_layers(layers(flow), layers(one))
