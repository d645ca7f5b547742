"""Independent expectations: what a cube pixel must hold, computed from the COGs themselves.

Nothing here calls stac2cube's loading or radiometry code: DN are read from the COG files with
rasterio and converted by the documented formulas.
"""

from __future__ import annotations

import numpy as np
import rasterio
from pyproj import Transformer


def dn_on_grid(href: str, xs: np.ndarray, ys: np.ndarray, epsg: int):
    """DN of the COG at ``href`` under each cube pixel centre (nearest = containing pixel).

    Returns ``(dn, safe)``: ``dn`` 0 outside the COG; ``safe`` False where the centre lies within
    5% of a source pixel edge (where a reprojecting reader may round either way).
    """
    path = href.removeprefix("file://")
    with rasterio.open(path) as src:
        data = src.read(1)
        src_epsg = src.crs.to_epsg()
        t = src.transform
    X, Y = np.meshgrid(xs, ys)
    if src_epsg != epsg:
        X, Y = Transformer.from_crs(epsg, src_epsg, always_xy=True).transform(X, Y)
    colf = (X - t.c) / t.a
    rowf = (Y - t.f) / t.e
    col = np.floor(colf).astype(int)
    row = np.floor(rowf).astype(int)
    inside = (row >= 0) & (row < data.shape[0]) & (col >= 0) & (col < data.shape[1])
    dn = np.zeros(X.shape, data.dtype)
    dn[inside] = data[row[inside], col[inside]]
    fr, fc = rowf - row, colf - col
    safe = (fr > 0.05) & (fr < 0.95) & (fc > 0.05) & (fc < 0.95)
    return dn, safe


def reflectance(dn: np.ndarray, offset_dn: int) -> np.ndarray:
    """The documented formula: reflectance = (DN + offset) / 10000, NaN where DN == 0."""
    out = (dn.astype("float64") + offset_dn) / 10000.0
    return np.where(dn == 0, np.nan, out)


def mosaic_first_valid(layers: list[np.ndarray]) -> np.ndarray:
    """First non-NaN value along the list."""
    out = np.full(layers[0].shape, np.nan)
    for layer in layers:
        out = np.where(np.isnan(out), layer, out)
    return out
