"""Exports read by the tools users open them with (issue 17 item 10), for real.

* COG/VRT: Debian's ``gdalinfo -json`` and rasterio: CRS, transform, scale/offset, nodata, and
  the decoded values against the cube.
* Zarr: ``xarray.open_zarr`` in a separate minimal venv (xarray, zarr, numpy from pip; neither
  stac2cube nor icechunk), values against the cube.
* NetCDF: ``ncdump -h`` (netcdf-bin) and netCDF4 with cftime: the CF attributes a CF checker
  looks at (Conventions, grid_mapping, coordinate axes, units, no missing values in
  coordinates, attribute names), and the values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(stac_url, tmp_path_factory):
    """A three-step cube (B04, B08, SCL) exported to all three formats."""
    from stac2cube import export_cube, get_stac_layers
    from stac2cube.testing.synthetic import demo_bbox

    tmp = tmp_path_factory.mktemp("exports")
    store = tmp / "field.icechunk"
    get_stac_layers(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end="2024-01-15",
        catalog=stac_url,
        collection="sentinel-2-c1-l2a",
        bands=["red", "nir", "SCL"],
        store=str(store),
    )
    for fmt, out in (("cog", "cog"), ("zarr", "field.zarr"), ("netcdf", "field.nc")):
        export_cube(store, fmt, tmp / out)
    return store, tmp


def _cube(store):
    """The cube decoded, and its geotransform read from the pixel-centre coordinates."""
    from stac2cube import open_cube

    decoded = open_cube(store).load()
    res = float(decoded.x.values[1] - decoded.x.values[0])
    transform = (
        float(decoded.x.values[0]) - res / 2,
        res,
        0.0,
        float(decoded.y.values[0]) + res / 2,
        0.0,
        -res,
    )
    return decoded, transform


def _encoding(store, band: str) -> tuple[float, float, float | None]:
    """scale_factor, add_offset and the fill value the cube stores for ``band``."""
    from stac2cube import Cube

    var = Cube(store).open_dataset(decode=False)[band]
    return (
        float(var.attrs.get("scale_factor", 1.0)),
        float(var.attrs.get("add_offset", 0.0)),
        var.attrs.get("_FillValue", var.attrs.get("nodata")),
    )


def _times(decoded) -> list[str]:
    return [str(np.datetime_as_string(t, unit="s")) for t in decoded.time.values]


def _gdalinfo(path: Path) -> dict:
    require(shutil.which("gdalinfo") is not None, "gdalinfo missing (apt: gdal-bin)")
    out = subprocess.run(
        ["gdalinfo", "-json", str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def test_gdalinfo_reads_every_cog_and_vrt(exported):
    store, tmp = exported
    decoded, transform = _cube(store)
    times = _times(decoded)
    for band in ("B04", "B08", "SCL"):
        scale, offset, nodata = _encoding(store, band)
        tifs = sorted((tmp / "cog" / band).glob("*.tif"))
        assert len(tifs) == len(times)
        for tif, when in zip(tifs, times, strict=True):
            info = _gdalinfo(tif)
            assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
            assert info["stac"]["proj:epsg"] == 32632
            assert info["size"] == [decoded.sizes["x"], decoded.sizes["y"]]
            assert info["geoTransform"] == pytest.approx(transform)
            (b,) = info["bands"]
            assert b["noDataValue"] == nodata
            assert b.get("scale", 1.0) == pytest.approx(scale)
            assert b.get("offset", 0.0) == pytest.approx(offset)
            assert when.replace("-", "").replace(":", "") in tif.name
        vrt = _gdalinfo(tmp / "cog" / f"{band}.vrt")
        assert vrt["driverShortName"] == "VRT"
        assert vrt["geoTransform"] == pytest.approx(transform)
        assert "32632" in vrt["coordinateSystem"]["wkt"]
        assert [b["description"] for b in vrt["bands"]] == times
        for b in vrt["bands"]:
            assert b["noDataValue"] == nodata
            assert b.get("scale", 1.0) == pytest.approx(scale)
            assert b.get("offset", 0.0) == pytest.approx(offset)
    assert _encoding(store, "B04")[:2] == (pytest.approx(1e-4), pytest.approx(-0.1))


def test_rasterio_decodes_the_vrt_to_the_cube(exported):
    import rasterio

    store, tmp = exported
    decoded, transform = _cube(store)
    for band in ("B04", "SCL"):
        with rasterio.open(tmp / "cog" / f"{band}.vrt") as src:
            assert src.crs.to_epsg() == 32632
            assert tuple(src.transform)[:6] == pytest.approx(
                (transform[1], 0, transform[0], 0, transform[5], transform[3])
            )
            assert src.count == decoded.sizes["time"]
            raw = src.read()
            nodata = src.nodata
            values = np.where(
                raw == nodata,
                np.nan,
                raw * np.array(src.scales)[:, None, None] + np.array(src.offsets)[:, None, None],
            )
        expected = decoded[band].values.astype("float64")
        if band == "SCL":  # classes stay integers in the cube: nodata class 0
            expected = np.where(expected == nodata, np.nan, expected)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6, equal_nan=True)


_READER = """
import json, sys
import xarray as xr
ds = xr.open_zarr(sys.argv[1])
b04 = ds["B04"].values
print(json.dumps({
    "dims": dict(ds.sizes),
    "vars": sorted(ds.data_vars),
    "time": [str(t)[:19] for t in ds.time.values],
    "b04_nan": int((b04 != b04).sum()),
    "b04_sum": float(b04[b04 == b04].astype("float64").sum()),
    "x_attrs": dict(ds.x.attrs),
    "crs_wkt": ds.spatial_ref.attrs.get("crs_wkt", ""),
    "b04_encoding": {k: float(v) for k, v in ds["B04"].encoding.items()
                     if k in ("scale_factor", "add_offset")},
}))
"""


@pytest.fixture(scope="module")
def reader_venv(tmp_path_factory) -> Path:
    """A venv with only xarray, zarr and numpy (pip, the project's constraints)."""
    venv = tmp_path_factory.mktemp("reader") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), "xarray", "zarr", "numpy"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    require(pip.returncode == 0, f"pip could not install xarray/zarr/numpy: {pip.stderr[-500:]}")
    return python


@pytest.mark.slow
def test_open_zarr_without_stac2cube_or_icechunk(exported, reader_venv):
    store, tmp = exported
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for module in ("stac2cube", "icechunk", "rioxarray"):
        probe = subprocess.run(
            [str(reader_venv), "-c", f"import {module}"],
            capture_output=True, text=True, cwd=tmp, env=env, check=False,
        )  # fmt: skip
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    run = subprocess.run(
        [str(reader_venv), "-c", _READER, str(tmp / "field.zarr")],
        capture_output=True, text=True, cwd=tmp, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    decoded, _ = _cube(store)
    assert got["dims"] == {k: int(v) for k, v in decoded.sizes.items() if k in got["dims"]}
    assert got["vars"] == sorted(decoded.data_vars)
    assert got["time"] == _times(decoded)
    b04 = decoded.B04.values
    assert got["b04_nan"] == int(np.isnan(b04).sum())
    assert got["b04_sum"] == pytest.approx(float(np.nansum(b04.astype("float64"))), rel=1e-9)
    assert got["b04_encoding"] == pytest.approx({"scale_factor": 1e-4, "add_offset": -0.1})
    assert got["x_attrs"]["standard_name"] == "projection_x_coordinate"
    assert 'ID["EPSG",32632]' in got["crs_wkt"]


def test_ncdump_shows_cf_attributes(exported):
    require(shutil.which("ncdump") is not None, "ncdump missing (apt: netcdf-bin)")
    _, tmp = exported
    header = subprocess.run(
        ["ncdump", "-h", str(tmp / "field.nc")], capture_output=True, text=True, check=True
    ).stdout
    for line in (
        ':Conventions = "CF-1.8" ;',
        "ushort B04(time, y, x) ;",
        "B04:scale_factor = 0.0001 ;",
        "B04:add_offset = -0.1 ;",
        "B04:_FillValue = 0US ;",
        'B04:units = "1" ;',
        'B04:grid_mapping = "spatial_ref" ;',
        'spatial_ref:grid_mapping_name = "transverse_mercator" ;',
        'x:standard_name = "projection_x_coordinate" ;',
        'y:standard_name = "projection_y_coordinate" ;',
        'x:units = "m" ;',
        'x:axis = "X" ;',
        'time:units = "seconds since 1970-01-01" ;',
        'time:standard_name = "time" ;',
    ):
        assert line in header, line
    for coordinate in ("x", "y", "time"):  # CF 2.5.1: coordinates have no missing values
        assert f"{coordinate}:_FillValue" not in header
    # CF 2.3: names of letters, digits and underscores (ncdump escapes others: stac2cube\:x)
    assert "\\:" not in header
    assert re.search(r"^\t\t:stac2cube_request = ", header, re.MULTILINE)


def test_netcdf4_reads_values_and_cf_metadata(exported):
    import cftime
    import netCDF4

    store, tmp = exported
    decoded, transform = _cube(store)
    with netCDF4.Dataset(tmp / "field.nc") as nc:
        assert nc.Conventions == "CF-1.8"
        for name in ("B04", "B08", "SCL"):
            var = nc.variables[name]
            mapping = nc.variables[var.grid_mapping]
            assert mapping.grid_mapping_name == "transverse_mercator"
            assert 'ID["EPSG",32632]' in mapping.crs_wkt
            for coord in var.coordinates.split():
                assert coord in nc.variables, coord
        b04 = nc.variables["B04"][:]  # netCDF4 applies scale/offset and masks _FillValue
        np.testing.assert_allclose(
            np.ma.filled(b04.astype("float64"), np.nan), decoded.B04.values, atol=1e-6
        )
        time = nc.variables["time"]
        when = cftime.num2date(time[:], time.units, time.calendar)
        assert [w.strftime("%Y-%m-%dT%H:%M:%S") for w in when] == _times(decoded)
        x = nc.variables["x"][:]
        assert float(x[0]) - transform[1] / 2 == pytest.approx(transform[0])
        assert nc.variables["x"].units == "m"
