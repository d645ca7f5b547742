"""What a build leaves besides the pixels: composites, the statistics CSV, quicklooks.

Composites and statistics are recomputed here with numpy from the pixels the cube holds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from stac2cube import get_stac_layers, open_cube
from stac2cube.composites import open_composites, parse_composites
from stac2cube.errors import InvalidRequestError
from stac2cube.request import make_request
from stac2cube.settings import sidecar_path
from stac2cube.testing.synthetic import TILE_A, demo_bbox

pytestmark = pytest.mark.integration


def small_bbox():
    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 100, y1 - 500)
    e, n = tr.transform(x0 + 500, y1 - 100)
    return [w, s, e, n]


@pytest.fixture(scope="module")
def monthly_cube(stac_url, season_api, tmp_path_factory):
    """2019-2020 (24 monthly steps) with composites of every period kind, GIF quicklook."""
    store = tmp_path_factory.mktemp("products") / "monthly.icechunk"
    summary = get_stac_layers(
        mission="sentinel-2-l2a", bbox=small_bbox(), start="2019-01-01", end="2020-12-31",
        catalog=stac_url, collection="season-s2", bands=["B02", "B03", "B04", "SCL"],
        indices=["NDVI"], store=str(store), quicklook="gif",
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
                collection="season-s2", bands=["B04"], store=str(grow))  # fmt: skip
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
