"""What a build leaves besides the pixels: composites, the statistics CSV, quicklooks.

Composites and statistics are recomputed here with numpy from the pixels the cube holds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import small_bbox

from stac2cube import get_stac_layers, open_cube
from stac2cube.composites import open_composites, parse_composites
from stac2cube.errors import InvalidRequestError
from stac2cube.request import make_request
from stac2cube.settings import sidecar_path
from stac2cube.testing.synthetic import demo_bbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def monthly_cube(stac_url, season_api, tmp_path_factory):
    """2019-2020 (24 monthly steps) with composites of every period kind, GIF quicklook."""
    store = tmp_path_factory.mktemp("products") / "monthly.icechunk"
    summary = get_stac_layers(
        mission="sentinel-2-l2a", bbox=small_bbox(), start="2019-01-01", end="2020-12-31",
        catalog=stac_url, collection="season-s2", bands=["B02", "B03", "B04", "SCL"],
        indices=["NDVI"], store=str(store), quicklook="gif", statistics=True,
        composites=["median:month", "mean:all", "max:season", "min:year", "median:season"],
    )  # fmt: skip
    return store, summary


def expected_groups(times: pd.DatetimeIndex, period: str) -> list[pd.Timestamp]:
    """Period start of each time, written out from the calendar rules in the docs."""
    out = []
    for t in times:
        if period == "month":
            out.append(pd.Timestamp(t.year, t.month, 1))
        elif period == "year":
            out.append(pd.Timestamp(t.year, 1, 1))
        elif period == "season":
            if t.month == 12:
                out.append(pd.Timestamp(t.year, 12, 1))
            elif t.month <= 2:
                out.append(pd.Timestamp(t.year - 1, 12, 1))
            else:
                out.append(pd.Timestamp(t.year, (t.month // 3) * 3, 1))
        else:
            out.append(pd.Timestamp(times.min().normalize()))
    return out


@pytest.mark.parametrize(
    ("period", "stat", "reducer"),
    [
        ("month", "median", np.nanmedian),
        ("all", "mean", np.nanmean),
        ("season", "max", np.nanmax),
        ("season", "median", np.nanmedian),
        ("year", "min", np.nanmin),
    ],
)
def test_composites_match_numpy_on_the_stored_pixels(monthly_cube, period, stat, reducer):
    store, _ = monthly_cube
    cube = open_cube(store).load()
    comp = open_composites(store, period).load()
    groups = expected_groups(pd.DatetimeIndex(cube.time.values), period)
    labels = sorted(set(groups))
    assert list(pd.DatetimeIndex(comp.period.values)) == labels
    for name in ("B04", "NDVI"):
        assert f"{name}_{stat}" in comp and f"{name}_count" in comp
        assert "SCL_median" not in comp and "SCL_count" not in comp
        for k, label in enumerate(labels):
            idx = [i for i, g in enumerate(groups) if g == label]
            stack = cube[name].values[idx]
            with warnings.catch_warnings():  # all-NaN pixels: NaN, as the docs say
                warnings.simplefilter("ignore", RuntimeWarning)
                want = reducer(stack, axis=0)
            np.testing.assert_allclose(
                comp[f"{name}_{stat}"].values[k], want, rtol=1e-6, atol=1e-7, equal_nan=True
            )
            np.testing.assert_array_equal(
                comp[f"{name}_count"].values[k], np.isfinite(stack).sum(axis=0)
            )
    # not vacuous: some pixels of some period have fewer observations than steps (nodata strip)
    counts = comp["B04_count"].values
    assert counts.min() < counts.max()


def test_composites_follow_the_cube_when_it_grows(monthly_cube, stac_url, tmp_path):
    store = tmp_path / "grow.icechunk"
    args = dict(
        mission="sentinel-2-l2a", bbox=small_bbox(), catalog=stac_url, collection="season-s2",
        bands=["B04"], store=str(store), composites=["mean:year"], statistics=False,
    )  # fmt: skip
    get_stac_layers(start="2019-01-01", end="2019-06-30", **args)
    assert open_composites(store, "year").sizes["period"] == 1
    get_stac_layers(start="2019-01-01", end="2020-03-31", **args)
    comp = open_composites(store, "year").load()
    cube = open_cube(store).load()
    assert list(pd.DatetimeIndex(comp.period.values).year) == [2019, 2020]
    for k, year in enumerate((2019, 2020)):
        idx = pd.DatetimeIndex(cube.time.values).year == year
        np.testing.assert_allclose(
            comp.B04_mean.values[k], np.nanmean(cube.B04.values[idx], axis=0), rtol=1e-6
        )
    assert int(comp.B04_count.values[1].max()) == 3  # Jan-Mar 2020
    # composites asked for later join the cube's: both are kept up to date from then on
    get_stac_layers(start="2019-01-01", end="2020-05-31", **{**args, "composites": ["max:all"]})
    cube = open_cube(store).load()
    np.testing.assert_allclose(
        open_composites(store, "all").B04_max.values[0], np.nanmax(cube.B04.values, axis=0)
    )
    assert int(open_composites(store, "year").B04_count.values[1].max()) == 5  # Jan-May 2020


def test_statistics_csv_matches_the_pixels_and_updates_incrementally(monthly_cube, stac_url,
                                                                     tmp_path):  # fmt: skip
    store, _ = monthly_cube
    table = pd.read_csv(sidecar_path(store, ".stats.csv"))
    cube = open_cube(store).load()
    assert list(table.time) == [pd.Timestamp(t).isoformat() for t in cube.time.values]
    for name in ("B04", "NDVI"):
        np.testing.assert_allclose(
            table[f"{name}_mean"], np.nanmean(cube[name].values, axis=(1, 2)), rtol=1e-5
        )
        np.testing.assert_allclose(
            table[f"{name}_std"], np.nanstd(cube[name].values, axis=(1, 2)), rtol=1e-4
        )
    np.testing.assert_allclose(
        table.valid_fraction, np.isfinite(cube.B04.values).mean(axis=(1, 2)), atol=1e-6
    )
    assert "SCL_mean" not in table
    # incremental: an extension adds rows for its steps and leaves the others as they were
    grow = tmp_path / "inc.icechunk"
    args = dict(mission="sentinel-2-l2a", bbox=small_bbox(), catalog=stac_url,
                collection="season-s2", bands=["B04"], store=str(grow), statistics=True)  # fmt: skip
    get_stac_layers(start="2019-01-01", end="2019-04-30", **args)
    csv = sidecar_path(grow, ".stats.csv")
    before = pd.read_csv(csv)
    csv.write_text(csv.read_text().replace(f"{before.B04_mean[0]:.6g}", "-999", 1))  # marker
    get_stac_layers(start="2019-01-01", end="2019-08-31", **args)
    after = pd.read_csv(csv)
    assert len(after) == 8 and after.B04_mean[0] == -999  # untouched row was not recomputed
    grown = open_cube(grow).load()
    np.testing.assert_allclose(
        after.B04_mean[4:], np.nanmean(grown.B04.values[4:], axis=(1, 2)), rtol=1e-5
    )


def test_gif_quicklook_has_a_frame_per_step(monthly_cube):
    from PIL import Image

    store, summary = monthly_cube
    path = sidecar_path(store, ".quicklook.gif")
    assert summary["quicklook"] == str(path)
    cube = open_cube(store)
    with Image.open(path) as gif:
        assert gif.n_frames == cube.sizes["time"] == 24
        assert gif.size == (cube.sizes["x"], cube.sizes["y"])  # small cubes are not subsampled


def test_png_grid_quicklook(stac_url, tmp_path):
    from PIL import Image

    from stac2cube.quicklook import write_quicklooks

    store = tmp_path / "q.icechunk"
    get_stac_layers(mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01",
                    end="2024-01-31", catalog=stac_url, collection="sentinel-2-c1-l2a",
                    bands=["B02", "B03", "B04"], store=str(store), quicklook="png")  # fmt: skip
    with Image.open(sidecar_path(store, ".quicklook.png")) as png:
        assert png.format == "PNG" and png.size[0] > 200
    with pytest.raises(InvalidRequestError, match="gif or png"):
        write_quicklooks(store, tmp_path / "x.mp4", fmt="mp4")


def test_bad_composites_and_quicklook_are_rejected_before_anything_runs():
    with pytest.raises(InvalidRequestError, match="unknown statistic 'mode'"):
        parse_composites(["mode:month"])
    with pytest.raises(InvalidRequestError, match="unknown period 'week'"):
        make_request(mission="sentinel-2-l2a", bbox=demo_bbox(), start="2024-01-01",
                     composites=["median:week"])  # fmt: skip
    with pytest.raises(InvalidRequestError, match="quicklook must be gif, png or none"):
        make_request(mission="sentinel-2-l2a", bbox=demo_bbox(), start="2024-01-01",
                     quicklook="mp4")  # fmt: skip


# -- the product functions called directly on a built cube ------------------------------------


@pytest.fixture()
def cube_copy(monthly_cube, tmp_path):
    """A private copy of the monthly cube (an icechunk repository on disk is a directory)."""
    import shutil

    store, _ = monthly_cube
    copy = tmp_path / "copy.icechunk"
    shutil.copytree(store, copy)
    return copy


def test_write_composites_in_a_session_sees_its_uncommitted_steps(cube_copy):
    import xarray as xr
    import zarr

    from stac2cube.composites import write_composites
    from stac2cube.store import open_repo

    before = open_cube(cube_copy).load()
    session = open_repo(cube_copy).writable_session("main")
    # this session alone brightens B04 of the first step (January 2019) by 0.05
    brighter = (before.B04.isel(time=[0]) + 0.05).variable
    xr.Dataset({"B04": brighter}).to_zarr(
        session.store, region={"time": slice(0, 1)}, consolidated=False
    )
    groups = write_composites(session, ["mean:year", "max:season"])
    assert groups == ["composites/year", "composites/season"]
    # nothing is visible before the commit: the committed year group is still the build's
    assert "B04_mean" not in open_composites(cube_copy, "year")
    session.commit("brighter January, composites")

    after = open_cube(cube_copy).load()
    np.testing.assert_allclose(after.B04.values[0], before.B04.values[0] + 0.05, atol=1.5e-4)
    assert set(after.data_vars) == set(before.data_vars)  # the root group is still the cube
    times = pd.DatetimeIndex(after.time.values)
    for period, stat, reducer in (("year", "mean", np.nanmean), ("season", "max", np.nanmax)):
        comp = open_composites(cube_copy, period).load()
        groups_of = expected_groups(times, period)
        labels = sorted(set(groups_of))
        assert list(pd.DatetimeIndex(comp.period.values)) == labels
        assert f"B04_{stat}" in comp and "B04_median" not in comp  # the group was replaced
        for k, label in enumerate(labels):
            stack = after.B04.values[[i for i, g in enumerate(groups_of) if g == label]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                want = reducer(stack, axis=0)
            np.testing.assert_allclose(
                comp[f"B04_{stat}"].values[k], want, rtol=1e-6, atol=1e-7, equal_nan=True
            )
        # georeferenced like the cube: same grid coordinates and grid mapping
        np.testing.assert_array_equal(comp.x.values, after.x.values)
        np.testing.assert_array_equal(comp.y.values, after.y.values)
        assert comp.spatial_ref.attrs["crs_wkt"] == after.spatial_ref.attrs["crs_wkt"]
        assert comp[f"B04_{stat}"].attrs["grid_mapping"] == "spatial_ref"
    # the January change reached the 2019 mean (so it was read from the session, uncommitted)
    year = open_composites(cube_copy, "year").B04_mean.values[0]
    old_mean = np.nanmean(before.B04.values[times.year == 2019], axis=0)
    assert np.nanmean(year - old_mean) == pytest.approx(0.05 / 12, rel=0.05)
    assert list(pd.DatetimeIndex(open_composites(cube_copy, "year").period_end.values)) == [
        pd.Timestamp("2019-12-31"),
        pd.Timestamp("2020-12-31"),
    ]
    # stored as documented
    readonly = open_repo(cube_copy).readonly_session("main")
    root = zarr.open_group(readonly.store, mode="r")
    assert root["composites/year/B04_mean"].dtype == np.float32
    assert root["composites/year/B04_count"].dtype == np.uint16


def test_composite_is_lazy_for_one_stat_and_checks_its_arguments(monthly_cube):
    import dask.array as da

    from stac2cube.composites import composite

    store, _ = monthly_cube
    cube = open_cube(store)
    comp = composite(cube, "median", "season")
    assert all(isinstance(v.data, da.Array) for v in comp.data_vars.values())
    assert set(comp.data_vars) == {f"{b}_{s}" for b in ("B02", "B03", "B04", "NDVI")
                                   for s in ("median", "count")}  # fmt: skip
    assert comp.B04_median.dtype == np.float32 and comp.B04_count.dtype == np.uint16
    ends = dict(zip(pd.DatetimeIndex(comp.period.values), pd.DatetimeIndex(comp.period_end.values),
                    strict=True))  # fmt: skip
    assert ends[pd.Timestamp("2018-12-01")] == pd.Timestamp("2019-02-28")  # Jan-Feb 2019 only
    assert ends[pd.Timestamp("2019-12-01")] == pd.Timestamp("2020-02-29")  # leap year
    assert ends[pd.Timestamp("2020-09-01")] == pd.Timestamp("2020-11-30")
    counts = comp.B04_count.sel(period="2019-12-01").values  # Dec 2019, Jan + Feb 2020
    assert counts.max() == 3
    with pytest.raises(InvalidRequestError, match="unknown statistic 'mode'"):
        composite(cube, "mode", "month")
    with pytest.raises(InvalidRequestError, match="unknown period 'week'"):
        composite(cube, "median", "week")
    with pytest.raises(InvalidRequestError, match="no continuous variables"):
        composite(cube[["SCL"]], "median", "all")
    assert parse_composites(["Median:Month", "max", "median:month"]) == (
        "median:month",
        "max:all",
    )


def test_step_statistics_of_a_cube_without_fraction_coordinates(monthly_cube):
    from stac2cube.stats import step_statistics

    store, _ = monthly_cube
    cube = open_cube(store)
    full = step_statistics(cube)
    old_style = step_statistics(cube.drop_vars(["valid_fraction", "cloud_fraction"]))
    assert list(old_style.columns) == list(full.columns)
    np.testing.assert_allclose(old_style.valid_fraction, full.valid_fraction, atol=1e-6)
    assert old_style.cloud_fraction.isna().all()
    pd.testing.assert_frame_equal(
        old_style.drop(columns=["valid_fraction", "cloud_fraction"]),
        full.drop(columns=["valid_fraction", "cloud_fraction"]),
    )
    assert full.valid_fraction.min() < 1  # the two steps with a nodata strip


def test_statistics_csv_recomputes_only_the_times_given(monthly_cube, tmp_path):
    from stac2cube.stats import write_statistics_csv

    store, _ = monthly_cube
    csv = tmp_path / "s.csv"
    assert write_statistics_csv(store, csv) == csv
    full = pd.read_csv(csv)
    cube = open_cube(store).load()
    np.testing.assert_allclose(full.B04_mean, np.nanmean(cube.B04.values, axis=(1, 2)), rtol=1e-5)
    # rows 2 and 5 marked, row 9 missing, rows shuffled: as an older run may have left it
    edited = full.copy()
    edited.loc[[2, 5], "B04_mean"] = -999.0
    edited.drop(index=9).sample(frac=1, random_state=1).to_csv(csv, index=False)
    write_statistics_csv(store, csv, times=[pd.Timestamp(full.time[5])])
    after = pd.read_csv(csv)
    assert list(after.time) == list(full.time)  # sorted again, the missing step back
    assert after.B04_mean[2] == -999.0  # not asked for: kept as it was
    for k in (5, 9):  # asked for, and missing: recomputed
        np.testing.assert_allclose(after.B04_mean[k], full.B04_mean[k], rtol=1e-5)
    pd.testing.assert_frame_equal(after.drop(index=[2, 5, 9]), full.drop(index=[2, 5, 9]))


def test_quicklook_rgb_stretch_and_nodata(monthly_cube):
    from stac2cube.quicklook import channel_limits, quicklook_rgb

    store, _ = monthly_cube
    cube = open_cube(store)
    k = int(np.flatnonzero(pd.DatetimeIndex(cube.time.values) == "2020-07-10T10:30:21")[0])
    rgb = quicklook_rgb(cube, k)
    assert rgb.shape == (cube.sizes["y"], cube.sizes["x"], 3) and rgb.dtype == np.uint8
    bands = cube[["B04", "B03", "B02"]].load()
    nodata = bands.B04.isnull().values[k]
    assert 0 < nodata.mean() < 1  # the strip
    assert (rgb[nodata] == 0).all()
    (lo, hi), *_ = channel_limits(bands, ["B04", "B03", "B02"])
    red = np.round(np.clip((bands.B04.values[k] - lo) / (hi - lo), 0, 1) * 255)
    np.testing.assert_array_equal(rgb[..., 0][~nodata], red[~nodata])
    assert rgb[~nodata].std() > 10  # not a flat picture
    with pytest.raises(InvalidRequestError, match="no band a quicklook can show"):
        quicklook_rgb(cube[["SCL"]], 0)


def test_quicklook_bands_per_mission():
    import xarray as xr

    from stac2cube.quicklook import quicklook_rgb, rgb_bands

    rng = np.random.default_rng(3)

    def cube(names, values=None, **attrs):
        data = {n: (("time", "y", "x"), rng.random((2, 8, 8)) if values is None else values[i],
                    attrs) for i, n in enumerate(names)}  # fmt: skip
        return xr.Dataset(data, coords={"time": pd.date_range("2024-01-01", periods=2)})

    assert rgb_bands(cube(["blue", "green", "red", "nir08"])) == ["red", "green", "blue"]
    assert rgb_bands(cube(["B02", "B03", "B04", "SCL"])) == ["B04", "B03", "B02"]
    dem = quicklook_rgb(cube(["elevation"]), 0)
    assert (dem[..., 0] == dem[..., 1]).all() and (dem[..., 1] == dem[..., 2]).all()
    # Sentinel-1: vv, vh, vv/vh in dB; linear gamma0 gives the same picture as dB
    linear = rng.lognormal(-3, 1, size=(2, 2, 8, 8))
    linear[0, 1, 0, :3] = np.nan
    lin = cube(["vv", "vh"], linear, units="1")
    db = cube(["vv", "vh"], 10 * np.log10(linear), units="dB")
    assert rgb_bands(lin) == ["vv", "vh", "vv/vh"]
    a, b = quicklook_rgb(lin, 1), quicklook_rgb(db, 1)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a[0, :3] == 0).all()  # vv nodata: black
    ratio = 10 * np.log10(linear[0, 1] / linear[1, 1])
    assert np.corrcoef(a[..., 2][1:].ravel(), ratio[1:].ravel())[0, 1] > 0.9


def test_write_quicklooks_frames_and_size(monthly_cube, tmp_path):
    from PIL import Image

    from stac2cube.quicklook import write_quicklooks

    store, _ = monthly_cube
    gif = write_quicklooks(store, tmp_path / "q.gif", max_frames=5, size=20)
    with Image.open(gif) as image:
        assert image.n_frames == 5 and image.size == (15, 14)  # 44 x 40 pixels, every 3rd
    png = write_quicklooks(store, tmp_path / "q.png", fmt="png", max_frames=4)
    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] > 200


def test_write_composites_under_a_cluster_of_worker_processes(cube_copy):
    """A writable session cannot be pickled to workers: the composites are computed here."""
    from distributed import Client, LocalCluster

    from stac2cube.composites import write_composites
    from stac2cube.store import open_repo

    session = open_repo(cube_copy).writable_session("main")
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
        as cluster,
        Client(cluster),
    ):  # fmt: skip
        assert write_composites(session, ["median:year"]) == ["composites/year"]
    session.commit("composites")
    cube = open_cube(cube_copy).load()
    comp = open_composites(cube_copy, "year").load()
    year = pd.DatetimeIndex(cube.time.values).year
    for k, y in enumerate((2019, 2020)):
        np.testing.assert_allclose(
            comp.B04_median.values[k], np.nanmedian(cube.B04.values[year == y], axis=0), rtol=1e-6
        )
