"""Scene metadata coordinates, valid and cloud fractions, and clipping to the AOI polygon.

Fractions are recomputed with numpy from the pixels the cube holds, inside a polygon mask made
here with shapely (point in polygon for every pixel centre); metadata from the items' own
properties.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import Point, shape
from test_aoi_and_dates import inside
from test_indices import serve_pc_missions

from stac2cube import get_stac_layers, open_cube
from stac2cube.testing.synthetic import TILE_A

pytestmark = pytest.mark.integration
CLOUD_CLASSES = [1, 3, 8, 9, 10]


def build(stac_url, store, **kw):
    args = dict(
        mission="sentinel-2-l2a", start="2024-01-01", end="2024-01-31", catalog=stac_url,
        collection="sentinel-2-c1-l2a", bands=["B04", "SCL"], indices=["NDVI"], store=str(store),
    )  # fmt: skip
    args.update(kw)
    get_stac_layers(**args)
    return open_cube(store).load()


def centre_mask(ds, geometry) -> tuple[np.ndarray, np.ndarray]:
    """(inside, near the outline): pixel centres in the polygon (its vertices projected to the
    cube's UTM zone), and those within a metre of its outline, which may round either way."""
    tr = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    ring = [tr.transform(*p) for p in geometry["coordinates"][0]]
    poly = shape({"type": "Polygon", "coordinates": [ring]})
    points = [[Point(x, y) for x in ds.x.values] for y in ds.y.values]
    mask = np.array([[poly.contains(p) for p in row] for row in points])
    edge = np.array([[poly.exterior.distance(p) < 1.0 for p in row] for row in points])
    return mask, edge


@pytest.fixture(scope="module")
def pc_missions(tmp_path_factory):
    yield from serve_pc_missions(tmp_path_factory)


@pytest.fixture(scope="module")
def diamond():
    # a diamond over tile A's east edge: part of it lies in the nodata strip on 2024-01-25
    return inside(TILE_A, dx=1303, dy=404, size=1000, diamond=True)  # edges miss pixel centres


@pytest.fixture(scope="module")
def cubes(stac_url, tmp_path_factory, diamond):
    root = tmp_path_factory.mktemp("meta")
    plain = build(stac_url, root / "plain.icechunk", aoi=diamond)
    clipped = build(stac_url, root / "clip.icechunk", aoi=diamond, clip=True)
    return plain, clipped


def test_clip_sets_outside_to_nodata_and_keeps_inside(cubes, diamond):
    plain, clipped = cubes
    mask, edge = centre_mask(plain, diamond)
    assert 0.3 < mask.mean() < 0.7
    outside = ~mask & ~edge
    b04 = clipped.B04.values
    assert np.isnan(b04[:, outside]).all()
    np.testing.assert_array_equal(b04[:, mask], plain.B04.values[:, mask])
    assert (clipped.SCL.values[:, outside] == 0).all()  # SCL nodata outside
    np.testing.assert_array_equal(clipped.SCL.values[:, mask], plain.SCL.values[:, mask])
    ndvi = clipped.NDVI.values  # indices too
    assert np.isnan(ndvi[:, outside]).all() and np.isfinite(plain.NDVI.values[:, outside]).any()
    np.testing.assert_array_equal(ndvi[:, mask], plain.NDVI.values[:, mask])


def test_fractions_inside_the_polygon_match_the_pixels(cubes, diamond):
    plain, clipped = cubes
    mask, _ = centre_mask(plain, diamond)
    valid = np.isfinite(plain.B04.values) & mask
    want_valid = valid.sum(axis=(1, 2)) / mask.sum()
    judged = valid & (plain.SCL.values != 0)
    cloudy = np.isin(plain.SCL.values, CLOUD_CLASSES) & judged
    want_cloud = cloudy.sum(axis=(1, 2)) / judged.sum(axis=(1, 2))
    np.testing.assert_allclose(plain.valid_fraction.values, want_valid, atol=1e-6)
    np.testing.assert_allclose(plain.cloud_fraction.values, want_cloud, atol=1e-6)
    # the clipped cube measures the same area
    np.testing.assert_allclose(clipped.valid_fraction.values, want_valid, atol=1e-6)
    # not vacuous: one step is partly empty (nodata strip), one is cloudy (2024-01-15)
    assert want_valid.min() < 0.99 and want_valid.max() == 1.0
    assert want_cloud.max() > 0.5 and want_cloud.min() == 0.0


def test_scene_metadata_coordinates_come_from_the_items(cubes, synthetic_catalog):
    plain, _ = cubes
    by_id = {i["id"]: i for i in synthetic_catalog.items}
    for t in range(plain.sizes["time"]):
        items = [by_id[i] for i in str(plain.item_ids.values[t]).split(",")]
        props = [i["properties"] for i in items]
        assert plain.platform.values[t] == ",".join(dict.fromkeys(p["platform"] for p in props))
        assert plain.datetimes.values[t].split(",")[0].startswith(props[0]["datetime"][:19])
        assert plain.sun_elevation.values[t] == pytest.approx(
            np.mean([p["view:sun_elevation"] for p in props]), rel=1e-6
        )
        assert plain.view_angle.values[t] == pytest.approx(
            np.mean([p["view:incidence_angle"] for p in props]), rel=1e-6
        )
        assert plain.eo_cloud_cover.values[t] == pytest.approx(
            np.mean([p["eo:cloud_cover"] for p in props]), rel=1e-6
        )
        orbits = {o for o in str(plain.relative_orbit.values[t]).split(",") if o}
        uris = [p.get("s2:product_uri", "") for p in props]
        assert orbits == {str(int(u.split("_R")[1][:3])) for u in uris if "_R" in u}
    assert "tile" not in plain.coords  # mosaic mode


STEP_COORDS = ["n_scenes", "item_ids", "datetimes", "platform", "relative_orbit", "orbit_state",
               "sun_elevation", "sun_azimuth", "view_angle", "eo_cloud_cover", "valid_fraction",
               "cloud_fraction"]  # fmt: skip


def assert_same_steps(got, want):
    assert list(got.time.values) == list(want.time.values)
    for name in STEP_COORDS:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    for name in ("B04", "SCL", "NDVI"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def test_appends_and_gap_fills_keep_the_step_coordinates(stac_url, tmp_path, cubes, diamond):
    plain, _ = cubes
    assert plain.sizes["time"] == 4  # 01-05, 01-10, 01-15, 01-25
    ext = tmp_path / "ext.icechunk"
    build(stac_url, ext, aoi=diamond, end="2024-01-12")
    assert_same_steps(build(stac_url, ext, aoi=diamond, start="2024-01-13"), plain)
    gap = tmp_path / "gap.icechunk"
    build(stac_url, gap, aoi=diamond, start="2024-01-20")
    build(stac_url, gap, aoi=diamond, end="2024-01-08")  # before everything: steps shift
    assert_same_steps(build(stac_url, gap, aoi=diamond, start="2024-01-09", end="2024-01-16"),
                      plain)  # fmt: skip
    raw = open_cube(gap, decode=False)
    for name in STEP_COORDS:  # long chunks however short the first write was
        assert raw[name].encoding["chunks"] == (4096,), name
    assert raw.valid_fraction.dtype == raw.cloud_fraction.dtype == np.float32


def test_build_dataset_computes_nothing_and_tiles_are_coordinates(stac_url, diamond):
    import dask

    from stac2cube.dataset import build_dataset
    from stac2cube.load import load_raw
    from stac2cube.request import make_request
    from stac2cube.search import search_items
    from stac2cube.steps import deduplicate, group_steps

    def refuse(*args, **kwargs):
        raise AssertionError("build_dataset computed something")

    req = make_request(mission="sentinel-2-l2a", aoi=diamond, start="2024-01-01",
                       end="2024-01-31", catalog=stac_url, collection="sentinel-2-c1-l2a",
                       bands=["B04"], indices=["NDVI", "EVI"], clip=True,
                       tile_mode="separate", statistics=True)  # fmt: skip
    items, _ = deduplicate(search_items(req))
    steps = group_steps(items, req.tile_mode)
    raw = load_raw(req, [i for s in steps for i in s.items])
    assert "classification" in raw  # SCL read for the statistics' cloud fraction, not stored
    with dask.config.set(scheduler=refuse):
        ds, _ = build_dataset(req, steps, raw)
    assert list(ds.data_vars) == ["B04", "NDVI", "EVI"]
    for name in ("valid_fraction", "cloud_fraction"):
        assert ds[name].chunks is not None and ds[name].dtype == np.float32, name
    assert list(ds.tile.values) == [s.tile for s in steps] and all(ds.tile.values)
    assert ds.NDVI.encoding["dtype"] == "int16" and ds.EVI.encoding["dtype"] == "float32"


def props_of(cat, ds, t: int) -> list[dict]:
    return [cat.item(i)["properties"] for i in str(ds.item_ids.values[t]).split(",")]


def test_landsat_cloud_fraction_from_qa_pixel_and_metadata(pc_missions, monkeypatch):
    from mission_helpers import expected_step
    from test_missions_build import request_on, run_pipeline

    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "synthetic-test-key")
    cat, spec = pc_missions
    request = request_on(spec, "landsat-c2-l2", bands=["red"], resolution=15, statistics=True)
    ds, _, _ = run_pipeline(request)
    assert list(ds.data_vars) == ["red"]  # QA_PIXEL read for the cloud fraction only
    bits = sum(1 << b for b in (1, 2, 3, 4))  # default flags: dilated cloud, cirrus, cloud, shadow
    for t in range(ds.sizes["time"]):
        ids = str(ds.item_ids.values[t]).split(",")
        args = (ds.x.values, ds.y.values, 32632)
        red, safe = expected_step(cat, "landsat-c2-l2", ids, "red", *args)
        qa, _ = expected_step(cat, "landsat-c2-l2", ids, "qa_pixel", *args)
        assert safe.all()  # 15 m centres never on a 30 m pixel edge
        qa = qa.astype("uint16")
        valid = np.isfinite(red)
        judged = valid & (qa != 1)
        want_cloud = ((qa & bits) != 0)[judged].mean()
        assert ds.valid_fraction.values[t] == pytest.approx(valid.mean(), abs=1e-6)
        assert ds.cloud_fraction.values[t] == pytest.approx(want_cloud, abs=1e-6)
        props = props_of(cat, ds, t)
        assert ds.relative_orbit.values[t] == ",".join(
            dict.fromkeys(str(int(p["landsat:wrs_path"])) for p in props)
        )
        assert ds.platform.values[t] == ",".join(dict.fromkeys(p["platform"] for p in props))
        for coord, key in (("sun_elevation", "view:sun_elevation"),
                           ("sun_azimuth", "view:sun_azimuth"), ("view_angle", "view:off_nadir"),
                           ("eo_cloud_cover", "eo:cloud_cover")):  # fmt: skip
            want = np.mean([p[key] for p in props])
            assert ds[coord].values[t] == pytest.approx(want, rel=1e-6), coord
    assert ds.cloud_fraction.values.max() > 0.05  # the cloud band of 2024-01-05


def test_sentinel1_orbit_metadata_and_no_cloud_fraction(pc_missions, monkeypatch):
    from test_missions_build import request_on, run_pipeline

    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "synthetic-test-key")
    cat, spec = pc_missions
    ds, _, _ = run_pipeline(request_on(spec, "sentinel-1-rtc", bands=["vv"]))
    for t in range(ds.sizes["time"]):
        props = props_of(cat, ds, t)
        assert ds.orbit_state.values[t] == props[0]["sat:orbit_state"]
        assert ds.relative_orbit.values[t] == str(props[0]["sat:relative_orbit"])
        assert ds.platform.values[t] == props[0]["platform"].lower()
        want = np.isfinite(ds.vv.values[t]).mean()
        assert ds.valid_fraction.values[t] == pytest.approx(want, abs=1e-6)
    assert np.isnan(ds.cloud_fraction.values).all() and np.isnan(ds.eo_cloud_cover.values).all()
    assert ds.cloud_fraction.dtype == np.float32


def test_streamed_write_without_a_cluster_stores_the_fractions(cubes, stac_url, diamond, tmp_path):
    """The plain dask path (no Dask cluster: chunks stream into the store) writes the lazy
    per-step fractions too, in batches, and they equal the flow-built cube's."""
    import dask

    from stac2cube.dataset import build_dataset
    from stac2cube.load import load_raw
    from stac2cube.request import make_request
    from stac2cube.search import search_items
    from stac2cube.steps import deduplicate, group_by_solar_day
    from stac2cube.store import open_repo, write_time_steps

    plain, _ = cubes
    request = make_request(
        mission="sentinel-2-l2a", aoi=diamond, start="2024-01-01", end="2024-01-31",
        catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04", "SCL"],
    )  # fmt: skip
    steps = group_by_solar_day(deduplicate(search_items(request))[0])
    session = open_repo(tmp_path / "s.icechunk", create=True).writable_session("main")
    with dask.config.set(scheduler="threads"):
        for k in range(0, len(steps), 3):  # batches of 3 steps: several dask chunks each
            batch = steps[k : k + 3]
            ds, _ = build_dataset(
                request, batch, load_raw(request, [i for s in batch for i in s.items])
            )
            write_time_steps(session, ds, first=k == 0, batch_size=3)
    session.commit("streamed")
    import xarray as xr

    got = xr.open_zarr(open_repo(tmp_path / "s.icechunk").readonly_session("main").store,
                       consolidated=False).load()  # fmt: skip
    np.testing.assert_allclose(got.valid_fraction.values, plain.valid_fraction.values, atol=1e-6)
    np.testing.assert_allclose(
        got.cloud_fraction.values, plain.cloud_fraction.values, atol=1e-6, equal_nan=True
    )


def test_qa_band_is_read_only_when_something_uses_it(stac_url, diamond):
    from stac2cube.load import bands_to_load
    from stac2cube.request import make_request

    def loaded(**kw):
        req = make_request(mission="sentinel-2-l2a", aoi=diamond, start="2024-01-01",
                           end="2024-01-31", catalog=stac_url, collection="sentinel-2-c1-l2a",
                           bands=["B04"], **kw)  # fmt: skip
        return [(b.name, b.optional) for b in bands_to_load(req)]

    assert loaded() == [("B04", False)]  # a plain build reads no SCL
    assert loaded(statistics=True) == [("B04", False), ("SCL", True)]
    assert loaded(max_scene_cloud=30) == [("B04", False), ("SCL", False)]
