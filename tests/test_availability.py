"""``stac2cube availability``: scenes per day and catalog, against two real local STAC APIs.

The session's API serves every synthetic scene; a second real stac-fastapi-pgstac (started here)
serves only a subset, so "which catalog has what" is checked for real. Expected values are
computed from the item dicts themselves (shapely for footprints, the properties for platform,
tile and cloud cover), without stac2cube's search, grouping or table code.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections import defaultdict

import pytest

from stac2cube.testing.synthetic import demo_bbox, zone_boundary_bbox

pytestmark = pytest.mark.integration

COLLECTION = "sentinel-2-c1-l2a"
START, END = "2024-01-01", "2024-02-28"
UNREACHABLE = "http://127.0.0.1:9/"


def _in_subset(item) -> bool:
    """The second catalog's scenes: tile 32UPU up to 2024-01-11, and tile 32UQV."""
    props = item["properties"]
    tile = props.get("grid:code", "").removeprefix("MGRS-")
    return item["collection"] == COLLECTION and (
        (tile == "32UPU" and props["datetime"] < "2024-01-12") or tile == "32UQV"
    )


@pytest.fixture(scope="module")
def subset_items(synthetic_catalog):
    return [i for i in synthetic_catalog.items if _in_subset(i)]


@pytest.fixture(scope="module")
def subset_url(stac_api, synthetic_catalog, subset_items):
    """A second real STAC API holding only :func:`_in_subset` scenes."""
    from stac2cube.testing.pgstac import start_local_stac_api

    api = start_local_stac_api(collections=synthetic_catalog.collections, items=subset_items)
    yield api.url
    api.stop()


# --- independent expectations ---------------------------------------------------------------


def expected_rows(items, bbox, *, start=START, end=END, max_cloud=100.0, months=None):
    """``{date: row}`` computed straight from the item dicts.

    Every synthetic scene is acquired at about 10:30 UTC near 12 E, so its solar day (UTC +
    longitude / 15 h) is its UTC date; this is asserted, not assumed. Duplicates are items with
    the same platform, tile and sensing minute; of those the highest baseline is the scene.
    """
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    area = box(*bbox)
    days = defaultdict(lambda: defaultdict(list))
    for item in items:
        props = item["properties"]
        when = dt.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
        lon = (item["bbox"][0] + item["bbox"][2]) / 2
        assert when.hour + when.minute / 60 + lon / 15 < 24  # solar day == UTC date
        day = when.date()
        if item["collection"] != COLLECTION or not shape(item["geometry"]).intersects(area):
            continue
        if not dt.date.fromisoformat(start) <= day <= dt.date.fromisoformat(end):
            continue
        if (months and day.month not in months) or props["eo:cloud_cover"] > max_cloud:
            continue
        tile = props["grid:code"].removeprefix("MGRS-")
        days[day][(props["platform"], tile, props["datetime"][:16])].append(item)
    rows = {}
    for day, scenes in days.items():
        kept = [
            max(g, key=lambda i: i["properties"]["s2:processing_baseline"]) for g in scenes.values()
        ]
        clouds = [i["properties"]["eo:cloud_cover"] for i in kept]
        union = unary_union([shape(i["geometry"]) for i in kept])
        rows[day] = {
            "scenes": len(kept),
            "duplicates": sum(len(g) for g in scenes.values()) - len(kept),
            "tiles": sorted(k[1] for k in scenes),
            "platforms": sorted({k[0] for k in scenes}),
            "cloud_min": min(clouds),
            "cloud_mean": sum(clouds) / len(clouds),
            "aoi_cover": union.intersection(area).area / area.area,
        }
    return rows


def assert_rows(frame, catalog, expected):
    rows = frame[frame["catalog"] == catalog.rstrip("/")]
    assert {r["date"] for r in rows.to_dict("records")} == set(expected), catalog
    for row in rows.to_dict("records"):
        want = expected[row["date"]]
        assert row["scenes"] == want["scenes"], row
        assert row["duplicates"] == want["duplicates"], row
        assert row["tiles"].split() == want["tiles"], row
        assert row["platforms"].split() == want["platforms"], row
        assert row["cloud_min"] == pytest.approx(want["cloud_min"])
        assert row["cloud_mean"] == pytest.approx(want["cloud_mean"])
        # planar degrees (expected) against an equal-area projection: equal for km-sized areas
        assert row["aoi_cover"] == pytest.approx(want["aoi_cover"], abs=0.01)
        assert row["error"] == ""


# --- the table ---------------------------------------------------------------------------------


def test_two_catalogs_which_has_what(stac_url, subset_url, synthetic_catalog, subset_items):
    from stac2cube.availability import COLUMNS, scene_table

    frame = scene_table(
        [stac_url, subset_url],
        "sentinel-2-l2a",
        bbox=demo_bbox(),
        start=START,
        end=END,
        collection=COLLECTION,
    )
    assert tuple(frame.columns) == COLUMNS
    full = expected_rows(synthetic_catalog.items, demo_bbox())
    part = expected_rows(subset_items, demo_bbox())
    # the synthetic data hold what this test is about: days only one catalog has, a
    # duplicate processing, a cloudy day, two tiles on one day
    assert set(part) < set(full)
    assert any(r["duplicates"] for r in full.values())
    assert any(r["cloud_mean"] > 50 for r in full.values())
    assert any(r["scenes"] == 2 for r in full.values())
    assert_rows(frame, stac_url, full)
    assert_rows(frame, subset_url, part)
    assert len(frame) == len(full) + len(part)
    # sorted by date, the full catalog (given first) before the subset on the same day
    keys = [(r["date"], r["catalog"] != stac_url) for r in frame.to_dict("records")]
    assert keys == sorted(keys)


def test_coverage_of_an_area_across_two_tiles(stac_url, subset_url, synthetic_catalog):
    from stac2cube.availability import scene_table

    bbox = zone_boundary_bbox()
    frame = scene_table(
        [stac_url, subset_url],
        "sentinel-2-l2a",
        bbox=bbox,
        start=START,
        end=END,
        collection=COLLECTION,
    )
    full = expected_rows(synthetic_catalog.items, bbox)
    part = expected_rows([i for i in synthetic_catalog.items if _in_subset(i)], bbox)
    assert_rows(frame, stac_url, full)
    assert_rows(frame, subset_url, part)
    (day,) = part
    assert full[day]["aoi_cover"] == pytest.approx(1.0)  # tiles C and D together
    assert 0.05 < part[day]["aoi_cover"] < 0.95  # tile C alone


def test_max_cloud_and_season(stac_url, synthetic_catalog):
    from stac2cube.availability import scene_table

    frame = scene_table(
        stac_url,
        "sentinel-2-l2a",
        bbox=demo_bbox(),
        start=START,
        end=END,
        collection=COLLECTION,
        max_cloud=50,
    )
    want = expected_rows(synthetic_catalog.items, demo_bbox(), max_cloud=50)
    assert want != expected_rows(synthetic_catalog.items, demo_bbox())  # the filter matters
    assert_rows(frame, stac_url, want)

    feb = scene_table(
        stac_url,
        "sentinel-2-l2a",
        bbox=zone_boundary_bbox(),
        start=START,
        end=END,
        collection=COLLECTION,
        season="2",
    )
    assert_rows(feb, stac_url, expected_rows(synthetic_catalog.items, zone_boundary_bbox()))
    jan = scene_table(
        stac_url,
        "sentinel-2-l2a",
        bbox=zone_boundary_bbox(),
        start=START,
        end=END,
        collection=COLLECTION,
        season="1",
    )
    assert expected_rows(synthetic_catalog.items, zone_boundary_bbox(), months={1}) == {}
    (row,) = jan.to_dict("records")  # a catalog with nothing still has its row
    assert row["date"] is None and row["scenes"] == 0 and row["error"] == ""


def test_unreachable_catalog_among_several_is_a_row(stac_url, synthetic_catalog):
    from stac2cube.availability import format_table, scene_table

    frame = scene_table(
        [stac_url, UNREACHABLE],
        "sentinel-2-l2a",
        bbox=demo_bbox(),
        start=START,
        end=END,
        collection=COLLECTION,
    )
    assert_rows(frame, stac_url, expected_rows(synthetic_catalog.items, demo_bbox()))
    (bad,) = frame[frame["catalog"] == UNREACHABLE.rstrip("/")].to_dict("records")
    assert bad["scenes"] == 0 and bad["date"] is None
    assert "127.0.0.1:9" in bad["error"] and "did not answer" in bad["error"]
    text = format_table(frame)
    assert (
        f"{UNREACHABLE.rstrip('/')}: error: catalog {UNREACHABLE.rstrip('/')} did not answer"
        in text
    )


def test_single_unreachable_catalog_raises():
    from stac2cube.availability import scene_table
    from stac2cube.errors import CatalogError

    with pytest.raises(CatalogError, match=r"catalog http://127\.0\.0\.1:9 did not answer"):
        scene_table(UNREACHABLE, "sentinel-2-l2a", bbox=demo_bbox(), start=START, end=END)


def test_catalog_without_the_mission(stac_url):
    """Planetary Computer has no Sentinel-2 L1C: a row among several, an error alone.

    Nothing is sent to Planetary Computer: the catalog is ruled out before searching.
    """
    from stac2cube.availability import scene_table
    from stac2cube.errors import InvalidRequestError

    frame = scene_table(
        ["planetary-computer", stac_url],
        "sentinel-2-l1c",
        bbox=demo_bbox(),
        start=START,
        end=END,
        collection=[None, COLLECTION],
    )
    pc = frame[frame["catalog"] == "planetary-computer"].to_dict("records")
    assert len(pc) == 1 and "not offered by catalog planetary-computer" in pc[0]["error"]
    assert frame[frame["catalog"] == stac_url]["scenes"].sum() > 0
    with pytest.raises(InvalidRequestError, match="not offered by catalog planetary-computer"):
        scene_table("planetary-computer", "sentinel-2-l1c", bbox=demo_bbox(), start=START, end=END)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bbox": [12, 48, 11, 49]}, r"bbox west \(12.0\) must be less than east \(11.0\)"),
        ({"mission": "sentinel-3"}, "unknown mission 'sentinel-3'"),
        ({"catalog": "earth-serch"}, "unknown catalog 'earth-serch'"),
        ({"end": "2023-12-01"}, "end date 2023-12-01 is before start date 2024-01-01"),
        ({"season": "13-2"}, "month 13 is not in 1..12"),
        ({"collection": ["a", "b", "c"]}, "one collection for all catalogs or one per catalog"),
    ],
)
def test_bad_input_fails_before_searching(kwargs, message):
    """Same validation as a build; no catalog is contacted (the URL would not answer)."""
    from stac2cube.availability import search_catalogs
    from stac2cube.errors import InvalidRequestError

    args = {
        "mission": "sentinel-2-l2a",
        "bbox": demo_bbox(),
        "start": START,
        "end": END,
        "catalog": UNREACHABLE,
    }
    args.update(kwargs)
    catalogs = [args.pop("catalog"), UNREACHABLE.replace(":9", ":10")]
    mission = args.pop("mission")
    with pytest.raises(InvalidRequestError, match=message):
        search_catalogs(catalogs, mission, **args)


# --- offline pieces ------------------------------------------------------------------------------


def _search(items, *, static=False, error=None):
    """An :class:`AvailabilitySearch` of catalog ``a`` holding ``items`` (and ``b`` failing)."""
    from shapely.geometry import box, mapping

    from stac2cube.availability import AvailabilitySearch, CatalogScenes

    results = [CatalogScenes("a", "http://a", "c", tuple(items))]
    if error:
        results.append(CatalogScenes("b", "http://b", "c", error=error))
    return AvailabilitySearch(
        mission="x",
        area=mapping(box(*demo_bbox())),
        start=dt.date(2024, 1, 1),
        end=dt.date(2024, 2, 28),
        static=static,
        results=tuple(results),
    )


def test_missions_without_cloud_cover_and_static_products(synthetic_catalog):
    from stac2cube.availability import format_table, tabulate

    items = [i for i in synthetic_catalog.items if i["collection"] == COLLECTION]
    no_cloud = []
    for item in items:
        copy = {**item, "properties": dict(item["properties"])}
        del copy["properties"]["eo:cloud_cover"]  # like Sentinel-1 items
        no_cloud.append(copy)
    frame = tabulate(_search(no_cloud, error="catalog http://b did not answer"))
    dated = frame[frame["date"].notna()]
    assert len(dated) > 0
    assert dated["cloud_min"].isna().all() and dated["cloud_mean"].isna().all()
    text = format_table(frame)
    line = next(li for li in text.splitlines() if li.startswith("2024-01-15"))
    assert line.split()[5:7] == [
        "-",
        "-",
    ]  # date catalog scenes tiles platforms cloud-min cloud-mean
    assert "b: error: catalog http://b did not answer" in text

    static = tabulate(_search(items, static=True))
    (row,) = static.to_dict("records")
    assert row["date"] is None
    acquisitions = {
        (
            i["properties"]["platform"],
            i["properties"]["grid:code"],
            i["properties"]["datetime"][:16],
        )
        for i in items
    }
    assert row["scenes"] == len(acquisitions) and row["duplicates"] == len(items) - len(
        acquisitions
    )


def test_cover_fraction_against_shapely():
    from shapely.geometry import box, mapping

    from stac2cube.availability import cover_fraction

    area = mapping(box(11.0, 48.0, 11.1, 48.1))
    half = {"geometry": mapping(box(10.0, 47.0, 11.05, 49.0))}
    other = {"geometry": mapping(box(11.05, 48.05, 12.0, 49.0))}
    assert cover_fraction([half], area) == pytest.approx(0.5, abs=0.005)
    assert cover_fraction([half, other], area) == pytest.approx(0.75, abs=0.005)
    assert cover_fraction([], area) == 0.0
    # an item without geometry counts by its bbox
    assert cover_fraction([{"bbox": [10.0, 47.0, 12.0, 49.0]}], area) == pytest.approx(1.0)


def test_footprint_map_png(synthetic_catalog, subset_items, tmp_path):
    from PIL import Image

    from stac2cube.footprints import footprint_map

    path = footprint_map(
        {"full": synthetic_catalog.items, "subset": subset_items},
        {"type": "Feature", "properties": {}, "geometry": _search([]).area},
        tmp_path / "maps" / "footprints.png",
        title="footprints",
    )
    assert path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 300
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colours) > 20  # not a blank canvas


# --- the command line and the flow --------------------------------------------------------


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_table_csv_and_map(
    stac_url, subset_url, synthetic_catalog, subset_items, tmp_path, capsys
):
    from PIL import Image

    from stac2cube.cli import main

    out_csv, out_png = tmp_path / "scenes.csv", tmp_path / "map.png"
    code = main(
        [
            "availability",
            "--mission",
            "sentinel-2-l2a",
            "--bbox",
            *[str(v) for v in demo_bbox()],
            "--start",
            START,
            "--end",
            END,
            "--catalog",
            stac_url,
            "--catalog",
            subset_url,
            "--collection",
            COLLECTION,
            "--csv",
            str(out_csv),
            "--map",
            str(out_png),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    full = expected_rows(synthetic_catalog.items, demo_bbox())
    part = expected_rows(subset_items, demo_bbox())

    # the printed table: one line per day and catalog, the date printed once per day
    lines = out.splitlines()
    assert lines[0] == f"sentinel-2-l2a, {START} to {END}"
    assert lines[1].split()[:3] == ["date", "catalog", "scenes"]
    body = [li for li in lines[3:] if li.strip()][: len(full) + len(part)]
    day = None
    seen = []
    for line in body:
        cells = line.split()
        if cells[0][:4] == "2024":
            day = dt.date.fromisoformat(cells.pop(0))
        catalog, scenes = cells[0], int(cells[1])
        want = (full if catalog == stac_url else part)[day]
        assert scenes == want["scenes"]
        seen.append((day, catalog))
    assert len(seen) == len(full) + len(part)
    assert (
        f"{stac_url}: {sum(r['scenes'] for r in full.values())} scenes on {len(full)} days" in out
    )

    # the CSV
    rows = _read_csv(out_csv)
    assert len(rows) == len(full) + len(part)
    for row in rows:
        want = (full if row["catalog"] == stac_url else part)[dt.date.fromisoformat(row["date"])]
        assert int(row["scenes"]) == want["scenes"]
        assert row["tiles"].split() == want["tiles"]
        assert float(row["cloud_mean"]) == pytest.approx(want["cloud_mean"], abs=1e-3)
        assert row["error"] == ""

    with Image.open(out_png) as img:
        img.load()
        assert img.format == "PNG" and img.size[0] > 0
    assert f"wrote the footprint map to {out_png}" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bbox", "12", "48", "11", "49"],
            "error: bbox west (12.0) must be less than east (11.0)",
        ),
        (["--mission", "sentinel-3"], "error: unknown mission 'sentinel-3'"),
        (["--catalog", UNREACHABLE], "error: catalog http://127.0.0.1:9 did not answer"),
        (["--dates", "2025-01-01"], "error: dates ['2025-01-01'] lie outside"),
    ],
)
def test_cli_bad_input(args, message, capsys):
    from stac2cube.cli import EXIT_ERROR, main

    base = {
        "--mission": ["sentinel-2-l2a"],
        "--bbox": [str(v) for v in demo_bbox()],
        "--start": [START],
        "--end": [END],
    }
    base[args[0]] = args[1:]
    argv = ["availability"] + [x for k, v in base.items() for x in (k, *v)]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message), err[-1]


def test_cli_needs_an_area(capsys):
    from stac2cube.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["availability", "--mission", "sentinel-2-l2a", "--start", START])
    assert exc.value.code == 2
    assert "one of the arguments --bbox --aoi is required" in capsys.readouterr().err


def test_flow_check_availability(stac_url, subset_url, synthetic_catalog, subset_items, tmp_path):
    from stac2cube.flows.availability import check_availability

    result = check_availability(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start=START,
        end=END,
        catalogs=[stac_url, subset_url, UNREACHABLE],
        collection=COLLECTION,
        map_path=str(tmp_path / "map.png"),
        csv_path=str(tmp_path / "scenes.csv"),
    )
    full = expected_rows(synthetic_catalog.items, demo_bbox())
    part = expected_rows(subset_items, demo_bbox())
    rows = result["rows"]
    assert len(rows) == len(full) + len(part) + 1
    for row in rows:
        if row["catalog"] == UNREACHABLE.rstrip("/"):
            assert row["date"] is None and row["cloud_mean"] is None
            assert "did not answer" in row["error"]
            continue
        want = (full if row["catalog"] == stac_url else part)[dt.date.fromisoformat(row["date"])]
        assert row["scenes"] == want["scenes"]
        assert isinstance(row["scenes"], int)
        assert not math.isnan(row["aoi_cover"])
    assert len(_read_csv(result["csv"])) == len(rows)
    assert (tmp_path / "map.png").stat().st_size > 0
    assert result["table"].splitlines()[0] == f"sentinel-2-l2a, {START} to {END}"
