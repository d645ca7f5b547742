"""Radiometry decisions per item and scene de-duplication / solar-day grouping."""

from __future__ import annotations

import copy
import datetime as dt
import json
from importlib import resources

import pytest

from stac2cube.radiometry import sentinel2_radiometry
from stac2cube.steps import deduplicate, group_by_solar_day, solar_day


def template(name: str) -> dict:
    text = resources.files("stac2cube.testing").joinpath("templates", name).read_text()
    return json.loads(text)["item"]


def test_real_earth_search_c1_item_gets_offset_1000():
    item = template("item_earth-search__sentinel-2-c1-l2a.json")  # real item, PB 05.10
    rad = sentinel2_radiometry(item)
    assert (rad.rule, rad.baseline, rad.offset_dn) == ("s2-offset-1000", "05.10", -1000)
    assert rad.warnings == ()


def test_real_earth_search_legacy_item_follows_flag_and_warns_about_raster_offset():
    item = template("item_earth-search__sentinel-2-l2a.json")  # PB 05.09, flag true, offset -0.1
    rad = sentinel2_radiometry(item)
    assert rad.rule == "s2-offset-applied-in-cog"
    assert rad.offset == 0.0
    assert any("contradicts earthsearch:boa_offset_applied" in w for w in rad.warnings)


def test_real_planetary_computer_item_without_scale_metadata_gets_offset_from_baseline():
    item = template("item_planetary-computer__sentinel-2-l2a.json")  # PB 05.11, no raster:bands
    rad = sentinel2_radiometry(item)
    assert (rad.rule, rad.baseline, rad.offset_dn) == ("s2-offset-1000", "05.11", -1000)


@pytest.mark.parametrize(
    ("baseline", "flag", "when", "rule", "offset_dn", "warns"),
    [
        # the legacy template declares raster:bands offset -0.1: wrong before 04.00, warned
        ("03.01", None, "2021-06-01", "s2-pre-04.00", 0, True),
        ("03.01", True, "2021-06-01", "s2-pre-04.00", 0, True),  # flag wrong: nothing to remove
        ("04.00", True, "2022-02-01", "s2-offset-applied-in-cog", 0, True),
        ("04.00", False, "2022-02-01", "s2-offset-1000", -1000, False),
        # a legacy item without the flag, acquired after Earth Search removed the offset
        ("05.09", None, "2023-02-01", "s2-offset-applied-in-cog-despite-flag", 0, True),
        (None, None, "2021-06-01", "s2-pre-04.00", 0, True),  # baseline from the date, warned
        (None, None, "2022-06-01", "s2-offset-applied-in-cog-despite-flag", 0, True),
    ],
)
def test_each_evidence_combination(baseline, flag, when, rule, offset_dn, warns):
    item = copy.deepcopy(template("item_earth-search__sentinel-2-l2a.json"))
    props = item["properties"]
    props["datetime"] = f"{when}T10:00:00Z"
    for key in (
        "s2:processing_baseline",
        "s2:product_uri",
        "s2:granule_id",
        "s2:datastrip_id",
        "s2:datatake_id",
        "earthsearch:boa_offset_applied",
    ):
        props.pop(key, None)
    if baseline:
        props["s2:processing_baseline"] = baseline
    if flag is not None:
        props["earthsearch:boa_offset_applied"] = flag
    rad = sentinel2_radiometry(item)
    assert (rad.rule, rad.offset_dn) == (rule, offset_dn)
    assert bool(rad.warnings) == warns


def test_baseline_read_from_product_uri_when_property_missing():
    item = copy.deepcopy(template("item_planetary-computer__sentinel-2-l2a.json"))
    del item["properties"]["s2:processing_baseline"]
    assert sentinel2_radiometry(item).baseline == "05.11"


def _item(iid, when, tile="32UPU", pb="05.10", gen="2024-01-05T12:00:00Z", lon=11.5):
    return {
        "id": iid,
        "bbox": [lon - 0.1, 48, lon + 0.1, 48.2],
        "properties": {
            "datetime": when,
            "platform": "sentinel-2a",
            "grid:code": f"MGRS-{tile}",
            "s2:processing_baseline": pb,
            "s2:generation_time": gen,
        },
    }


def test_deduplicate_keeps_newest_baseline_then_newest_generation():
    a = _item("a", "2024-01-05T10:30:21Z", pb="05.09")
    b = _item("b", "2024-01-05T10:30:21.5Z", pb="05.10")
    c = _item("c", "2024-01-05T10:30:21Z", pb="05.10", gen="2024-03-01T00:00:00Z")
    other_tile = _item("d", "2024-01-05T10:30:21Z", tile="32UQU")
    kept, dropped = deduplicate([a, b, c, other_tile])
    assert {i["id"] for i in kept} == {"c", "d"}
    assert {i["id"] for i in dropped} == {"a", "b"}


def test_solar_day_groups_an_overpass_across_utc_midnight():
    # Far east (lon 175): 23:50 UTC on the 4th is local solar 11:30 on the 5th
    late = _item("late", "2024-01-04T23:50:00Z", lon=175)
    early = _item("early", "2024-01-05T00:10:00Z", tile="60XXX", lon=175)
    assert solar_day(late) == solar_day(early) == dt.date(2024, 1, 5)
    steps = group_by_solar_day([early, late])
    assert len(steps) == 1
    assert steps[0].item_ids == ("late", "early")  # mosaic order: acquisition time
    assert steps[0].time == dt.datetime(2024, 1, 4, 23, 50)
