"""The reader reads a cube grid lying on the asset's own pixels without a warped VRT, and gets
the same values as stackstac's VRT reader (nearest) for every window, inside the asset, across
its edges and beyond it; grids off the asset's pixels still go through the VRT."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from stackstac.raster_spec import RasterSpec
from stackstac.rio_reader import AutoParallelRioReader

from stac2cube.load import RetryingReader, _AlignedWindows, aligned_offset

ORIGIN = (690000.0, 5340000.0)  # UTM 32N, 10 m pixels
SIZE = 300


def write_asset(path, *, nodata: int | None) -> np.ndarray:
    values = np.random.default_rng(3).integers(1, 5000, (SIZE, SIZE)).astype("uint16")
    values[:, :20] = 0  # a nodata strip (valid 0 where the file declares no nodata)
    with rasterio.open(
        path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint16",
        crs="EPSG:32632", transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]),
        nodata=nodata, tiled=True, blockxsize=128, blockysize=128, compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(values, 1)
    return values


def readers(path, bounds):
    spec = RasterSpec(epsg=32632, bounds=bounds, resolutions_xy=(10.0, 10.0))
    kw = dict(url=str(path), spec=spec, resampling=Resampling.nearest, dtype=np.dtype("uint16"),
              fill_value=np.uint16(0), scale_offset=(1.0, 0.0))  # fmt: skip
    return RetryingReader(**kw), AutoParallelRioReader(**kw), spec


def windows(shape):
    h, w = shape
    return [Window(0, 0, w, h), Window(0, 0, 64, 64), Window(w - 50, h - 40, 50, 40),
            Window(17, 5, 100, 33)]  # fmt: skip


x0, y1 = ORIGIN
GRIDS = {
    # inside the asset, 500 m (50 px) from its corner
    "inside": ((x0 + 500, y1 - 2500, x0 + 2000, y1 - 500), True),
    # across its east and south edges: the part beyond is masked (fill)
    "across edges": ((x0 + 2000, y1 - 3600, x0 + 3600, y1 - 2000), True),
    # west of it and north of it
    "before origin": ((x0 - 400, y1 - 800, x0 + 800, y1 + 300), True),
    # 5 m off the asset's pixels: a warp is needed (the VRT)
    "off the pixels": ((x0 + 505, y1 - 2505, x0 + 2005, y1 - 505), False),
}


@pytest.mark.parametrize("nodata", [0, None])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_aligned_reads_equal_the_vrt_reads(tmp_path, grid, nodata):
    path = tmp_path / "a.tif"
    write_asset(path, nodata=nodata)
    bounds, aligned = GRIDS[grid]
    ours, plain, spec = readers(path, bounds)
    for window in windows(spec.shape):
        np.testing.assert_array_equal(ours.read(window), plain.read(window))
    assert isinstance(ours.dataset, _AlignedWindows) == aligned
    assert not isinstance(plain.dataset, _AlignedWindows)


def test_aligned_read_is_the_asset_window_and_fill_outside(tmp_path):
    """Values computed independently: the asset's own array, shifted by whole pixels."""
    values = write_asset(tmp_path / "a.tif", nodata=0)
    bounds, _ = GRIDS["across edges"]
    ours, _, spec = readers(tmp_path / "a.tif", bounds)
    got = ours.read(Window(0, 0, spec.shape[1], spec.shape[0]))
    want = np.zeros(spec.shape, "uint16")
    inside = values[200:, 200:]  # the grid starts 200 px east and 200 px south of the asset
    want[: inside.shape[0], : inside.shape[1]] = inside
    np.testing.assert_array_equal(got, want)


def test_aligned_offset():
    class DS:
        crs = rasterio.crs.CRS.from_epsg(32632)
        transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])

    grid = {"crs": 32632, "transform": Affine(10, 0, ORIGIN[0] - 30, 0, -10, ORIGIN[1] + 20)}
    assert aligned_offset(grid, DS) == (-3, -2)
    assert aligned_offset({**grid, "crs": 32633}, DS) is None
    assert (
        aligned_offset({**grid, "transform": Affine(20, 0, ORIGIN[0], 0, -20, ORIGIN[1])}, DS)
        is None
    )
