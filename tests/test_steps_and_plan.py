"""Which scenes make which time step, and what an update rewrites.

* duplicates are told apart by the identifiers the items carry (datatake, datastrip, footprint),
  not by a sensing minute: partial granules of one tile from two datastrips are both kept, and
  two processings of one granule whose times straddle a minute are one acquisition;
* a catalog's ``updated``/``created`` touch is no reprocessing (Landsat, Sentinel-1, DEM);
* a scene that left the catalog never removes pixels: its step is kept as it is;
* the time index stays unique over any sequence of runs with ``tile_mode="separate"``.

Unit tests use real recorded items (``tests/data/stac``); the builds use the real local STAC API
and real COGs, with expected pixels read from the COG files with rasterio.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import dn_on_grid, reflectance, tree_digest

from stac2cube import get_stac_layers, open_cube
from stac2cube.plan import plan_changes, stamp_ledger
from stac2cube.steps import deduplicate, group_steps
from stac2cube.store import head_snapshot, read_state
from stac2cube.testing.synthetic import TILE_A, SceneSpec, make_collection, write_catalog

DATA = Path(__file__).parent / "data" / "stac"


def recorded(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text())["features"]


def ledger_of(steps) -> list[dict]:
    """The ledger a build writes for ``steps`` (ids, then the stamps the build adds)."""
    entries = [
        {
            "time": s.time.isoformat(),
            "solar_day": s.solar_day.isoformat(),
            "items": [{"id": i["id"]} for i in s.items],
        }
        for s in steps
    ]
    stamp_ledger(entries, steps)
    return entries


def halves(item: dict) -> tuple[dict, dict]:
    """Copies of ``item`` whose footprints are its bbox's north and south halves."""
    w, s, e, n = item["bbox"]
    out = []
    for lo, hi in ((s + (n - s) / 2, n), (s, s + (n - s) / 2)):
        part = copy.deepcopy(item)
        part["bbox"] = [w, lo, e, hi]
        ring = [[w, lo], [e, lo], [e, hi], [w, hi], [w, lo]]
        part["geometry"] = {"type": "Polygon", "coordinates": [ring]}
        out.append(part)
    return out[0], out[1]


# --- duplicates (issue 10, item 5) ---------------------------------------------------------------


def test_partial_granules_of_two_datastrips_are_both_kept():
    # Earth Search Collection-1 names an item by its datastrip's sensing start: a tile cut by a
    # datastrip boundary comes as two items of one datatake, sensed in the same minute
    real = recorded("earth-search_s2-c1-l2a_T13TDE_2024-04.json")[0]
    north, south = halves(real)
    props = south["properties"]
    props["s2:datastrip_id"] = props["s2:datastrip_id"].replace(
        "S20240422T174753", "S20240422T175258"
    )
    props["datetime"] = "2024-04-22T17:53:09.512000Z"
    south["id"] = "S2A_T13TDE_20240422T175258_L2A"
    assert north["properties"]["datetime"][:16] == props["datetime"][:16]
    kept, dropped = deduplicate([north, south])
    assert sorted(i["id"] for i in kept) == sorted([north["id"], south["id"]]) and dropped == []


def test_true_duplicates_straddling_a_minute_are_one_acquisition():
    # Earth Search legacy serves one granule twice (_0 and _1): the same datastrip, reprocessed
    real = recorded("earth-search_s2-l2a_landsat_2023-10-08.json")[0]
    old, new = copy.deepcopy(real), copy.deepcopy(real)
    old["properties"].update(datetime="2023-10-08T18:02:59.991000Z", **{"s2:sequence": "0"})
    new["id"] = "S2A_13TDE_20231008_1_L2A"
    new["properties"].update(
        {
            "datetime": "2023-10-08T18:03:00.012000Z",
            "s2:sequence": "1",
            "s2:processing_baseline": "05.10",
            "s2:generation_time": "2024-02-01T10:00:00.000000Z",
            "s2:datastrip_id": "S2A_OPER_MSI_L2A_DS_2APS_20240201T100000_S20231008T175927_N05.10",
        }
    )
    kept, dropped = deduplicate([old, new])
    assert [i["id"] for i in kept] == [new["id"]] and [i["id"] for i in dropped] == [old["id"]]


def test_reprocessed_granule_under_a_new_id_is_still_a_duplicate():
    # Planetary Computer ids carry the generation time: a reprocessing comes with a new id
    real = recorded("planetary-computer_s2-l2a_T13TDE_2024-08.json")[1]
    new = copy.deepcopy(real)
    new["id"] = real["id"].replace("20240824T013055", "20250301T090000")
    new["properties"].update(
        {
            "s2:processing_baseline": "05.12",
            "s2:generation_time": "2025-03-01T09:00:00.000000Z",
            "s2:product_uri": real["properties"]["s2:product_uri"]
            .replace("N0511", "N0512")
            .replace("20240824T013055", "20250301T090000"),
        }
    )
    kept, _ = deduplicate([real, new])
    assert [i["id"] for i in kept] == [new["id"]]


# --- updates: only a real reprocessing replaces a day (item 8) -----------------------------------


def touched(item: dict) -> dict:
    """``item`` as a catalog serves it after a metadata touch (re-ingest): nothing reprocessed."""
    out = copy.deepcopy(item)
    out["properties"]["updated"] = "2030-01-01T00:00:00Z"
    out["properties"]["created"] = "2030-01-01T00:00:00Z"
    return out


@pytest.mark.parametrize(
    "name",
    [
        "earth-search_s2-l2a_landsat_2023-10-08.json",  # Landsat (Earth Search)
        "planetary-computer_landsat-c2-l2_2025-07-22.json",
        "planetary-computer_s1-rtc_2022-01_reserved-by-earthdaily.json",
        "earth-search_cop-dem-glo-30.json",
    ],
)
def test_a_metadata_touch_in_the_catalog_replaces_nothing(name):
    items = [i for i in recorded(name) if not i["collection"].startswith("sentinel-2")][:3]
    steps = group_steps(deduplicate(items)[0])
    plan = plan_changes(group_steps(deduplicate([touched(i) for i in items])[0]), ledger_of(steps))
    assert plan.empty and plan.unchanged == len(steps)


def test_a_real_landsat_reprocessing_replaces_its_day():
    (item,) = [
        i for i in recorded("earth-search_s2-l2a_landsat_2023-10-08.json") if "LC08" in i["id"]
    ]
    ledger = ledger_of(group_steps([item]))
    again = copy.deepcopy(item)
    again["properties"]["landsat:product_generated"] = "2025-02-01T00:00:00Z"
    plan = plan_changes(group_steps([again]), ledger)
    assert len(plan.replace) == 1


def test_a_vanished_scene_keeps_its_step():
    a, b = recorded("earth-search_s2-c1-l2a_T13TDE_2024-04.json")[:2]
    b = copy.deepcopy(b)  # another tile of a's day
    b["properties"].update(datetime=a["properties"]["datetime"], **{"grid:code": "MGRS-13TEE"})
    ledger = ledger_of(group_steps([a, b]))
    reprocessed = copy.deepcopy(a)
    reprocessed["properties"]["s2:generation_time"] = "2025-01-01T00:00:00.000000Z"
    plan = plan_changes(group_steps([reprocessed]), ledger)  # b left the catalog
    assert plan.empty and plan.kept == {ledger[0]["solar_day"]: (b["id"],)}


def test_a_scene_superseded_under_a_new_id_is_not_vanished():
    real = recorded("planetary-computer_s2-l2a_T13TDE_2024-08.json")[1]
    ledger = ledger_of(group_steps([real]))
    new = copy.deepcopy(real)
    new["id"] = real["id"].replace("20240824T013055", "20250301T090000")
    new["properties"]["s2:generation_time"] = "2025-03-01T09:00:00.000000Z"
    plan = plan_changes(group_steps([new]), ledger)
    assert len(plan.replace) == 1 and plan.kept == {}


def test_an_item_renamed_without_reprocessing_is_no_news():
    real = recorded("planetary-computer_s2-l2a_T13TDE_2024-08.json")[1]
    ledger = ledger_of(group_steps([real]))
    renamed = touched(real)
    renamed["id"] = real["id"] + "-v2"
    plan = plan_changes(group_steps([renamed]), ledger)
    assert plan.empty and plan.unchanged == 1


# --- unique time index (item 3) -------------------------------------------------------------------


def test_a_late_tile_never_takes_the_time_of_a_step_in_the_cube():
    real = recorded("planetary-computer_s2-l2a_T13TDE_2024-08.json")[1]
    tiles = []
    for tile in ("13TDE", "13TDF", "13TEE"):  # one datastrip, one time stamp for every tile
        item = copy.deepcopy(real)
        item["id"] = real["id"].replace("T13TDE", f"T{tile}")
        item["properties"]["s2:mgrs_tile"] = tile
        tiles.append(item)
    first = group_steps([tiles[0], tiles[2]], "separate")
    plan = plan_changes(group_steps(tiles, "separate"), ledger_of(first))
    (late,) = plan.add
    assert late.tile == "13TDF"
    assert late.time.isoformat() not in {s.time.isoformat() for s in first}


# --- builds on the real local STAC API --------------------------------------------------------------

X0, Y1 = TILE_A[2]  # upper-left corner of tile A (EPSG:32632)


def wgs84_box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    w, s = tr.transform(x0, y0)
    e, n = tr.transform(x1, y1)
    return [w, s, e, n]


#: a bbox over two 600 m granules side by side (west: origin X0, east: X0 + 600)
BBOX = wgs84_box(X0 + 60, Y1 - 540, X0 + 1140, Y1 - 60)


def scene(tile: str, x0: float, when: str, seed: int, **kw) -> SceneSpec:
    t = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
    return SceneSpec(tile, 32632, (x0, Y1), t, size=60, seed=seed, **kw)


def ids(s2: str, datatake: str, datastrip: str, baseline: str = "05.10") -> dict[str, str]:
    """Real-format Sentinel-2 identifiers (see tests/data/stac)."""
    n = baseline.replace(".", "")
    return {
        "s2:datatake_id": f"GS2{s2}_{datatake}_045000_N{baseline}",
        "s2:datastrip_id": f"S2{s2}_OPER_MSI_L2A_DS_2APS_20240601T000000_S{datastrip}_N{baseline}",
        "s2:product_uri": f"S2{s2}_MSIL2A_{datatake}_N{n}_R065_T32UPU_20240601T000000.SAFE",
    }


def serve(api, root: Path, collection: str, scenes: list[SceneSpec]) -> dict[str, dict]:
    scenes = [replace(s, collection=collection) for s in scenes]
    cat = write_catalog(root, scenes, bands=["B04"])
    api.load_collections([make_collection("earth-search-c1", collection, cat.items)])
    api.load_items(cat.items)
    return {i["id"]: i for i in cat.items}


def build(api, store: Path, collection: str, day: str, **kw) -> dict:
    return get_stac_layers(
        mission="sentinel-2-l2a",
        bbox=BBOX,
        start=day,
        end=day,
        catalog=api.url,
        collection=collection,
        bands=["B04"],
        store=str(store),
        **kw,
    )


def pixels(ds, item: dict) -> np.ndarray:
    """Expected B04 of ``item`` on the cube's grid, from its COG (NaN outside it)."""
    dn, _ = dn_on_grid(item["assets"]["red"]["href"], ds.x.values, ds.y.values, 32632)
    return reflectance(dn, -1000)


@pytest.fixture(scope="module")
def dups(stac_api, tmp_path_factory):
    """Partial granules of one tile from two datastrips (2024-03-01), and one granule processed
    twice with times either side of 10:31 (2024-03-11)."""
    west = scene("32UPU", X0, "2024-03-01T10:30:21", 1,
                 extra_properties=ids("A", "20240301T102901", "20240301T102955"))  # fmt: skip
    east = scene("32UPU", X0 + 600, "2024-03-01T10:30:48", 2,
                 extra_properties=ids("A", "20240301T102901", "20240301T103031"))  # fmt: skip
    strip = ("A", "20240311T102901", "20240311T102955")  # the same datastrip, reprocessed
    old = scene("32UPU", X0, "2024-03-11T10:30:59.900", 3, baseline="05.09",
                extra_properties=ids(*strip, "05.09"))  # fmt: skip
    new = scene("32UPU", X0, "2024-03-11T10:31:00.200", 4, extra_properties=ids(*strip))
    items = serve(stac_api, tmp_path_factory.mktemp("dups"), "steps-dups", [west, east, old, new])
    return stac_api, items, (west, east, old, new)


@pytest.mark.integration
def test_build_keeps_both_partial_granules_of_a_tile(dups, tmp_path):
    api, items, (west, east, _, _) = dups
    build(api, tmp_path / "p.icechunk", "steps-dups", "2024-03-01")
    ds = open_cube(tmp_path / "p.icechunk").load()
    assert sorted(str(ds.item_ids.values[0]).split(",")) == sorted([west.id, east.id])
    w, e = pixels(ds, items[west.id]), pixels(ds, items[east.id])
    want = np.where(np.isnan(w), e, w)
    assert np.isfinite(want).all()  # the two halves cover the area between them
    np.testing.assert_allclose(ds.B04.values[0], want, atol=1e-6)


@pytest.mark.integration
def test_build_keeps_the_newest_of_duplicates_across_a_minute(dups, tmp_path):
    api, items, (_, _, old, new) = dups
    build(api, tmp_path / "d.icechunk", "steps-dups", "2024-03-11")
    ds = open_cube(tmp_path / "d.icechunk").load()
    assert str(ds.item_ids.values[0]) == new.id != old.id
    assert ds.processing_baseline.values[0] == "05.10"
    want = pixels(ds, items[new.id])
    assert np.isfinite(want).any() and (want != pixels(ds, items[old.id])).any()
    np.testing.assert_allclose(ds.B04.values[0], want, atol=1e-6, equal_nan=True)


@pytest.mark.integration
def test_late_tile_of_a_datastrip_in_the_cube_gets_its_own_time(stac_api, tmp_path):
    when = "2024-04-05T10:30:21"  # every tile stamped with the datastrip's time
    a, c = scene("32UPU", X0, when, 11), scene("32UQU", X0, when, 13)
    late = scene("32UPV", X0, when, 12)  # sorts between the two
    items = serve(stac_api, tmp_path / "cat", "steps-separate", [a, c])
    store = tmp_path / "s.icechunk"
    build(stac_api, store, "steps-separate", "2024-04-05", tile_mode="separate")
    items |= serve(stac_api, tmp_path / "late", "steps-separate", [late])
    s = build(stac_api, store, "steps-separate", "2024-04-05", tile_mode="separate")
    assert (s["added_time_steps"], s["time_steps"]) == (1, 3)
    ds = open_cube(store).load()
    times = list(ds.time.values)
    assert len(set(times)) == 3 and times == sorted(times)
    assert sorted(ds.tile.values) == ["32UPU", "32UPV", "32UQU"]
    for k in range(3):
        (iid,) = str(ds.item_ids.values[k]).split(",")
        assert ds.tile.values[k] in iid
        np.testing.assert_allclose(ds.B04.values[k], pixels(ds, items[iid]), atol=1e-6)


@pytest.mark.integration
def test_a_scene_that_left_the_catalog_keeps_its_pixels(stac_api, tmp_path):
    import psycopg

    a = scene("32UPU", X0, "2024-05-05T10:30:21", 21)
    b = scene("32UQU", X0 + 600, "2024-05-05T10:30:25", 22)
    items = serve(stac_api, tmp_path / "cat", "steps-vanish", [a, b])
    store = tmp_path / "v.icechunk"
    build(stac_api, store, "steps-vanish", "2024-05-05")
    head, digest = head_snapshot(store), tree_digest(store)
    # b leaves the catalog; a late tile over a's half arrives for the same day
    with psycopg.connect(stac_api.dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        conn.execute("SELECT delete_item(%s, %s)", (b.id, "steps-vanish"))
    serve(
        stac_api, tmp_path / "late", "steps-vanish", [scene("32UPV", X0, "2024-05-05T10:30:23", 23)]
    )
    s = build(stac_api, store, "steps-vanish", "2024-05-05")
    assert s["snapshot"] is None and s["replaced_time_steps"] == 0
    assert head_snapshot(store) == head and tree_digest(store) == digest
    ds = open_cube(store).load()
    east = ~np.isnan(pixels(ds, items[b.id]))
    assert east.any()
    np.testing.assert_allclose(ds.B04.values[0][east], pixels(ds, items[b.id])[east], atol=1e-6)
    assert read_state(store).ledger[0]["items"][1]["id"] == b.id
