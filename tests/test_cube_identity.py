"""A cube's identity: its exact grid and every option that changes pixel values.

Issue 10, items 1, 2 and 4: a request whose grid differs from the cube's by any amount, or whose
pixel options (``sar_scale``, ``mask_clouds``, ``scl_classes``, ``qa_flags``, ``resampling``,
``clip``) differ, is refused naming the difference with the store byte-identical; an append
writes only per-step variables; a 30 m Landsat cube lies on Landsat's own pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import tree_digest
from pyproj import Transformer

from stac2cube import get_stac_layers, open_cube
from stac2cube.errors import GridMismatchError
from stac2cube.grid import grid_for_bbox
from stac2cube.request import make_request
from stac2cube.store import head_snapshot, open_repo, read_state, write_metadata
from stac2cube.testing.synthetic import demo_bbox
from stac2cube.testing.synthetic_missions import (
    LANDSAT_ORIGIN,
    standard_mission_scenes,
    write_mission_catalog,
)

pytestmark = pytest.mark.integration

S2 = {"mission": "sentinel-2-l2a", "collection": "sentinel-2-c1-l2a", "bands": ["B04", "SCL"]}


def build(url: str, store: Path, start: str, end: str, **kw):
    args = {"bbox": list(demo_bbox()), "catalog": url, "store": str(store), **S2}
    args.update(kw)
    return get_stac_layers(start=start, end=end, **args)


def moved_north(bbox, metres: float) -> list[float]:
    """``bbox`` moved ``metres`` north in UTM 32N (its own zone)."""
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    to_geo = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y0 = to_utm.transform(bbox[0], bbox[1])
    x1, y1 = to_utm.transform(bbox[2], bbox[3])
    w, s = to_geo.transform(x0, y0 + metres)
    e, n = to_geo.transform(x1, y1 + metres)
    return [w, s, e, n]


@pytest.fixture(scope="module")
def january(stac_url, tmp_path_factory) -> Path:
    """A Sentinel-2 cube of 2024-01-01..12 on the demo area (read only by the tests)."""
    store = tmp_path_factory.mktemp("identity") / "jan.icechunk"
    build(stac_url, store, "2024-01-01", "2024-01-12")
    return store


# --- item 1: the exact grid -----------------------------------------------------------------


def test_a_grid_moved_40_m_north_is_refused_naming_both_grids(stac_url, january):
    bbox = moved_north(demo_bbox(), 40.0)
    cube, moved = grid_for_bbox(demo_bbox(), 10), grid_for_bbox(bbox, 10)
    assert moved.shape == cube.shape and moved.bounds != cube.bounds  # same size, other place
    digest, head = tree_digest(january), head_snapshot(january)
    with pytest.raises(GridMismatchError) as err:
        build(stac_url, january, "2024-01-13", "2024-01-31", bbox=bbox)
    message = str(err.value)
    assert str(list(cube.bounds)) in message and str(list(moved.bounds)) in message
    assert "stac2cube update" in message and "\n" not in message
    assert tree_digest(january) == digest and head_snapshot(january) == head


def test_grids_differing_by_a_millimetre_are_different_grids():
    from stac2cube.grid import Grid

    a = Grid(32632, 10.0, (690300.0, 5338100.0, 691900.0, 5339700.0))
    b = Grid(32632, 10.0, (690300.0, 5338100.001, 691900.0, 5339700.001))
    assert a.differences(a) == [] and b.differences(b) == []
    assert a.differences(b) and b.differences(a)
    assert Grid(32632, 10.00001, a.bounds).differences(a)


def test_an_append_writes_no_x_y_or_spatial_ref(stac_url, tmp_path):
    store = tmp_path / "a.icechunk"
    build(stac_url, store, "2024-01-01", "2024-01-06")
    before = head_snapshot(store)
    build(stac_url, store, "2024-01-07", "2024-01-31")
    diff = open_repo(store).diff(from_snapshot_id=before, to_snapshot_id=head_snapshot(store))
    touched = {path.strip("/") for path in diff.updated_chunks} | {
        path.strip("/") for path in diff.updated_arrays
    }
    assert "B04" in touched and "time" in touched
    assert not touched & {"x", "y", "spatial_ref"}, sorted(touched)


def test_an_append_on_a_dask_cluster_writes_no_x_y_or_spatial_ref(stac_url, tmp_path):
    """The cluster path computes batches on workers and writes them from here: appends too."""
    from distributed import Client, LocalCluster

    from stac2cube.store import write_time_steps

    store = tmp_path / "d.icechunk"
    build(stac_url, store, "2024-01-01", "2024-01-06")
    n_steps = open_cube(store).sizes["time"]
    last = open_cube(store).isel(time=[-1]).load()
    later = last.assign_coords(time=last.time + np.timedelta64(1, "D"))
    strings = {n: c.astype(object) for n, c in later.coords.items() if c.dtype.kind == "T"}
    later = later.assign_coords(strings)  # as the flow writes them (the store's dtype)
    before, repo = head_snapshot(store), open_repo(store)
    session = repo.writable_session("main")
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
        as cluster,
        Client(cluster),
    ):  # fmt: skip
        write_time_steps(session, later, first=False)
    session.commit("one more step")
    diff = repo.diff(from_snapshot_id=before, to_snapshot_id=head_snapshot(store))
    touched = {p.strip("/") for p in diff.updated_chunks} | {
        p.strip("/") for p in diff.updated_arrays
    }
    assert "B04" in touched and not touched & {"x", "y", "spatial_ref"}, sorted(touched)
    assert open_cube(store).sizes["time"] == n_steps + 1


def test_time_steps_on_another_grid_are_not_appended(stac_url, tmp_path):
    """The store's own guard: steps whose x/y differ from the cube's are refused, not written."""
    from stac2cube.store import write_time_steps

    store = tmp_path / "g.icechunk"
    build(stac_url, store, "2024-01-01", "2024-01-06")
    last = open_cube(store).isel(time=[-1]).load()
    later = last.assign_coords(time=last.time + np.timedelta64(1, "D"), y=last.y + 40.0)
    session = open_repo(store).writable_session("main")
    with pytest.raises(GridMismatchError, match="y"):
        write_time_steps(session, later, first=False)
    np.testing.assert_array_equal(open_cube(store).y.values, last.y.values)


# --- item 2: options that change pixel values ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"mask_clouds": True}, "mask_clouds"),
        ({"scl_classes": [8, 9]}, "scl_classes"),
        ({"resampling": "bilinear"}, "resampling"),
        ({"aoi": "demo", "clip": True}, "clip"),
    ],
)
def test_another_pixel_option_is_refused_naming_it(stac_url, january, change, named):
    change = dict(change)
    if change.get("aoi") == "demo":
        w, s, e, n = demo_bbox()
        ring = [[w, s], [e, s], [e, (s + n) / 2], [w, n], [w, s]]
        change["aoi"] = {"type": "Polygon", "coordinates": [ring]}
        change["bbox"] = None
    digest = tree_digest(january)
    with pytest.raises(GridMismatchError) as err:
        build(stac_url, january, "2024-01-13", "2024-01-31", **change)
    assert named in str(err.value) and "stac2cube update" in str(err.value)
    assert tree_digest(january) == digest


@pytest.fixture(scope="module")
def pc_missions(tmp_path_factory):
    """Sentinel-1 RTC and Landsat C2 L2 in the Planetary Computer style on a local STAC API."""
    from conftest import require

    from stac2cube.testing.pgstac import postgres_available, start_local_stac_api

    require(postgres_available(), "PostgreSQL 15 + PostGIS not installed (run scripts/setup.sh)")
    scenes, _ = standard_mission_scenes("planetary-computer")
    keep = [s for s in scenes if s.mission in ("sentinel-1-rtc", "landsat-c2-l2")]
    cat = write_mission_catalog(tmp_path_factory.mktemp("pc-missions"), "planetary-computer", keep)
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        yield cat, api.url


def test_a_db_sentinel_1_cube_refuses_linear_backscatter(pc_missions, tmp_path):
    _cat, url = pc_missions
    store = tmp_path / "s1.icechunk"
    s1 = {"mission": "sentinel-1-rtc", "collection": "sentinel-1-rtc", "bands": ["vv"]}
    build(url, store, "2024-01-01", "2024-01-10", **s1)
    digest = tree_digest(store)
    with pytest.raises(GridMismatchError, match=r"sar_scale 'linear' != cube's 'db'") as err:
        build(url, store, "2024-01-11", "2024-01-31", sar_scale="linear", **s1)
    assert "stac2cube update" in str(err.value)
    assert tree_digest(store) == digest
    build(url, store, "2024-01-11", "2024-01-31", **s1)  # the same options extend it
    ds = open_cube(store)
    assert ds.sizes["time"] == 2 and ds.vv.attrs["units"] == "dB"


def test_every_ledger_entry_records_its_processing_options(stac_url, tmp_path):
    store = tmp_path / "p.icechunk"
    build(stac_url, store, "2024-01-01", "2024-01-12", mask_clouds=True, scl_classes=[3, 9])
    build(stac_url, store, "2024-01-13", "2024-01-31", mask_clouds=True, scl_classes=[9, 3])
    state = read_state(store)
    want = {
        "resampling": "nearest",
        "clip": False,
        "mask_clouds": True,
        "scl_classes": [3, 9],
        "qa_flags": ["dilated_cloud", "cirrus", "cloud", "cloud_shadow"],
        "sar_scale": "db",
    }
    assert len(state.ledger) >= 3
    for entry in state.ledger:
        assert entry["processing"] == want, entry["time"]


def test_a_cube_recorded_before_the_options_extends_with_their_old_defaults(stac_url, tmp_path):
    """Cubes made before options were recorded: a missing option is the default it had then."""
    store = tmp_path / "old.icechunk"
    build(stac_url, store, "2024-01-01", "2024-01-12")
    state = read_state(store)
    old = {k: v for k, v in state.request.items() if k not in ("options", "clip", "resampling")}
    ledger = [{k: v for k, v in e.items() if k != "processing"} for e in state.ledger]
    session = open_repo(store).writable_session("main")
    write_metadata(session, request=old, ledger=ledger, version=state.version)
    session.commit("as an older stac2cube wrote it")

    digest = tree_digest(store)
    with pytest.raises(GridMismatchError, match=r"mask_clouds True != cube's False"):
        build(stac_url, store, "2024-01-13", "2024-01-31", mask_clouds=True)
    assert tree_digest(store) == digest
    summary = build(stac_url, store, "2024-01-13", "2024-01-31")
    assert summary["added_time_steps"] >= 1
    record = read_state(store).request
    assert (record["resampling"], record["clip"], record["options"]["sar_scale"]) == (
        "nearest",
        False,
        "db",
    )


# --- item 4: Landsat's own pixel grid -----------------------------------------------------------


def grid_mod(mission: str, resolution: float, bbox=None, crs=None) -> list[float]:
    """The bounds of a request's grid modulo its resolution."""
    request = make_request(mission=mission, bbox=list(bbox or demo_bbox()), start="2024-01-01",
                           end="2024-01-31", resolution=resolution, crs=crs)  # fmt: skip
    return [v % resolution for v in request.grid.bounds]


def test_landsat_grids_are_anchored_on_landsat_pixel_edges():
    """Landsat pixel edges lie 15 m off multiples of 30 m in WGS 84 / UTM north (with negative
    northings in the south); other missions and non-UTM CRSs keep multiples of the resolution."""
    assert grid_mod("landsat-c2-l2", 30) == [15.0] * 4
    assert grid_mod("landsat-c2-l2", 10) == [5.0] * 4  # every third edge is a Landsat edge
    assert grid_mod("landsat-c2-l2", 15) == [0.0] * 4
    # a southern area gets UTM south (327xx): northing + 10 000 000, and 1e7 = 10 (mod 30)
    south = (-40.01, -4.61, -39.99, -4.59)
    assert grid_mod("landsat-c2-l2", 30, south) == [15.0, 25.0, 15.0, 25.0]
    assert grid_mod("landsat-c2-l2", 30, crs="EPSG:3035") == [0.0] * 4
    assert grid_mod("sentinel-2-l2a", 10) == [0.0] * 4
    assert grid_mod("sentinel-2-l2a", 60) == [0.0] * 4


def test_a_30_m_landsat_cube_holds_the_source_pixels_exactly(pc_missions, tmp_path):
    cat, url = pc_missions
    assert LANDSAT_ORIGIN[0] % 30 == LANDSAT_ORIGIN[1] % 30 == 15  # Landsat's own pixel edges
    store = tmp_path / "ls30.icechunk"
    build(url, store, "2024-01-01", "2024-01-31", mission="landsat-c2-l2",
          collection="landsat-c2-l2", bands=["red", "nir08"], resolution=30)  # fmt: skip
    raw = open_cube(store, decode=False).load()
    cube = open_cube(store).load()
    X, Y = np.meshgrid(raw.x.values, raw.y.values)
    for t in raw.time.values:
        ids = str(raw.item_ids.sel(time=t).values).split(",")
        for band in ("red", "nir08"):
            want = np.zeros(X.shape, "uint16")
            for iid in ids:  # first valid DN wins, in the step's item order
                href = cat.item(iid)["assets"][band]["href"].removeprefix("file://")
                with rasterio.open(href) as src:
                    dn, t_ = src.read(1), src.transform
                colf, rowf = (X - t_.c) / t_.a, (Y - t_.f) / t_.e
                # every cube pixel centre is a source pixel centre
                np.testing.assert_array_equal(colf % 1, 0.5)
                np.testing.assert_array_equal(rowf % 1, 0.5)
                col, row = np.floor(colf).astype(int), np.floor(rowf).astype(int)
                inside = (row >= 0) & (row < dn.shape[0]) & (col >= 0) & (col < dn.shape[1])
                layer = np.zeros(X.shape, "uint16")
                layer[inside] = dn[row[inside], col[inside]]
                want = np.where(want == 0, layer, want)
            got = raw[band].sel(time=t).values
            np.testing.assert_array_equal(got, want, err_msg=f"{band} at {t}")
            assert (want != 0).mean() > 0.5
            # the documented formula on the same DN (FACTS.md): SR = DN * 2.75e-05 - 0.2
            np.testing.assert_allclose(
                cube[band].sel(time=t).values,
                np.where(want == 0, np.nan, want * 2.75e-05 - 0.2),
                rtol=0, atol=1e-6, equal_nan=True,
            )  # fmt: skip


LANDSAT = {"mission": "landsat-c2-l2", "collection": "landsat-c2-l2", "bands": ["red"]}


def test_a_landsat_cube_refuses_other_qa_flags(pc_missions, tmp_path):
    _cat, url = pc_missions
    store = tmp_path / "qa.icechunk"
    build(url, store, "2024-01-01", "2024-01-10", resolution=30, **LANDSAT)
    digest = tree_digest(store)
    with pytest.raises(GridMismatchError, match=r"qa_flags \['cloud'\] != cube's"):
        build(url, store, "2024-01-11", "2024-01-31", resolution=30, qa_flags=["cloud"], **LANDSAT)
    assert tree_digest(store) == digest


def test_an_unanchored_30_m_landsat_cube_still_updates_on_its_own_grid(pc_missions, tmp_path):
    """A 30 m Landsat cube made before the anchor (edges on multiples of 30 m) keeps its grid."""
    from stac2cube.flows.update import update_cube

    _cat, url = pc_missions
    store = tmp_path / "old-ls.icechunk"
    build(url, store, "2024-01-01", "2024-01-10", resolution=30, anchor=[0, 0], **LANDSAT)
    grid = read_state(store).grid
    assert [v % 30 for v in grid.bounds] == [0.0] * 4
    summary = update_cube(store=str(store), end="2024-01-31")
    assert summary["added_time_steps"] == 1
    assert read_state(store).grid == grid and open_cube(store).sizes["time"] == 2
