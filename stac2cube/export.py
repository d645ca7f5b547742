"""Export a cube to formats that need no stac2cube (nor icechunk) to read.

* ``zarr``: a plain Zarr v3 directory store (``xarray.open_zarr(OUT)``), same encoding.
* ``netcdf``: one NetCDF-4 file, same CF encoding (uint16 + scale/offset).
* ``cog``: one Cloud-Optimized GeoTIFF per band and time step (``OUT/B04/B04_20240105T103021.tif``,
  stored integers with GDAL scale/offset and nodata) and one VRT per band whose raster bands are
  the time steps (``OUT/B04.vrt``).
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from stac2cube.cube import Cube, as_cube
from stac2cube.errors import InvalidRequestError, StoreError

ExportFormat = Literal["zarr", "netcdf", "cog"]
_CF_ENCODING = ("dtype", "scale_factor", "add_offset", "_FillValue", "units", "calendar")


def export_cube(
    path: str | Path | Cube,
    fmt: ExportFormat,
    out: str | Path,
    *,
    snapshot: str | None = None,
    cloud_threshold: float | None = None,
) -> list[Path]:
    """Write the cube at ``path`` (latest or ``snapshot``) to ``out`` in format ``fmt``.

    ``path`` may be a :class:`~stac2cube.cube.Cube` handle. ``cloud_threshold`` exports the
    masked view (clouds and shadows of the ``clouds`` group at that threshold, percent, as
    NaN; see :func:`stac2cube.store.open_cube`).

    Returns:
        The files or stores written.

    Raises:
        InvalidRequestError: unknown format, or ``out`` already exists.
    """
    if fmt not in ("zarr", "netcdf", "cog"):
        raise InvalidRequestError(f"unknown export format {fmt!r}; use zarr, netcdf or cog")
    out = Path(out)
    if out.exists():
        raise InvalidRequestError(f"export target {out} exists; choose a new --out path")
    cube = as_cube(path)
    ds = _cf_coordinates(cube.open_dataset(snapshot=snapshot))
    if cloud_threshold is not None:
        from stac2cube.clouds import masked_view

        ds = masked_view(ds, cube.open_dataset("clouds", snapshot=snapshot), cloud_threshold)
    if fmt == "zarr":
        with warnings.catch_warnings():
            # consolidated metadata lets plain `xarray.open_zarr(out)` open it quickly and
            # quietly; zarr-python notes it is an extension of the v3 spec
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not")
            ds.to_zarr(out, mode="w-", zarr_format=3, consolidated=True)
        return [out]
    if fmt == "netcdf":
        text = [n for n, v in ds.variables.items() if v.dtype.kind in "OTU"]
        nc = ds.assign_coords(
            {
                n: (ds[n].dims, np.array([str(v) for v in ds[n].values.ravel()], dtype=object))
                for n in text
            }
        )
        for name, var in nc.variables.items():
            kept = {k: v for k, v in var.encoding.items() if k in _CF_ENCODING}
            if name in nc.data_vars:
                kept.update(zlib=True, complevel=4)
            if name in text:
                kept.pop("dtype", None)
            if name in ("x", "y", "time"):  # CF 2.5.1: no missing values in coordinates
                kept["_FillValue"] = None
            var.encoding = kept
        # CF 2.3: attribute names of letters, digits and underscores (stac2cube:request ->
        # stac2cube_request)
        nc.attrs = {k.replace(":", "_"): v for k, v in nc.attrs.items()}
        with warnings.catch_warnings():
            # zarr reports explicit little-endian dtypes; netCDF4 writes native order
            warnings.filterwarnings("ignore", message="endian-ness of dtype and endian kwarg")
            nc.to_netcdf(out, engine="netcdf4")
        return [out]
    return _export_cogs(cube, out, snapshot)


def _cf_coordinates(ds):
    """``ds`` with the CF attributes readers look for: ``Conventions``, and the axes of the
    projected grid (``projection_x_coordinate`` in metres, ...) and of time."""
    from stac2cube import __version__

    ds = ds.copy()
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": "stac2cube data cube",
        "source": f"stac2cube {__version__}",
        **ds.attrs,
    }
    axes = {
        "x": {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of "
              "projection (pixel centre)", "units": "m", "axis": "X"},
        "y": {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of "
              "projection (pixel centre)", "units": "m", "axis": "Y"},
        "time": {"standard_name": "time", "long_name": "time of the step's first scene",
                 "axis": "T"},
    }  # fmt: skip
    for name, attrs in axes.items():
        if name in ds.coords:
            ds[name].attrs = {**attrs, **ds[name].attrs}
    return ds


def _export_cogs(cube: Cube, out: Path, snapshot: str | None) -> list[Path]:
    import rasterio
    from rasterio.transform import Affine

    state = cube.read_state(snapshot)
    if state is None:
        raise StoreError(f"no cube at {cube.name}")
    grid = state.grid
    raw = cube.open_dataset(snapshot=snapshot, decode=False)
    written: list[Path] = []
    out.mkdir(parents=True)
    times = pd.DatetimeIndex(raw.time.values)
    for name, var in raw.data_vars.items():
        band_dir = out / name
        band_dir.mkdir()
        files = []
        scale = float(var.attrs.get("scale_factor", 1.0))
        offset = float(var.attrs.get("add_offset", 0.0))
        nodata = var.attrs.get("_FillValue", var.attrs.get("nodata"))
        for k, t in enumerate(times):
            target = band_dir / f"{name}_{t:%Y%m%dT%H%M%S}.tif"
            data = np.asarray(var.isel(time=k).values)
            with rasterio.open(
                target,
                "w",
                driver="COG",
                width=grid.width,
                height=grid.height,
                count=1,
                dtype=data.dtype.name,
                crs=grid.crs,
                transform=Affine(*grid.transform),
                nodata=nodata,
                compress="deflate",
                blocksize=512,
            ) as dst:
                dst.write(data, 1)
                dst.scales = (scale,)
                dst.offsets = (offset,)
                dst.set_band_description(1, f"{name} {t.isoformat()}")
            files.append(target)
        vrt = out / f"{name}.vrt"
        vrt.write_text(_vrt(grid, files, times, str(var.dtype), nodata, scale, offset))
        written += [*files, vrt]
    return written


_GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "float32": "Float32",
    "int32": "Int32",
    "float64": "Float64",
}


def _vrt(grid, files, times, dtype, nodata, scale, offset) -> str:
    """A VRT stacking single-band files as its bands (one per time step)."""
    gt = ", ".join(
        repr(v)
        for v in (grid.bounds[0], grid.resolution, 0.0, grid.bounds[3], 0.0, -grid.resolution)
    )
    from pyproj import CRS

    srs = html.escape(CRS.from_epsg(grid.epsg).to_wkt())
    bands = []
    for k, (f, t) in enumerate(zip(files, times, strict=True), start=1):
        nd = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
        bands.append(
            f'  <VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{k}">\n'
            f"    <Description>{t.isoformat()}</Description>{nd}\n"
            f"    <Offset>{offset!r}</Offset><Scale>{scale!r}</Scale>\n"
            f'    <SimpleSource><SourceFilename relativeToVRT="1">{f.parent.name}/{f.name}'
            f"</SourceFilename><SourceBand>1</SourceBand></SimpleSource>\n"
            f"  </VRTRasterBand>"
        )
    return (
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">\n'
        f"  <SRS>{srs}</SRS>\n  <GeoTransform>{gt}</GeoTransform>\n"
        + "\n".join(bands)
        + "\n</VRTDataset>\n"
    )
