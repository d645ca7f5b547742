"""Request validation and grid maths (no server needed)."""

from __future__ import annotations

import datetime as dt

import pytest
from pyproj import Transformer

from stac2cube.catalogs import EARTH_SEARCH, TERRABYTE, resolve_catalog, running_on_terrabyte
from stac2cube.errors import InvalidRequestError
from stac2cube.grid import grid_for_bbox, snap_bounds, utm_epsg
from stac2cube.missions import SENTINEL_2_L2A, find_asset
from stac2cube.request import make_request

BASE = dict(
    mission="sentinel-2-l2a",
    bbox=[11.5, 48.1, 11.52, 48.11],
    start="2024-01-01",
    end="2024-01-31",
    catalog="http://127.0.0.1:1",
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bbox": [11.5, 48.1, 11.4, 48.2]}, "west (11.5) must be less than east (11.4)"),
        ({"bbox": [11.5, 48.2, 11.6, 48.1]}, "south (48.2) must be less than north (48.1)"),
        ({"bbox": [190, 48, 191, 49]}, "longitude out of range"),
        ({"bbox": [11, -95, 12, 48]}, "latitude out of range"),
        ({"bbox": [11, 48, 12]}, "four finite numbers"),
        ({"bbox": None}, "give an area"),
        (
            {"start": "2024-02-01", "end": "2024-01-01"},
            "end date 2024-01-01 is before start date 2024-02-01",
        ),
        ({"start": "2024-13-01"}, "start must be a date YYYY-MM-DD"),
        ({"mission": "sentinel-3"}, "unknown mission 'sentinel-3'"),
        ({"bands": ["B04", "B99"]}, "unknown band 'B99' for mission sentinel-2-l2a"),
        ({"resolution": 0}, "resolution must be a positive number"),
        ({"resolution": -10}, "resolution must be a positive number"),
        ({"max_cloud": 120}, "max_cloud must be a percentage"),
        ({"catalog": "nowhere"}, "unknown catalog 'nowhere'"),
        ({"crs": "EPSG:4326"}, "is geographic"),
        ({"crs": "EPSG:999999"}, "invalid crs"),
        ({"resampling": "lanczos"}, "unknown resampling 'lanczos'"),
    ],
)
def test_bad_input_is_named(change, message):
    with pytest.raises(InvalidRequestError) as err:
        make_request(**{**BASE, **change})
    assert message in str(err.value)


def test_band_aliases_resolve_to_esa_ids_in_request_order():
    r = make_request(**{**BASE, "bands": ["nir", "red", "B04", "swir16", "scl", "nir08"]})
    assert [b.name for b in r.bands] == ["B08", "B04", "B11", "SCL", "B8A"]


def test_end_defaults_to_today_and_dates_are_whole_inclusive_days():
    r = make_request(**{**BASE, "end": None}, today=dt.date(2024, 3, 1))
    assert r.end == dt.date(2024, 3, 1)
    assert r.datetime_range == "2024-01-01T00:00:00Z/2024-03-01T23:59:59.999Z"


def test_utm_zone_of_centre_and_snapped_bounds():
    assert utm_epsg(11.99, 48.1) == 32632
    assert utm_epsg(12.01, 48.1) == 32633
    assert utm_epsg(-70.0, -33.0) == 32719
    # an AOI straddling 12 E whose centre is east of it goes to zone 33
    g = grid_for_bbox((11.98, 48.1, 12.04, 48.12), 10)
    assert g.epsg == 32633
    # bounds are multiples of the resolution and contain the projected bbox
    assert all(round(v / 10) * 10 == v for v in g.bounds)
    tr = Transformer.from_crs(4326, 32633, always_xy=True)
    x0, y0 = tr.transform(11.98, 48.1)
    assert g.bounds[0] <= x0 and g.bounds[1] <= y0
    assert g.width == round((g.bounds[2] - g.bounds[0]) / 10)
    # pixel centres
    assert g.x[0] == g.bounds[0] + 5 and g.y[0] == g.bounds[3] - 5


def test_snap_bounds_outward_keeps_values_on_grid():
    assert snap_bounds((100.0, 200.0, 120.0, 240.0), 10) == (100.0, 200.0, 120.0, 240.0)
    assert snap_bounds((101.0, 199.0, 119.1, 240.2), 20) == (100.0, 180.0, 120.0, 260.0)


def test_catalogs_and_terrabyte_signal():
    assert resolve_catalog("earth-search") is EARTH_SEARCH
    assert resolve_catalog("auto", environ={}) is EARTH_SEARCH
    env = {"SLURM_JOB_ID": "42", "SLURM_CLUSTER_NAME": "terrabyte"}
    assert running_on_terrabyte(env)
    assert resolve_catalog("auto", environ=env) is TERRABYTE
    assert not running_on_terrabyte({"SLURM_JOB_ID": "42", "SLURM_CLUSTER_NAME": "other"})
    assert resolve_catalog("https://example.org/stac/").name == "custom"
    assert make_request(**BASE, collection="my-s2").collection == "my-s2"
    assert make_request(**{**BASE, "catalog": "earth-search"}).collection == "sentinel-2-c1-l2a"


def test_find_asset_by_key_or_eo_band_name_skips_multiband_and_jp2():
    item = {
        "assets": {
            "visual": {"eo:bands": [{"name": "B04"}, {"name": "B03"}], "type": "image/tiff"},
            "red-jp2": {"eo:bands": [{"name": "red"}], "type": "image/jp2"},
            "red": {"eo:bands": [{"name": "red"}], "type": "image/tiff; application=geotiff"},
            "X4": {"eo:bands": [{"name": "B8A", "common_name": "rededge"}], "type": "image/tiff"},
        }
    }
    assert find_asset(item, SENTINEL_2_L2A.band("B04")) == "red"
    assert find_asset(item, SENTINEL_2_L2A.band("B8A")) == "X4"
    assert find_asset(item, SENTINEL_2_L2A.band("B05")) is None


@pytest.mark.parametrize(
    ("anchor", "message"),
    [
        ([15.0], "anchor must be two finite numbers X Y"),
        (["a", 1], "anchor must be two numbers X Y"),
    ],
)
def test_bad_anchor_is_refused_in_one_line(anchor, message):
    """``--anchor`` / ``anchor``: two numbers, else a one-line error naming the parameter."""
    with pytest.raises(InvalidRequestError, match=message) as err:
        make_request(
            mission="landsat-c2-l2", bbox=[11, 48, 11.1, 48.1], start="2024-01-01", anchor=anchor
        )
    assert "\n" not in str(err.value)
