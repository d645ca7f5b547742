"""Co-registration (issue 14): real COGs through the local STAC API, AROSICS for real.

The scenes (stac2cube.testing.coreg) show one white-noise ground moved by known sub-pixel
shifts; the expected correction of a scene moved by ``(dx, dy)`` is AROSICS's convention
``x_shift_px = -dx``, ``y_shift_px = -dy``. Residuals after correction are measured with AROSICS
directly on the stored pixels against the stored reference (not through stac2cube's code).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stac2cube.testing.coreg import CENTRE_CLOUD, FEBRUARY, JANUARY, coreg_bbox, coreg_scenes

pytestmark = pytest.mark.slow

WINDOW = 64


@pytest.fixture(scope="module")
def coreg_api(stac_api, tmp_path_factory):
    """The co-registration scenes, loaded into the session's STAC API (collection coreg-s2)."""
    from stac2cube.testing.synthetic import make_collection, write_catalog

    cat = write_catalog(
        tmp_path_factory.mktemp("coreg"), coreg_scenes(), bands=["B04", "B08", "SCL"]
    )
    stac_api.load_collections([make_collection("earth-search-c1", "coreg-s2", cat.items)])
    stac_api.load_items(cat.items)
    return cat


def _params(stac_url, store, end="2024-01-31", **kw):
    return dict(
        mission="sentinel-2-l2a",
        bbox=coreg_bbox(),
        start="2024-01-01",
        end=end,
        catalog=stac_url,
        collection="coreg-s2",
        bands=["B04", "B08", "SCL"],
        store=str(store),
        **kw,
    )


def _by_day(ds, name):
    return {str(t)[:10]: v for t, v in zip(ds.time.values, ds[name].values, strict=True)}


@pytest.fixture(scope="module")
def january(coreg_api, stac_url, tmp_path_factory):
    """A January cube built, then co-registered (default: median reference, B08); then
    extended by February with --coregister. What each phase saw is kept."""
    from stac2cube import coregister_scenes, get_stac_layers, open_cube
    from stac2cube.cube import Cube

    store = tmp_path_factory.mktemp("cube") / "jan.icechunk"
    get_stac_layers(**_params(stac_url, store))
    raw = open_cube(store).load()
    summary = coregister_scenes(store=str(store), window=WINDOW)
    jan = open_cube(store).load()
    cube = Cube(store)
    ref_jan = cube.open_dataset(group="coregistration").load()
    ledger_jan = cube.ledger
    history_jan = cube.history()
    again = coregister_scenes(store=str(store), window=WINDOW)
    get_stac_layers(**_params(stac_url, store, end="2024-02-28", coregister=True))
    feb = open_cube(store).load()
    ref_feb = Cube(store).open_dataset(group="coregistration").load()
    return dict(
        store=store, raw=raw, summary=summary, jan=jan, ref_jan=ref_jan, again=again,
        feb=feb, ref_feb=ref_feb, ledger_jan=ledger_jan, history_jan=history_jan,
    )  # fmt: skip


def _expected(days):
    return {day: (-kw["shift"][0], -kw["shift"][1]) for day, kw in days.items()}


def test_january_shifts_are_recovered(january):
    ds = january["jan"]
    x, y = _by_day(ds, "coreg_x_shift_px"), _by_day(ds, "coreg_y_shift_px")
    status = _by_day(ds, "coreg_status")
    assert status["2024-01-05"] == "reference"
    for day in ("2024-01-10", "2024-01-15"):
        ex, ey = _expected(JANUARY)[day]
        assert status[day] == "ok"
        assert abs(x[day] - ex) <= 0.05 and abs(y[day] - ey) <= 0.05, (day, x[day], y[day])
        xm, ym = _by_day(ds, "coreg_x_shift_m")[day], _by_day(ds, "coreg_y_shift_m")[day]
        assert xm == pytest.approx(x[day] * 10, abs=1e-3)
        assert ym == pytest.approx(-y[day] * 10, abs=1e-3)  # map y points north
        assert _by_day(ds, "coreg_reliability")[day] > 50
        assert _by_day(ds, "coreg_windows")[day] >= 1


def _arosics_residual(image, reference, origin):
    """AROSICS's shift of ``image`` against ``reference`` on one window (rows/cols origin)."""
    from arosics import COREG
    from geoarray import GeoArray
    from pyproj import CRS

    m = 12
    r0, c0 = origin[0] - m, origin[1] - m
    sl = (slice(r0, r0 + WINDOW + 2 * m), slice(c0, c0 + WINDOW + 2 * m))
    gt = (690000.0 + c0 * 10, 10.0, 0.0, 5340000.0 - r0 * 10, 0.0, -10.0)
    wkt = CRS.from_epsg(32632).to_wkt()
    ref = np.nan_to_num(reference[sl], nan=-9999.0).astype("float32")
    img = np.nan_to_num(image[sl], nan=-9999.0).astype("float32")
    wp = (gt[0] + (m + WINDOW / 2) * 10, gt[3] - (m + WINDOW / 2) * 10)
    cr = COREG(
        GeoArray(ref, gt, wkt), GeoArray(img, gt, wkt), wp=wp, ws=(WINDOW, WINDOW),
        nodata=(-9999.0, -9999.0), q=True, progress=False, max_shift=3,
    )  # fmt: skip
    cr.calculate_spatial_shifts()
    return cr.x_shift_px, cr.y_shift_px


def test_residual_after_correction_is_small(january):
    ds, ref = january["jan"], january["ref_jan"]["reference"].values
    days = [str(t)[:10] for t in ds.time.values]
    for day in ("2024-01-05", "2024-01-10", "2024-01-15"):
        image = ds["B08"].values[days.index(day)]
        origins = [(20, 20), (20, 116), (116, 20)] if day != "2024-01-15" else [(12, 12)]
        for origin in origins:
            rx, ry = _arosics_residual(image, ref, origin)
            assert math.hypot(rx, ry) <= 0.05, (day, origin, rx, ry)


def test_cloud_block_moves_the_windows(january):
    entry = next(e for e in january["ledger_jan"] if e["time"].startswith("2024-01-15"))
    origins = entry["coregistration"]["window_origins"]
    ds = january["jan"]
    col0 = round((float(ds.x[0]) - 5 - 690000) / 10)  # the cube's first column in the scene
    row0 = round((5340000 - float(ds.y[0]) - 5) / 10)
    r0, r1 = CENTRE_CLOUD[0] - row0, CENTRE_CLOUD[1] - row0
    c0, c1 = CENTRE_CLOUD[2] - col0, CENTRE_CLOUD[3] - col0
    assert len(origins) >= 2
    for r, c in origins:  # at most 10% of a window under the cloud block (min_clear 0.9)
        rows = max(0, min(r + WINDOW, r1) - max(r, r0))
        cols = max(0, min(c + WINDOW, c1) - max(c, c0))
        assert rows * cols <= 0.1 * WINDOW * WINDOW, (r, c, rows * cols)
    # where a default window sits (AROSICS: the centre of the overlap) is cloud
    cr, cc = (ds.sizes["y"] - WINDOW) // 2, (ds.sizes["x"] - WINDOW) // 2
    side = min(cr + WINDOW, r1) - max(cr, r0), min(cc + WINDOW, c1) - max(cc, c0)
    assert side[0] * side[1] >= 0.9 * WINDOW * WINDOW


def test_fully_cloudy_step_is_flagged_and_unchanged(january):
    ds, raw = january["jan"], january["raw"]
    status = _by_day(ds, "coreg_status")["2024-01-20"]
    assert status.startswith("failed: ") and "cloud" in status
    k = [str(t)[:10] for t in ds.time.values].index("2024-01-20")
    for name in ("B04", "B08", "SCL"):
        np.testing.assert_array_equal(ds[name].values[k], raw[name].values[k])
    assert "2024-01-20" in " ".join(january["summary"]["failed_steps"])
    assert ds.sizes["time"] == 4  # never dropped


def test_classes_stay_integer_and_nodata_stays_nodata(january, store_path):
    from stac2cube.cube import Cube

    raw = Cube(january["store"]).open_dataset(decode=False)
    assert raw["SCL"].dtype == np.uint8 and raw["B08"].dtype == np.uint16
    ds, before = january["jan"], january["raw"]
    k = [str(t)[:10] for t in ds.time.values].index("2024-01-10")
    scl = raw["SCL"].values[k]
    assert set(np.unique(scl)) <= {0, 4}
    # the shift (-0.3, +1.7) px moves content 2 rows south by nearest: nodata where SCL is 0
    np.testing.assert_array_equal(np.isnan(ds["B08"].values[k]), scl == 0)
    np.testing.assert_array_equal(np.isnan(ds["B04"].values[k]), scl == 0)
    # the nodata strip stays as wide as it was (the east columns)
    was = np.isnan(before["B08"].values[k]).all(axis=0)
    now = np.isnan(ds["B08"].values[k][5:]).all(axis=0)
    np.testing.assert_array_equal(was, now)
    # the two top rows came from outside the image: nodata
    assert np.isnan(ds["B08"].values[k][:2]).all()
    assert (scl[:2] == 0).all()


def test_history_tag_and_no_redo(january):
    from stac2cube.cube import Cube

    history = january["history_jan"]
    assert history[0]["message"].startswith("coregister: 2 steps aligned, 1 failed")
    cube = Cube(january["store"])
    tagged = cube.repository().lookup_tag("before-coregistration")
    assert tagged == history[1]["snapshot"]
    raw = cube.open_dataset(snapshot=tagged).load()
    np.testing.assert_array_equal(raw["B08"].values, january["raw"]["B08"].values)
    assert january["again"]["snapshot"] is None  # nothing left to do: nothing redone


def test_february_extension_uses_the_stored_reference(january):
    ref_jan, ref_feb = january["ref_jan"], january["ref_feb"]
    info_jan = ref_jan.attrs["stac2cube:coregistration"]
    assert ref_feb.attrs["stac2cube:coregistration"] == info_jan
    np.testing.assert_array_equal(ref_feb["reference"].values, ref_jan["reference"].values)
    ds = january["feb"]
    x, y = _by_day(ds, "coreg_x_shift_px"), _by_day(ds, "coreg_y_shift_px")
    status = _by_day(ds, "coreg_status")
    for day, (ex, ey) in _expected(FEBRUARY).items():
        assert status[day] == "ok"
        assert abs(x[day] - ex) <= 0.05 and abs(y[day] - ey) <= 0.05, (day, x[day], y[day])
    jan = january["jan"]  # January's steps are not redone
    for name in ("B08", "coreg_x_shift_px"):
        np.testing.assert_array_equal(ds[name].values[:4], jan[name].values)


# -- bad input: one line, store untouched ----------------------------------------------------


@pytest.fixture(scope="module")
def plain_cube(coreg_api, stac_url, tmp_path_factory):
    """A January cube that was never co-registered."""
    from stac2cube import get_stac_layers

    store = tmp_path_factory.mktemp("plain") / "plain.icechunk"
    get_stac_layers(**_params(stac_url, store, end="2024-01-12"))
    return store


@pytest.fixture(scope="module")
def landsat_cube(stac_api, stac_url, tmp_path_factory):
    """A small Landsat cube (a mission co-registration does not take)."""
    import datetime as dt

    from stac2cube import get_stac_layers
    from stac2cube.testing.synthetic import TILE_A
    from stac2cube.testing.synthetic_missions import MissionScene, write_mission_catalog

    scene = MissionScene(
        "landsat-c2-l2",
        "earth-search",
        dt.datetime(2024, 1, 7, 10, 0, tzinfo=dt.UTC),
        32632,
        TILE_A[2],
        size=80,
        pixel=(30.0, 30.0),
        seed=3,
        tile="193026",
        collection="coreg-landsat",
    )
    cat = write_mission_catalog(tmp_path_factory.mktemp("landsat"), "earth-search", [scene], [])
    stac_api.load_collections(cat.collections)
    stac_api.load_items(cat.items)
    store = tmp_path_factory.mktemp("ls") / "landsat.icechunk"
    get_stac_layers(
        mission="landsat-c2-l2",
        bbox=coreg_bbox(),
        start="2024-01-01",
        end="2024-01-31",
        catalog=stac_url,
        collection="coreg-landsat",
        bands=["red"],
        resolution=30,
        store=str(store),
    )
    return store


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--band", "B03"], "band B03 is not in the cube (it has B04, B08, SCL)"),
        (["--band", "SCL"], "band SCL is not a native 10 m band"),
        (["--max-shift", "0"], "--max-shift must be > 0 pixels, got 0"),
        (["--max-shift", "-2"], "--max-shift must be > 0 pixels, got -2"),
        (["--reference", "2024-01-07"], "reference date 2024-01-07 is not a time step"),
        (["--reference", "last week"], "--reference 'last week': give median or a date"),
        (["--window", "100"], "--window must be a power of two"),
        (["--window", "256"], "is too small for --window 256"),
    ],
)
def test_bad_input_one_line_store_untouched(plain_cube, capsys, args, message):
    from helpers import tree_digest

    from stac2cube.cli import EXIT_ERROR, main

    before = tree_digest(plain_cube)
    assert main(["coregister", "--store", str(plain_cube), *args]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert tree_digest(plain_cube) == before


def test_non_sentinel2_cube_says_what_works(landsat_cube, capsys):
    from helpers import tree_digest

    from stac2cube import coregister_scenes
    from stac2cube.cli import EXIT_ERROR, main
    from stac2cube.coregistration import CoregistrationError

    before = tree_digest(landsat_cube)
    assert main(["coregister", "--store", str(landsat_cube)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "works on Sentinel-2 cubes (sentinel-2-l2a, sentinel-2-l1c)" in err[0]
    assert "this cube is landsat-c2-l2" in err[0]
    with pytest.raises(CoregistrationError, match="works on Sentinel-2 cubes"):
        coregister_scenes.fn(store=str(landsat_cube))
    assert tree_digest(landsat_cube) == before


def test_cli_coregisters_with_a_named_reference(plain_cube, tmp_path, capsys):
    import shutil

    from stac2cube import open_cube
    from stac2cube.cli import main

    store = tmp_path / "copy.icechunk"
    shutil.copytree(plain_cube, store)
    assert main(["coregister", "--store", str(store), "--reference", "2024-01-10",
                 "--window", "64", "--max-shift", "3"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 steps aligned to the reference (date 2024-01-10, B08)" in out
    assert "kept as tag before-coregistration" in out
    ds = open_cube(store)
    status = _by_day(ds, "coreg_status")
    assert status == {"2024-01-05": "ok", "2024-01-10": "reference"}
    # the 01-05 scene (no shift) against the 01-10 one (moved +0.3, -1.7): its correction
    # is the opposite, +0.3 / -1.7
    x, y = (
        _by_day(ds, "coreg_x_shift_px")["2024-01-05"],
        _by_day(ds, "coreg_y_shift_px")["2024-01-05"],
    )
    assert abs(x - 0.3) <= 0.05 and abs(y + 1.7) <= 0.05, (x, y)
    assert main(["history", str(store)]) == 0
    assert (
        "coregister: 1 steps aligned, 0 failed, reference date 2024-01-10"
        in capsys.readouterr().out
    )


def test_build_with_coregister_then_update_keeps_it(coreg_api, stac_url, tmp_path):
    """A new cube built with coregister=True is aligned in its first commit; the nightly
    update (no switch) aligns February's steps to the same stored reference."""
    from stac2cube import get_stac_layers, open_cube
    from stac2cube.cube import Cube
    from stac2cube.flows.update import update_cube

    store = tmp_path / "new.icechunk"
    get_stac_layers(**_params(stac_url, store, coregister=True, composites=["mean:month"]))
    cube = Cube(store)
    history = cube.history()  # one commit (after icechunk's initial snapshot): no raw pixels
    assert [c["message"].split(":")[0] for c in history] == ["create", "Repository initialized"]
    assert not list(cube.repository().list_tags())
    ref = cube.open_dataset(group="coregistration").load()
    ds = open_cube(store)
    status = _by_day(ds, "coreg_status")
    assert status["2024-01-05"] == "reference" and status["2024-01-10"] == "ok"
    update_cube(store=str(store), end="2024-02-28")
    ds = open_cube(store)
    x, y = _by_day(ds, "coreg_x_shift_px"), _by_day(ds, "coreg_y_shift_px")
    for day, (ex, ey) in _expected(FEBRUARY).items():
        assert _by_day(ds, "coreg_status")[day] == "ok"
        assert abs(x[day] - ex) <= 0.05 and abs(y[day] - ey) <= 0.05, (day, x[day], y[day])
    after = Cube(store).open_dataset(group="coregistration").load()
    np.testing.assert_array_equal(after["reference"].values, ref["reference"].values)
    # the composites were computed from the aligned pixels of the same commit
    month = Cube(store).open_dataset(group="composites/month").load()
    feb = ds["B08"].sel(time=slice("2024-02-01", "2024-02-28")).mean("time").values
    np.testing.assert_allclose(month["B08_mean"].values[1], feb, rtol=1e-5, atol=1e-5)


def test_cloud_layers_decide_clear_and_are_shifted(plain_cube, tmp_path):
    """With a ``clouds`` group (cloud_prob 0-1, cloud_mask, shadow_mask), its masks decide
    which pixels are clear (not SCL), and its layers are shifted with the bands."""
    import shutil

    import xarray as xr

    from stac2cube import coregister_scenes, open_cube
    from stac2cube.cube import Cube

    store = tmp_path / "clouds.icechunk"
    shutil.copytree(plain_cube, store)
    cube = Cube(store)
    ds = cube.open_dataset()
    n, h, w = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
    mask = np.zeros((n, h, w), "uint8")
    mask[1, 70:130, 70:130] = 1  # a cloud SCL does not know of, on 2024-01-10
    prob = np.where(mask == 1, 0.9, 0.05).astype("float32")
    prob[1, :, :10] = 1.0  # a sharp edge: Lanczos ringing must be clipped to 0..1
    clouds = xr.Dataset(
        {
            "cloud_prob": (("time", "y", "x"), prob),
            "cloud_mask": (("time", "y", "x"), mask),
            "shadow_mask": (("time", "y", "x"), np.zeros_like(mask)),
        },
        coords={"time": ds.time.values, "y": ds.y.values, "x": ds.x.values},
    )
    session = cube.repository().writable_session("main")
    clouds.to_zarr(session.store, group="clouds", mode="w", consolidated=False)
    session.commit("test: cloud layers")
    summary = coregister_scenes(store=str(store), reference="2024-01-05", window=64)
    entry = next(e for e in Cube(store).ledger if e["time"].startswith("2024-01-10"))
    for r, c in entry["coregistration"]["window_origins"]:  # windows avoid the cloud block
        rows = max(0, min(r + 64, 130) - max(r, 70))
        cols = max(0, min(c + 64, 130) - max(c, 70))
        assert rows * cols <= 0.1 * 64 * 64, (r, c)
    assert summary["coregistered_steps"] == 1
    x = _by_day(open_cube(store), "coreg_x_shift_px")["2024-01-10"]
    y = _by_day(open_cube(store), "coreg_y_shift_px")["2024-01-10"]
    assert abs(x + 0.3) <= 0.05 and abs(y - 1.7) <= 0.05, (x, y)
    after = Cube(store).open_dataset(group="clouds").load()
    assert after["cloud_mask"].dtype == np.uint8
    # nearest: content moved 2 rows south (round(1.7)) and 0 columns (round(-0.3))
    np.testing.assert_array_equal(after["cloud_mask"].values[1, 2:], mask[1, :-2])
    np.testing.assert_array_equal(after["cloud_mask"].values[0], mask[0])  # reference step
    p = after["cloud_prob"].values[1]
    assert np.nanmin(p) >= 0.0 and np.nanmax(p) <= 1.0
    assert np.isnan(p[:2]).all()  # rows from outside the grid: nodata
