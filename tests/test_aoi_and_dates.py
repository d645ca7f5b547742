"""AOIs from vector files, one cube per feature, clipping, seasons, explicit dates, tile mode.

Expected values are computed here from the synthetic scenes' own definitions and the COG files
(read with rasterio in :mod:`helpers`), never with stac2cube's grid or loading code.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from helpers import dn_on_grid, mosaic_first_valid, reflectance
from pyproj import Transformer

from stac2cube import get_stac_layers, open_cube
from stac2cube.aoi import polygon_mask, read_features
from stac2cube.errors import EmptySearchError, InvalidRequestError
from stac2cube.request import make_request, parse_season, search_windows
from stac2cube.steps import group_by_solar_day_and_tile
from stac2cube.testing.synthetic import (
    TILE_A,
    TILE_C,
    TILE_D,
    demo_bbox,
)

C1 = "sentinel-2-c1-l2a"


def square(epsg: int, x0: float, y1: float, size: float, *, diamond: bool = False) -> dict:
    """A WGS 84 polygon: a square (or the diamond inscribed in it) in UTM ``epsg`` coordinates."""
    tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    x1, y0 = x0 + size, y1 - size
    if diamond:
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        corners = [(xm, y0), (x1, ym), (xm, y1), (x0, ym), (xm, y0)]
    else:
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return {"type": "Polygon", "coordinates": [[list(tr.transform(x, y)) for x, y in corners]]}


def inside(tile, dx: float = 600, dy: float = 600, size: float = 900, **kw) -> dict:
    _, epsg, (x0, y1) = tile
    return square(epsg, x0 + dx, y1 - dy, size, **kw)


def utm_zone_epsg(geometry: dict) -> int:
    """Northern-hemisphere UTM EPSG of the polygon's bbox centre (the documented default)."""
    lons = [p[0] for p in geometry["coordinates"][0]]
    centre = (min(lons) + max(lons)) / 2
    return 32600 + math.floor((centre + 180) / 6) + 1


def write_gpkg(path, geometries, names, geometry_type="Polygon"):
    import geopandas as gpd
    from shapely.geometry import shape

    frame = gpd.GeoDataFrame(
        {"site": names}, geometry=[shape(g) for g in geometries], crs="EPSG:4326"
    )
    frame.to_file(path, driver="GPKG")
    return path


# --- reading AOIs (no server needed) ---------------------------------------------------------


def test_vector_formats_read_the_same_polygons(tmp_path):
    import geopandas as gpd
    from shapely.geometry import shape

    geoms = [inside(TILE_A), inside(TILE_C), inside(TILE_D)]
    frame = gpd.GeoDataFrame(
        {"site": ["a", "c", "d"]}, geometry=[shape(g) for g in geoms], crs="EPSG:4326"
    )
    paths = {
        "gpkg": tmp_path / "sites.gpkg",
        "shp": tmp_path / "sites.shp",
        "kml": tmp_path / "sites.kml",
        "geojson": tmp_path / "sites.geojson",
    }
    frame.to_file(paths["gpkg"], driver="GPKG")
    frame.to_file(paths["shp"])
    frame.to_file(paths["kml"], driver="KML")
    frame.to_file(paths["geojson"], driver="GeoJSON")
    for kind, path in paths.items():
        features = read_features(path, "site")
        assert [f.name for f in features] == ["a", "c", "d"], kind
        for got, want in zip(features, geoms, strict=True):
            assert shape(got.geometry).symmetric_difference(shape(want)).area < 1e-12, kind
    by_index = read_features(paths["gpkg"])
    assert [f.name for f in by_index] == ["feature-000", "feature-001", "feature-002"]


def test_reprojected_vector_file_is_read_in_wgs84(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box, shape

    _, epsg, (x0, y1) = TILE_A
    utm = gpd.GeoDataFrame({"site": ["a"]}, geometry=[box(x0, y1 - 900, x0 + 900, y1)], crs=epsg)
    utm.to_file(tmp_path / "utm.gpkg", driver="GPKG")
    (feature,) = read_features(tmp_path / "utm.gpkg")
    want = shape(square(epsg, x0, y1, 900))
    assert shape(feature.geometry).symmetric_difference(want).area < 1e-10


def test_bad_vector_files_fail_clearly(tmp_path):
    import geopandas as gpd
    from shapely.geometry import LineString, Point

    empty = gpd.GeoDataFrame({"site": []}, geometry=[], crs="EPSG:4326")
    empty.to_file(tmp_path / "empty.gpkg", driver="GPKG")
    with pytest.raises(InvalidRequestError, match="has no features"):
        read_features(tmp_path / "empty.gpkg")
    points = gpd.GeoDataFrame({"site": ["p"]}, geometry=[Point(11.5, 48.1)], crs="EPSG:4326")
    points.to_file(tmp_path / "points.gpkg", driver="GPKG")
    with pytest.raises(InvalidRequestError, match="is a Point; AOIs must be polygons"):
        read_features(tmp_path / "points.gpkg")
    lines = gpd.GeoDataFrame(
        {"site": ["l"]}, geometry=[LineString([(11.5, 48.1), (11.6, 48.2)])], crs="EPSG:4326"
    )
    lines.to_file(tmp_path / "lines.geojson", driver="GeoJSON")
    with pytest.raises(InvalidRequestError, match="LineString"):
        make_request(
            mission="sentinel-2-l2a", aoi=str(tmp_path / "lines.geojson"), start="2024-01-01"
        )
    path = write_gpkg(tmp_path / "two.gpkg", [inside(TILE_A), inside(TILE_C)], ["x", "x"])
    with pytest.raises(InvalidRequestError, match="share the name"):
        read_features(path, "site")
    with pytest.raises(InvalidRequestError, match=r"no attribute 'region'.*site"):
        read_features(path, "region")
    with pytest.raises(InvalidRequestError, match="not found"):
        read_features(tmp_path / "missing.gpkg")
    (tmp_path / "junk.gpkg").write_bytes(b"not a geopackage")
    with pytest.raises(InvalidRequestError, match="cannot read AOI file"):
        read_features(tmp_path / "junk.gpkg")


def test_polygon_mask_matches_point_in_polygon():
    from shapely.geometry import Point, shape

    geometry = inside(TILE_A, size=700, diamond=True)
    req = make_request(mission="sentinel-2-l2a", aoi=geometry, start="2024-01-01", end="2024-01-02")
    mask = polygon_mask(req.grid, geometry)
    tr = Transformer.from_crs(f"EPSG:{req.grid.epsg}", "EPSG:4326", always_xy=True)
    poly = shape(geometry)
    xs, ys = np.meshgrid(req.grid.x, req.grid.y)
    lon, lat = tr.transform(xs, ys)
    want = np.array(
        [
            [poly.contains(Point(a, b)) for a, b in zip(r1, r2, strict=True)]
            for r1, r2 in zip(lon, lat, strict=True)
        ]
    )
    assert mask.shape == want.shape
    assert 0.3 < want.mean() < 0.7  # a diamond fills half its box
    assert (mask != want).sum() <= 0.01 * want.size  # pixels whose centre is on the edge


# --- dates and seasons (no server needed) -----------------------------------------------------


def test_season_parsing_and_bad_months():
    assert parse_season("6-8") == (6, 7, 8)
    assert parse_season("12-2") == (12, 1, 2)
    assert parse_season("jun-aug") == (6, 7, 8)
    assert parse_season("SON") == (9, 10, 11)
    with pytest.raises(InvalidRequestError, match=r"month 13 is not in 1\.\.12"):
        parse_season("11-13")
    with pytest.raises(InvalidRequestError, match="month 13"):
        make_request(
            mission="sentinel-2-l2a",
            bbox=demo_bbox(),
            start="2018-01-01",
            end="2024-12-31",
            season=[6, 13],
        )
    with pytest.raises(InvalidRequestError, match="not a month"):
        parse_season("6-august2")
    with pytest.raises(InvalidRequestError, match="single-time product"):
        make_request(mission="cop-dem-glo-30", bbox=demo_bbox(), start="2018-01-01", season="6-8")


def test_season_windows_are_one_search_per_year():
    windows = search_windows(dt.date(2018, 1, 1), dt.date(2024, 12, 31), (6, 7, 8))
    assert windows == [(dt.date(y, 6, 1), dt.date(y, 8, 31)) for y in range(2018, 2025)]
    winter = search_windows(dt.date(2019, 1, 15), dt.date(2021, 1, 31), (12, 1, 2))
    assert winter == [
        (dt.date(2019, 1, 15), dt.date(2019, 2, 28)),
        (dt.date(2019, 12, 1), dt.date(2020, 2, 29)),
        (dt.date(2020, 12, 1), dt.date(2021, 1, 31)),
    ]
    days = [dt.date(2024, 1, 5), dt.date(2024, 1, 6), dt.date(2024, 1, 25)]
    assert search_windows(dt.date(2024, 1, 1), dt.date(2024, 1, 31), dates=days) == [
        (dt.date(2024, 1, 5), dt.date(2024, 1, 6)),
        (dt.date(2024, 1, 25), dt.date(2024, 1, 25)),
    ]


def test_dates_and_open_end():
    today = dt.date(2026, 11, 24)
    r = make_request(mission="sentinel-2-l2a", bbox=demo_bbox(), start="2026-01-01", today=today)
    assert r.end == today
    r = make_request(mission="sentinel-2-l2a", bbox=demo_bbox(), dates=["2024-01-25", "2024-01-05"])
    assert (r.start, r.end) == (dt.date(2024, 1, 5), dt.date(2024, 1, 25))
    with pytest.raises(InvalidRequestError, match="outside"):
        make_request(
            mission="sentinel-2-l2a",
            bbox=demo_bbox(),
            start="2024-01-10",
            end="2024-01-31",
            dates=["2024-01-05"],
        )
    with pytest.raises(InvalidRequestError, match="either a season or explicit dates"):
        make_request(
            mission="sentinel-2-l2a",
            bbox=demo_bbox(),
            start="2024-01-01",
            dates=["2024-01-05"],
            season="1-2",
        )


def test_clip_needs_a_polygon_and_filters_are_checked():
    with pytest.raises(InvalidRequestError, match="clip needs a polygon aoi"):
        make_request(mission="sentinel-2-l2a", bbox=demo_bbox(), start="2024-01-01", clip=True)
    with pytest.raises(InvalidRequestError, match=r"min_coverage must be within 0\.\.1"):
        make_request(
            mission="sentinel-2-l2a", bbox=demo_bbox(), start="2024-01-01", min_coverage=1.5
        )
    with pytest.raises(InvalidRequestError, match="sentinel-2-l1c has none"):
        make_request(
            mission="sentinel-2-l1c",
            bbox=demo_bbox(),
            start="2024-01-01",
            max_scene_cloud=20,
        )
    with pytest.raises(InvalidRequestError, match="unknown tile_mode"):
        make_request(
            mission="sentinel-2-l2a", bbox=demo_bbox(), start="2024-01-01", tile_mode="stack"
        )


def test_separate_tiles_with_one_datastrip_time_get_unique_times():
    """Planetary Computer stamps every tile of a datastrip with the datastrip's start."""
    when = "2024-08-23T17:49:01.024000Z"
    items = [
        {
            "id": f"S2A_MSIL2A_20240823T174901_R141_T{t}_X",
            "bbox": [-105, 40, -104, 41],
            "properties": {"datetime": when, "s2:mgrs_tile": t, "platform": "sentinel-2a"},
        }
        for t in ("13TDE", "13TDF", "13TCE")
    ]
    steps = group_by_solar_day_and_tile(items)
    assert [s.tile for s in steps] == ["13TCE", "13TDE", "13TDF"]
    t0 = dt.datetime(2024, 8, 23, 17, 49, 1)
    assert [s.time for s in steps] == [t0 + dt.timedelta(seconds=k) for k in range(3)]
    assert len({s.key for s in steps}) == 3


# --- builds against the local STAC API ---------------------------------------------------------

pytestmark_integration = pytest.mark.integration


def build(stac_url, store, **kw):
    args = dict(
        mission="sentinel-2-l2a",
        start="2024-01-01",
        end="2024-02-28",
        catalog=stac_url,
        collection=C1,
        bands=["B04", "SCL"],
        store=str(store),
    )
    args.update(kw)
    return get_stac_layers(**args)


@pytest.mark.integration
def test_geopackage_with_three_polygons_builds_three_cubes_on_their_zones(
    stac_url, synthetic_catalog, tmp_path
):
    geoms = [inside(TILE_A), inside(TILE_C), inside(TILE_D)]
    gpkg = write_gpkg(tmp_path / "sites.gpkg", geoms, ["munich", "east 32", "west 33"])
    summary = build(
        stac_url,
        tmp_path / "cubes" / "{name}.icechunk",
        aoi=str(gpkg),
        per_feature=True,
        name_field="site",
    )
    assert set(summary["cubes"]) == {"munich", "east_32", "west_33"}
    for name, geometry in zip(["munich", "east_32", "west_33"], geoms, strict=True):
        store = tmp_path / "cubes" / f"{name}.icechunk"
        assert summary["cubes"][name]["store"] == str(store)
        ds = open_cube(store)
        from pyproj import CRS

        epsg = CRS.from_wkt(ds.spatial_ref.attrs["crs_wkt"]).to_epsg()
        assert epsg == utm_zone_epsg(geometry), name
        # the feature's own area, projected independently, lies inside the cube's grid
        tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        px, py = tr.transform(*zip(*geometry["coordinates"][0], strict=True))
        assert ds.x.min() - 5 <= min(px) and max(px) <= ds.x.max() + 5, name
        assert ds.y.min() - 5 <= min(py) and max(py) <= ds.y.max() + 5, name
    assert {str(t)[:10] for t in open_cube(tmp_path / "cubes/west_33.icechunk").time.values} == {
        "2024-02-01"
    }
    # pixel values of the zone-33 cube: tiles C (32N) and D (33N) of that day, mosaicked in order
    ds = open_cube(tmp_path / "cubes/west_33.icechunk").isel(time=0).load()
    ids = str(ds.item_ids.values).split(",")
    assert any("33UUP" in i for i in ids)
    layers, safe_all = [], np.ones(ds.B04.shape, bool)
    for iid in ids:
        item = next(i for i in synthetic_catalog.items if i["id"] == iid)
        dn, safe = dn_on_grid(item["assets"]["red"]["href"], ds.x.values, ds.y.values, 32633)
        layers.append(reflectance(dn, -1000))
        safe_all &= safe
    want = mosaic_first_valid(layers)
    np.testing.assert_allclose(ds.B04.values[safe_all], want[safe_all], atol=1e-6, equal_nan=True)


@pytest.mark.integration
def test_a_feature_missing_every_scene_fails_before_any_store_is_written(stac_url, tmp_path):
    far = square(32631, 500000, 5000000, 900)  # France: no synthetic scene there
    gpkg = write_gpkg(tmp_path / "sites.gpkg", [inside(TILE_A), far], ["munich", "nowhere"])
    with pytest.raises(EmptySearchError, match="feature 'nowhere'"):
        build(
            stac_url,
            tmp_path / "{name}.icechunk",
            aoi=str(gpkg),
            per_feature=True,
            name_field="site",
        )
    assert not list(tmp_path.glob("*.icechunk")) and not list(tmp_path.glob(".*partial*"))


@pytest.mark.integration
def test_clip_to_a_polygon_missing_all_scenes_is_an_error(stac_url, tmp_path):
    far = square(32631, 500000, 5000000, 900)
    with pytest.raises(EmptySearchError, match="no sentinel-2-c1-l2a scenes"):
        build(stac_url, tmp_path / "c.icechunk", aoi=far, clip=True)
    assert not (tmp_path / "c.icechunk").exists()


@pytest.mark.integration
def test_explicit_dates_keep_only_those_days(stac_url, tmp_path):
    summary = build(
        stac_url,
        tmp_path / "d.icechunk",
        bbox=list(demo_bbox()),
        start=None,
        end=None,
        dates=["2024-01-05", "2024-01-25"],
    )
    ds = open_cube(tmp_path / "d.icechunk")
    assert [str(t)[:10] for t in ds.time.values] == ["2024-01-05", "2024-01-25"]
    assert summary["time_steps"] == 2


@pytest.mark.integration
def test_season_across_years_keeps_only_its_months(stac_url, season_api, tmp_path):
    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 100, y1 - 500)
    e, n = tr.transform(x0 + 500, y1 - 100)
    build(
        stac_url,
        tmp_path / "winter.icechunk",
        bbox=[w, s, e, n],
        start="2019-01-01",
        end="2021-12-31",
        collection="season-s2",
        season="12-2",
    )
    ds = open_cube(tmp_path / "winter.icechunk")
    got = [str(t)[:7] for t in ds.time.values]
    want = [f"{sc.datetime:%Y-%m}" for sc in season_api.scenes if sc.datetime.month in (12, 1, 2)]
    assert got == sorted(want) and len(got) == 9


@pytest.mark.integration
def test_separate_tile_mode_keeps_each_tile_as_a_step(stac_url, synthetic_catalog, tmp_path):
    build(
        stac_url,
        tmp_path / "t.icechunk",
        bbox=list(demo_bbox()),
        end="2024-01-05",
        tile_mode="separate",
        bands=["B04"],
    )
    ds = open_cube(tmp_path / "t.icechunk").load()
    assert list(ds.tile.values) == ["32UPU", "32UQU"]
    for t in range(2):
        (iid,) = str(ds.item_ids.values[t]).split(",")
        item = next(i for i in synthetic_catalog.items if i["id"] == iid)
        assert ds.tile.values[t] in iid
        dn, safe = dn_on_grid(item["assets"]["red"]["href"], ds.x.values, ds.y.values, 32632)
        np.testing.assert_allclose(
            ds.B04.values[t][safe], reflectance(dn, -1000)[safe], atol=1e-6, equal_nan=True
        )
    # tile A's nodata strip stays empty in its own step: no mosaic
    strip = ds.x.values >= 691800
    assert (
        np.isnan(ds.B04.values[0][:, strip]).all()
        and not np.isnan(ds.B04.values[1][:, strip]).any()
    )


@pytest.mark.integration
def test_coverage_and_cloud_filters_drop_the_steps_the_pixels_say(stac_url, tmp_path):
    bbox = list(demo_bbox())
    build(stac_url, tmp_path / "all.icechunk", bbox=bbox, end="2024-01-31")
    ds = open_cube(tmp_path / "all.icechunk").load()
    # independent fractions from the stored pixels (the AOI is the whole bbox grid)
    valid = np.isfinite(ds.B04.values)
    valid_fraction = valid.mean(axis=(1, 2))
    cloudy = np.isin(ds.SCL.values, [1, 3, 8, 9, 10]) & valid
    cloud_fraction = cloudy.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    keep = (valid_fraction >= 0.95) & ~(cloud_fraction * 100 > 50)
    assert (valid_fraction < 0.95).any() and (cloud_fraction > 0.5).any()  # both filters bite
    summary = build(
        stac_url, tmp_path / "f.icechunk", bbox=bbox, end="2024-01-31", min_coverage=0.95,
        max_scene_cloud=50,
    )  # fmt: skip
    kept = open_cube(tmp_path / "f.icechunk")
    assert list(kept.time.values) == list(ds.time.values[keep])
    assert summary["filtered_time_steps"] == int((~keep).sum())
    np.testing.assert_allclose(kept.valid_fraction.values, valid_fraction[keep], atol=1e-6)


@pytest.mark.integration
def test_every_step_filtered_out_of_a_new_cube_writes_nothing(stac_url, tmp_path):
    with pytest.raises(EmptySearchError, match="no time step passed the filters"):
        build(
            stac_url, tmp_path / "none.icechunk", bbox=list(demo_bbox()), start=None, end=None,
            dates=["2024-01-15"], max_scene_cloud=10,
        )  # fmt: skip
    assert not (tmp_path / "none.icechunk").exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.integration
def test_filtered_steps_are_remembered_and_not_read_again(stac_url, tmp_path):
    from stac2cube.store import history, read_state

    store = tmp_path / "r.icechunk"
    args = dict(bbox=list(demo_bbox()), start="2024-01-01", max_scene_cloud=50, statistics=False)
    build(stac_url, store, end="2024-01-12", **args)
    days = [str(t)[:10] for t in open_cube(store).time.values]
    assert days == ["2024-01-05", "2024-01-10"]
    # the cloudy 2024-01-15 scene is read, dropped and recorded; the pixels stay as they were
    summary = build(stac_url, store, end="2024-01-16", **args)
    assert summary["filtered_time_steps"] == 1 and summary["added_time_steps"] == 0
    assert [str(t)[:10] for t in open_cube(store).time.values] == days
    (entry,) = read_state(store).request["rejected"]
    assert entry["key"] == "2024-01-15" and entry["items"][0]["id"].endswith("20240115T103021_L2A")
    commits = len(history(store))
    # the next run plans nothing for it: no read, no commit
    again = build(stac_url, store, end="2024-01-16", **args)
    assert again["snapshot"] is None and len(history(store)) == commits
