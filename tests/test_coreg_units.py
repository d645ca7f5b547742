"""Co-registration's pure parts: resampling, consensus, window placement, settings.

Expected values are computed here from their definitions (a band-limited signal sampled at
shifted positions, hand-made estimates), not through the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stac2cube.coreg_shift import from_stored, shift_array_step, shift_block, to_stored
from stac2cube.coregistration import (
    CoregistrationError,
    CoregSettings,
    Estimate,
    consensus,
    make_settings,
    place_windows,
)
from stac2cube.errors import InvalidRequestError


def _wave(rows, cols, dx=0.0, dy=0.0):
    """A smooth band-limited pattern, its content moved ``dx`` east and ``dy`` south."""
    x, y = cols - dx, rows - dy
    return np.cos(2 * np.pi * (x / 9.0 + y / 13.0)) + 0.5 * np.sin(2 * np.pi * (x / 17.0 - y / 7.0))


@pytest.mark.parametrize(("sx", "sy"), [(0.3, -1.7), (-1.7, 0.3), (0.5, 0.5), (2.0, 0.0)])
def test_continuous_shift_matches_the_moved_signal(sx, sy):
    rows, cols = np.mgrid[0:80, 0:90].astype(float)
    out = shift_block(_wave(rows, cols), sx, sy)
    inner = (slice(10, -10), slice(10, -10))
    np.testing.assert_allclose(out[inner], _wave(rows, cols, sx, sy)[inner], atol=0.01)
    # content from outside the image is nodata: rows/cols the shift brought in
    if sy < 0:
        assert np.isnan(out[-1]).all()
    if sx > 0.5:
        assert np.isnan(out[:, 0]).all()


def test_nearest_keeps_classes_and_nodata():
    classes = np.array([[4, 4, 9, 9], [4, 0, 9, 9], [5, 5, 6, 6]], float)
    classes[classes == 0] = np.nan
    out = shift_block(classes, 0.6, 0.0, kind="nearest")  # rounds to one column east
    np.testing.assert_array_equal(out[:, 1:], classes[:, :-1])
    assert np.isnan(out[:, 0]).all()
    stored = to_stored(out, np.dtype("uint8"), 0)
    assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 4, 5, 6, 9}


def test_valid_values_never_become_the_fill_value():
    values = np.array([[np.nan, 0.2, 0.6, 70000.0, -3.0]])
    stored = to_stored(values, np.dtype("uint16"), 0)
    assert stored.tolist() == [[0, 1, 1, 65535, 1]]
    np.testing.assert_array_equal(
        np.isnan(from_stored(stored, 0)), [[True, False, False, False, False]]
    )


def test_nodata_stays_nodata_and_its_neighbours_keep_values():
    img = np.full((30, 30), 100.0)
    img[10:20, 10:20] = np.nan
    out = shift_block(img, 0.4, 0.0)  # nearest source: same column
    np.testing.assert_array_equal(np.isnan(out), np.isnan(img))
    assert np.nanmax(np.abs(out - 100.0)) < 1e-9  # near the hole: the nearest value


def test_strip_by_strip_equals_the_whole_image():
    import zarr

    rng = np.random.default_rng(3)
    img = rng.normal(size=(150, 70))
    img[40:45, :10] = np.nan
    arr = zarr.create_array(store={}, shape=(2, 150, 70), chunks=(1, 32, 32), dtype="float64",
                            fill_value=np.nan)  # fmt: skip
    arr[1] = img
    shift_array_step(arr, (1,), -0.7, 2.3, kind="continuous", fill=np.nan, strip=32)
    np.testing.assert_array_equal(arr[1], shift_block(img, -0.7, 2.3))
    assert np.isnan(arr[0]).all()  # other steps untouched


def test_consensus_rejects_outliers_and_weights_by_reliability():
    est = [Estimate(0.30, -1.70, 90.0), Estimate(0.32, -1.72, 60.0), Estimate(3.0, 2.0, 99.0)]
    x, y, rel, n = consensus(est, tolerance=0.5)
    assert n == 2
    assert x == pytest.approx((0.30 * 90 + 0.32 * 60) / 150, abs=1e-4)
    assert y == pytest.approx((-1.70 * 90 - 1.72 * 60) / 150, abs=1e-4)
    assert rel == pytest.approx((90 * 90 + 60 * 60) / 150, abs=0.01)


def test_consensus_failures_name_the_reason():
    with pytest.raises(CoregistrationError, match="no match found"):
        consensus([Estimate(error="no match found"), Estimate(error="no match found")])
    with pytest.raises(CoregistrationError, match="max_shift"):
        consensus([Estimate(6.0, 0.0, 90.0)], max_shift=5)
    with pytest.raises(CoregistrationError, match="windows disagree"):
        consensus([Estimate(0, 0, 50), Estimate(2, 0, 50), Estimate(4, 0, 50)], tolerance=0.5)


def test_windows_avoid_a_cloudy_centre():
    settings = CoregSettings(window=64, windows=4)
    cell, size = 16, 200
    clear = np.ones((size, size), bool)
    clear[60:140, 60:140] = False
    n = math.ceil(size / cell)
    padded = np.zeros((n * cell, n * cell), bool)
    padded[:size, :size] = clear
    counts = padded.reshape(n, cell, n, cell).sum(axis=(1, 3)).astype(float)
    windows = place_windows(counts, cell, size, size, settings)
    assert windows
    for r, c in windows:
        assert clear[r : r + 64, c : c + 64].mean() >= 0.9
    # with a clear centre, the first window sits there
    first = place_windows(np.full((n, n), cell * cell, float), cell, size, size, settings)[0]
    assert first == (64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_shift": 0}, "--max-shift must be > 0"),
        ({"max_shift": "x"}, "is not a number"),
        ({"window": 48}, "power of two"),
        ({"window": 2048}, "power of two"),
        ({"reference": "2024-13-45"}, "give median or a date"),
    ],
)
def test_settings_errors_are_one_line(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message) as info:
        make_settings(**kwargs)
    assert "\n" not in str(info.value)


def test_build_switch_refuses_missions_and_bands_it_cannot_use():
    from stac2cube.request import make_request

    base = dict(bbox=[11.5, 48.1, 11.52, 48.11], start="2024-01-01", end="2024-01-31")
    with pytest.raises(InvalidRequestError, match="works on Sentinel-2 cubes"):
        make_request(mission="landsat-c2-l2", bands=["red"], coregister=True, **base)
    with pytest.raises(InvalidRequestError, match="needs a native 10 m band"):
        make_request(mission="sentinel-2-l2a", bands=["B05", "SCL"], coregister=True, **base)
    assert make_request(mission="sentinel-2-l2a", bands=["B04"], coregister=True, **base).coregister
