"""The integer path of the pixel engine: Sentinel-2 reflectance stored as DN + shift, with no
float round trip, equals the float path (physical float32 -> CF encoding) for every DN."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from stac2cube.encoding import S2_REFLECTANCE_ENCODING
from stac2cube.missions import get_mission
from stac2cube.pixels import apply_radiometry, integer_shifts, stored_integers
from stac2cube.radiometry import ProcessingOptions, Radiometry

MISSION = get_mission("sentinel-2-l2a")
OPTIONS = ProcessingOptions()
#: what the rules decide for Sentinel-2 (baseline >= 04.00: DN carry +1000; before: none)
RADIOMETRY = {
    0: Radiometry("s2-offset-1000", 1e-4, -0.1, saturated=65535),
    1000: Radiometry("s2-no-offset", 1e-4, 0.0, saturated=65535),
}


def every_dn(n_items: int) -> xr.DataArray:
    """All 65536 uint16 values, for ``n_items`` items and two bands (B04, B08)."""
    dn = np.arange(65536, dtype="uint16").reshape(256, 256)
    data = np.broadcast_to(dn, (n_items, 2, 256, 256)).copy()
    data[:, 1] = data[:, 1, ::-1]  # the second band in another order
    return xr.DataArray(
        data, dims=("item", "band", "y", "x"), coords={"band": ["B04", "B08"]}
    ).chunk({"y": 128, "x": 128})


def float_path(stack, rads, drop=None) -> np.ndarray:
    """What the cube stored before: float32 physical values, CF-encoded by xarray."""
    phys = apply_radiometry(MISSION, "reflectance", stack, rads, OPTIONS)
    if drop is not None:
        phys = phys.where(~drop)
    var = xr.Variable(phys.dims, phys.values, encoding=dict(S2_REFLECTANCE_ENCODING))
    return xr.conventions.encode_cf_variable(var).values


@pytest.mark.parametrize("shifts", [(0,), (1000,), (0, 1000)])
def test_integer_path_equals_float_path_for_every_dn(shifts):
    rads = [RADIOMETRY[k] for k in shifts]
    stack = every_dn(len(rads))
    got_shifts = integer_shifts(MISSION, "reflectance", stack, rads, OPTIONS)
    np.testing.assert_array_equal(got_shifts, np.array([[k, k] for k in shifts]))
    drop = xr.DataArray(np.random.default_rng(1).random((len(rads), 256, 256)) < 0.1,
                        dims=("item", "y", "x"))  # fmt: skip
    got = stored_integers(stack, rads, got_shifts, drop=drop).values
    want = float_path(stack, rads, drop)
    assert got.dtype == want.dtype == np.uint16
    np.testing.assert_array_equal(got, want)
    assert (got == 0).sum() > (drop.values.sum() * 2)  # nodata, saturated and clouds are fill


def test_missing_band_is_fill_and_other_radiometry_takes_the_float_path():
    rad = Radiometry("s2-offset-1000", 1e-4, -0.1, saturated=65535, missing=("B08",))
    stack = every_dn(1)
    shifts = integer_shifts(MISSION, "reflectance", stack, [rad], OPTIONS)
    got = stored_integers(stack, [rad], shifts, missing=np.array([[False, True]])).values
    assert (got[0, 1] == 0).all()
    np.testing.assert_array_equal(got[0, 0], float_path(stack, [rad])[0, 0])
    odd = Radiometry("odd", 1e-4, -0.05)  # 500 DN: not a checked shift
    assert integer_shifts(MISSION, "reflectance", stack, [odd], OPTIONS) is None
    other_scale = Radiometry("odd", 2e-4, -0.1)
    assert integer_shifts(MISSION, "reflectance", stack, [other_scale], OPTIONS) is None
    assert integer_shifts(MISSION, "classification", stack, [RADIOMETRY[0]], OPTIONS) is None


def test_stored_metadata_and_decoded_values_equal_the_float_path(tmp_path):
    """Written as integers with CF attributes, or as floats with the CF encoding: the same
    array (dtype, fill value, attributes) and the same decoded values."""
    import zarr

    rads = [RADIOMETRY[0], RADIOMETRY[1000]]
    stack = every_dn(2)
    phys = apply_radiometry(MISSION, "reflectance", stack, rads, OPTIONS).isel(item=0, band=0)
    ints = stored_integers(stack, rads, np.array([[0, 0], [1000, 1000]])).isel(item=0, band=0)
    flt = xr.Dataset({"B04": phys.drop_vars("band")})
    flt.B04.encoding = dict(S2_REFLECTANCE_ENCODING)
    cf = {k: S2_REFLECTANCE_ENCODING[k] for k in ("scale_factor", "add_offset", "_FillValue")}
    itg = xr.Dataset({"B04": ints.drop_vars("band").assign_attrs(cf)})
    itg.B04.encoding = {"dtype": "uint16"}
    flt.to_zarr(tmp_path / "f.zarr", zarr_format=3, consolidated=False)
    itg.to_zarr(tmp_path / "i.zarr", zarr_format=3, consolidated=False)
    a = zarr.open_group(tmp_path / "f.zarr", mode="r")["B04"]
    b = zarr.open_group(tmp_path / "i.zarr", mode="r")["B04"]
    assert (a.dtype, a.fill_value, dict(a.attrs)) == (b.dtype, b.fill_value, dict(b.attrs))
    np.testing.assert_array_equal(a[:], b[:])
    fa = xr.open_zarr(tmp_path / "f.zarr", consolidated=False).B04.values
    fb = xr.open_zarr(tmp_path / "i.zarr", consolidated=False).B04.values
    np.testing.assert_array_equal(fa, fb)


@pytest.mark.parametrize("chunked", [False, True])
def test_stored_mosaic_equals_float_path_then_first_valid(chunked):
    """The fused integer mosaic (one numpy function per chunk) equals, value for value, the
    float path encoded per item followed by the first-valid rule written out here in numpy:
    steps of 1-3 items, mixed baselines, a missing band, cloud drops, blocks of any size."""
    from stac2cube.pixels import stored_mosaic

    rng = np.random.default_rng(7)
    shifts_k = [0, 1000, 1000, 0, 1000, 0]
    rads = [RADIOMETRY[k] for k in shifts_k]
    steps = [[0, 1, 2], [3], [4, 5]]
    dn = rng.integers(0, 4000, (6, 2, 64, 64)).astype("uint16")
    dn[rng.random(dn.shape) < 0.3] = 0  # nodata
    dn[rng.random(dn.shape) < 0.05] = 65535  # saturated
    stack = xr.DataArray(dn, dims=("item", "band", "y", "x"), coords={"band": ["B04", "B08"]})
    missing = np.zeros((6, 2), bool)
    missing[1, 1] = True  # the second item lacks B08
    drop = xr.DataArray(rng.random((6, 64, 64)) < 0.2, dims=("item", "y", "x"))
    if chunked:
        stack = stack.chunk({"item": 1, "band": 1, "y": 24, "x": 40})
        drop = drop.chunk({"item": 2, "y": 32, "x": 64})
    shifts = np.array([[k, k] for k in shifts_k])
    got = stored_mosaic(stack, rads, shifts, steps, missing=missing, drop=drop)

    phys = apply_radiometry(MISSION, "reflectance", stack.compute(), rads, OPTIONS)
    phys = phys.where(~drop.compute()).where(~xr.DataArray(missing, dims=("item", "band")))
    var = xr.Variable(phys.dims, phys.values, encoding=dict(S2_REFLECTANCE_ENCODING))
    per_item = xr.conventions.encode_cf_variable(var).values  # 0 where NaN
    want = np.zeros((len(steps), 2, 64, 64), "uint16")
    for t, positions in enumerate(steps):
        for p in reversed(positions):  # the first item with a value wins
            want[t] = np.where(per_item[p] != 0, per_item[p], want[t])
    assert got.dims == ("time", "band", "y", "x")
    assert got.band.values.tolist() == ["B04", "B08"]
    np.testing.assert_array_equal(got.values, want)
    assert (want == 0).any()  # some pixels have no valid item at all
    assert (want[0] != per_item[0]).any()  # later items fill the first item's gaps


def test_stored_mosaics_of_different_stacks_keep_their_own_values_in_one_computation():
    """Two stacks mosaicked in one dask computation (two batches, two cubes built in parallel
    on one cluster): each result is its own stack's, as computed without dask."""
    import dask

    from stac2cube.pixels import stored_mosaic

    rads = [RADIOMETRY[1000]] * 2
    shifts = np.zeros((2, 2), "int32")
    stacks = [every_dn(2), every_dn(2)[:, :, ::-1, :]]
    lazy = [stored_mosaic(s.chunk({"item": 1, "band": 1}), rads, shifts, [[0, 1]]) for s in stacks]
    assert lazy[0].data.name != lazy[1].data.name
    got = dask.compute(*(m.data for m in lazy))
    for stack, values in zip(stacks, got, strict=True):
        np.testing.assert_array_equal(values, stored_mosaic(stack, rads, shifts, [[0, 1]]).values)
    assert not np.array_equal(got[0], got[1])
