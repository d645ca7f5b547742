"""Building cubes from the real local STAC API: values checked pixel by pixel against the COGs.

Expected values are computed in :mod:`helpers` from the DN read back from the COG files with
rasterio and the documented formulas, never with stac2cube's own loading or radiometry code.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import dn_on_grid, mosaic_first_valid, reflectance

from stac2cube import get_stac_layers, open_cube
from stac2cube.testing.synthetic import TILE_A, demo_bbox, true_reflectance, zone_boundary_bbox

pytestmark = pytest.mark.integration

C1 = "sentinel-2-c1-l2a"
ES_KEY = {
    "B02": "blue",
    "B04": "red",
    "B08": "nir",
    "B11": "swir16",
    "B01": "coastal",
    "SCL": "scl",
}


def build(stac_url, store, **kw):
    args = dict(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end="2024-01-31",
        catalog=stac_url,
        collection=C1,
        store=str(store),
    )
    args.update(kw)
    return get_stac_layers(**args)


def items_of(ds, t):
    return str(ds.item_ids.sel(time=t).values).split(",")


def href(catalog, item_id, band):
    item = next(i for i in catalog.items if i["id"] == item_id)
    key = band if item["collection"].startswith("pc-") else ES_KEY[band]
    return item["assets"][key]["href"]


def expected(catalog, ds, item_ids, band, offset_dn):
    layers = []
    for iid in item_ids:
        dn, _ = dn_on_grid(href(catalog, iid, band), ds.x.values, ds.y.values, 32632)
        layers.append(reflectance(dn, offset_dn))
    return mosaic_first_valid(layers)


@pytest.fixture(scope="module")
def c1_cube(stac_url, tmp_path_factory):
    store = tmp_path_factory.mktemp("c1") / "c1.icechunk"
    summary = build(stac_url, store, bands=["blue", "B04", "nir", "swir16", "B01", "SCL"])
    return store, summary


def test_c1_reflectance_is_exact_for_every_pixel_and_step(c1_cube, synthetic_catalog):
    store, summary = c1_cube
    ds = open_cube(store).load()
    assert summary["time_steps"] == ds.sizes["time"] == 4
    for t in ds.time.values:
        ids = items_of(ds, t)
        for band in ("B02", "B04", "B08", "B11", "B01"):
            want = expected(synthetic_catalog, ds, ids, band, -1000)  # baseline >= 04.00
            np.testing.assert_allclose(
                ds[band].sel(time=t).values,
                want,
                atol=1e-6,
                equal_nan=True,
                err_msg=f"{band} at {t}",
            )
        assert set(np.unique(ds.radiometry_rule.sel(time=t).values.tolist().split(","))) == {
            "s2-offset-1000"
        }


def test_stored_as_scaled_integers_with_cf_attributes(c1_cube):
    store, _ = c1_cube
    raw = open_cube(store, decode=False)
    assert raw.B04.dtype == np.uint16
    assert raw.B04.attrs["scale_factor"] == 1e-4 and raw.B04.attrs["add_offset"] == -0.1
    assert raw.B04.attrs["_FillValue"] == 0
    assert raw.SCL.dtype == np.uint8
    dec = open_cube(store)
    assert dec.SCL.dtype == np.uint8  # classes stay integers
    assert "spatial_ref" in dec.coords and dec.B04.attrs["grid_mapping"] == "spatial_ref"
    assert (
        "32632" in dec.spatial_ref.attrs["crs_wkt"]
        or "UTM zone 32N" in dec.spatial_ref.attrs["crs_wkt"]
    )
    assert raw.B04.encoding["chunks"][0] == 1


def test_grid_is_utm_of_centre_snapped_with_pixel_centre_coords(c1_cube):
    store, _ = c1_cube
    ds = open_cube(store)
    res = 10.0
    from pyproj import CRS

    assert CRS.from_wkt(ds.spatial_ref.attrs["crs_wkt"]).to_epsg() == 32632
    x0 = float(ds.x[0]) - res / 2
    y0 = float(ds.y[0]) + res / 2
    assert x0 % res == 0 and y0 % res == 0
    assert np.allclose(np.diff(ds.x.values), res) and np.allclose(np.diff(ds.y.values), -res)


def test_duplicate_granule_keeps_newest_baseline(c1_cube, synthetic_catalog):
    store, _ = c1_cube
    ds = open_cube(store)
    step = ds.sel(time="2024-01-10")
    ids = items_of(ds, step.time.values[0])
    assert ids == ["S2A_T32UPU_20240110T103021_L2A"]  # baseline 05.10, not the _N0509 copy
    assert step.processing_baseline.values[0] == "05.10"
    # and the pixels come from the 05.10 granule's texture (seed 4), not the 05.09 one (seed 3)
    x0, y1 = TILE_A[2]
    row = int((y1 - float(ds.y[0])) // 10)
    col = int((float(ds.x[0]) - x0) // 10)
    got = float(step.B04.isel(time=0, y=0, x=0))
    assert got == pytest.approx(true_reflectance(4, "B04", np.array(row), np.array(col)), abs=1e-6)
    assert got != pytest.approx(true_reflectance(3, "B04", np.array(row), np.array(col)), abs=1e-6)


def test_same_day_tiles_are_mosaicked_and_fill_nodata(c1_cube, synthetic_catalog):
    store, _ = c1_cube
    ds = open_cube(store).sel(time="2024-01-05").isel(time=0)
    ids = items_of(open_cube(store), ds.time.values)
    assert len(ids) == 2 and ds.n_scenes == 2
    # tile A has a 600 m nodata strip on its east edge (x >= 691800) that tile B covers
    strip = ds.x.values >= TILE_A[2][0] + 1800
    assert strip.any() and (~strip).any()
    a_dn, _ = dn_on_grid(href(synthetic_catalog, ids[0], "B04"), ds.x.values, ds.y.values, 32632)
    assert (a_dn[:, strip] == 0).all()  # A really is empty there
    assert np.isfinite(ds.B04.values[:, strip]).all()  # ... and the cube is filled from B
    b_dn, _ = dn_on_grid(href(synthetic_catalog, ids[1], "B04"), ds.x.values, ds.y.values, 32632)
    np.testing.assert_allclose(
        ds.B04.values[:, strip], reflectance(b_dn, -1000)[:, strip], atol=1e-6
    )


def test_scl_classes_and_cloudy_scene(c1_cube, synthetic_catalog):
    store, _ = c1_cube
    ds = open_cube(store)
    for day in ("2024-01-15", "2024-01-25"):
        step = ds.sel(time=day).isel(time=0)
        (iid,) = items_of(ds, step.time.values)
        want, _ = dn_on_grid(href(synthetic_catalog, iid, "SCL"), ds.x.values, ds.y.values, 32632)
        np.testing.assert_array_equal(step.SCL.values, want)
    assert (ds.SCL.sel(time="2024-01-15").values == 9).mean() > 0.9  # the 85 % cloudy scene
    assert set(np.unique(ds.SCL.sel(time="2024-01-25").values)) == {0, 4}  # 0: nodata strip


def test_max_cloud_filters_scenes(stac_url, tmp_path):
    summary = build(stac_url, tmp_path / "c.icechunk", bands=["B04"], max_cloud=50)
    ds = open_cube(tmp_path / "c.icechunk")
    assert summary["time_steps"] == 3
    assert "2024-01-15" not in {str(t)[:10] for t in ds.time.values}


@pytest.mark.parametrize(
    ("collection", "start", "end", "rules"),
    [
        # Earth Search legacy: 03.01 (no offset) and 04.00 with boa_offset_applied (already removed)
        (
            "sentinel-2-l2a",
            "2021-12-01",
            "2022-02-28",
            {"s2-pre-04.00": 0, "s2-offset-applied-in-cog": 0},
        ),
        # Planetary Computer style: 03.00 (no offset) and 04.00 (offset in DN, no metadata)
        (
            "pc-sentinel-2-l2a",
            "2021-11-01",
            "2022-03-31",
            {"s2-pre-04.00": 0, "s2-offset-1000": -1000},
        ),
    ],
)
def test_baselines_before_and_after_04_per_catalog_style(
    stac_url, tmp_path, synthetic_catalog, collection, start, end, rules
):
    store = tmp_path / "b.icechunk"
    build(stac_url, store, collection=collection, start=start, end=end, bands=["B04", "B11"])
    ds = open_cube(store).load()
    assert ds.sizes["time"] == 2
    assert set(ds.radiometry_rule.values.tolist()) == set(rules)
    for t in ds.time.values:
        rule = str(ds.radiometry_rule.sel(time=t).values)
        ids = items_of(ds, t)
        for band in ("B04", "B11"):
            want = expected(synthetic_catalog, ds, ids, band, rules[rule])
            np.testing.assert_allclose(ds[band].sel(time=t).values, want, atol=1e-6, equal_nan=True)
    # whatever the baseline and catalog convention, the series is continuous: same texture seed
    # formula, true reflectance recovered everywhere
    for t in ds.time.values:
        scene = synthetic_catalog.scene(items_of(ds, t)[0])
        x0, y1 = scene.origin
        rows = ((y1 - ds.y.values) // 10).astype(int)[:, None]
        cols = ((ds.x.values - x0) // 10).astype(int)[None, :]
        np.testing.assert_allclose(
            ds.B04.sel(time=t).values, true_reflectance(scene.seed, "B04", rows, cols), atol=1e-6
        )


def test_two_utm_zones_land_on_one_grid(stac_url, tmp_path, synthetic_catalog):
    # an AOI around 12 E where tiles C (32N) and D (33N) meet; its centre is in zone 32
    store = tmp_path / "z.icechunk"
    build(
        stac_url,
        store,
        bbox=list(zone_boundary_bbox()),
        start="2024-02-01",
        end="2024-02-01",
        bands=["B04"],
    )
    ds = open_cube(store).load()
    assert ds.spatial_ref.attrs["crs_wkt"].count("UTM zone 32N") >= 1
    ids = items_of(ds, ds.time.values[0])
    assert len(ids) == 2
    layers, safe_all = [], None
    for iid in ids:
        dn, safe = dn_on_grid(href(synthetic_catalog, iid, "B04"), ds.x.values, ds.y.values, 32632)
        layers.append(reflectance(dn, -1000))
        covered = dn > 0
        safe_all = (safe | ~covered) if safe_all is None else safe_all & (safe | ~covered)
    want = mosaic_first_valid(layers)
    got = ds.B04.isel(time=0).values
    # both tiles contribute
    from_d = np.isnan(layers[0]) & ~np.isnan(layers[1])
    assert from_d.sum() > 100 and (~np.isnan(layers[0])).sum() > 100
    # exact wherever the reprojected pixel centre is not on a source pixel edge
    np.testing.assert_allclose(got[safe_all], want[safe_all], atol=1e-6, equal_nan=True)
    assert safe_all.mean() > 0.5


def test_corrupt_asset_fails_naming_item_and_asset_and_creates_nothing(tmp_path):
    from stac2cube.errors import ReadError
    from stac2cube.testing.pgstac import start_local_stac_api
    from stac2cube.testing.synthetic import SceneSpec, write_catalog

    a = TILE_A
    import datetime as dt

    scene = SceneSpec(
        a[0], a[1], a[2], dt.datetime(2024, 1, 7, 10, 30, tzinfo=dt.UTC), corrupt="B04"
    )
    cat = write_catalog(tmp_path / "bad", [scene], bands=["B04", "B08"])
    store = tmp_path / "x.icechunk"
    with (
        start_local_stac_api(collections=cat.collections, items=cat.items) as api,
        pytest.raises(ReadError) as err,
    ):
        build(api.url, store, bands=["B04", "B08"])
    assert scene.id in str(err.value) and "B04" in str(err.value)
    assert not store.exists()
    assert not list(tmp_path.glob(".x.icechunk.partial-*"))


def test_existing_cube_is_extended_and_mismatch_leaves_it_untouched(stac_url, tmp_path):
    from stac2cube.errors import GridMismatchError

    store = tmp_path / "e.icechunk"
    build(stac_url, store, bands=["B04"], end="2024-01-12")
    first = open_cube(store).time.values
    before = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file())
    with pytest.raises(GridMismatchError, match=r"resolution 20\.0 != cube's 10\.0"):
        build(stac_url, store, bands=["B04"], resolution=20)
    with pytest.raises(GridMismatchError, match="bands"):
        build(stac_url, store, bands=["B04", "B08"])
    after = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file())
    assert before == after
    summary = build(stac_url, store, bands=["B04"], start="2024-01-13", end="2024-01-31")
    assert summary["added_time_steps"] == 2
    ds = open_cube(store)
    assert list(ds.time.values[: len(first)]) == list(first) and ds.sizes["time"] == 4
    again = build(stac_url, store, bands=["B04"], start="2024-01-13", end="2024-01-31")
    assert again["added_time_steps"] == 0


def test_search_pages_through_results(stac_url):
    from stac2cube.request import make_request
    from stac2cube.search import search_items

    req = make_request(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end="2024-01-31",
        catalog=stac_url,
        collection=C1,
    )
    one_page = search_items(req, page_size=100)
    paged = search_items(req, page_size=2)
    assert len(one_page) == 6
    assert [i["id"] for i in paged] == [i["id"] for i in one_page]
    assert all(i["properties"]["proj:epsg"] == 32632 for i in paged)


def test_decoded_values_are_float_with_nan_for_nodata(c1_cube):
    store, _ = c1_cube
    ds = open_cube(store)
    assert ds.B04.dtype.kind == "f"
    arr = ds.B04.sel(time="2024-01-25").values
    strip = ds.x.values >= TILE_A[2][0] + 1800  # that scene's nodata strip, no other tile
    assert np.isnan(arr[..., strip]).all() and np.isfinite(arr[..., ~strip]).all()
    assert isinstance(ds, xr.Dataset)
