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

from stac2cube import get_stac_layers, open_cube
from stac2cube.testing.synthetic import TILE_A

pytestmark = pytest.mark.integration
CLOUD_CLASSES = [1, 3, 8, 9, 10]


def build(stac_url, store, **kw):
    args = dict(
        mission="sentinel-2-l2a", start="2024-01-01", end="2024-01-31", catalog=stac_url,
        collection="sentinel-2-c1-l2a", bands=["B04", "SCL"], store=str(store),
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
