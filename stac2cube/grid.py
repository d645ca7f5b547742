"""The fixed pixel grid of a cube: CRS, resolution and bounds snapped to the resolution.

``x``/``y`` coordinates are pixel centres (CF, rioxarray, odc-geo). Bounds snap *outward* to
multiples of the resolution in the target CRS, so two cubes of one CRS and resolution share
pixel edges and Sentinel-2 / Landsat tiles (whose origins are multiples of 10/30 m) are read
without resampling at their native resolution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

from stac2cube.errors import InvalidRequestError


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing ``(lon, lat)``.

    >>> utm_epsg(11.5, 48.1)
    32632
    >>> utm_epsg(-40.0, -4.6)
    32724
    """
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def parse_crs(crs: str | int) -> int:
    """EPSG code of ``crs`` (``EPSG:32632``, ``32632``), or a clear error."""
    try:
        code = CRS.from_user_input(int(crs) if str(crs).isdigit() else crs).to_epsg()
    except Exception as exc:
        raise InvalidRequestError(f"invalid crs {crs!r}: {exc}") from None
    if code is None:
        raise InvalidRequestError(f"crs {crs!r} has no EPSG code; give one like EPSG:32632")
    if CRS.from_epsg(code).is_geographic:
        raise InvalidRequestError(
            f"crs {crs!r} is geographic; cubes need a projected CRS in metres (e.g. a UTM zone)"
        )
    return code


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid.

    Attributes:
        epsg: EPSG code of the projected CRS.
        resolution: pixel size in CRS units (metres).
        bounds: ``(minx, miny, maxx, maxy)``, each a multiple of ``resolution``.
    """

    epsg: int
    resolution: float
    bounds: tuple[float, float, float, float]

    @property
    def width(self) -> int:
        return round((self.bounds[2] - self.bounds[0]) / self.resolution)

    @property
    def height(self) -> int:
        return round((self.bounds[3] - self.bounds[1]) / self.resolution)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL-order affine coefficients ``(a, b, c, d, e, f)`` as in rasterio's ``Affine``."""
        return (self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates, west to east."""
        return self.bounds[0] + self.resolution * (np.arange(self.width) + 0.5)

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates, north to south."""
        return self.bounds[3] - self.resolution * (np.arange(self.height) + 0.5)

    def to_attrs(self) -> dict[str, Any]:
        return {"epsg": self.epsg, "resolution": self.resolution, "bounds": list(self.bounds)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Grid:
        return cls(int(attrs["epsg"]), float(attrs["resolution"]), tuple(attrs["bounds"]))

    def differences(self, other: Grid) -> list[str]:
        """Human-readable differences to ``other`` (empty when equal)."""
        out = []
        if self.epsg != other.epsg:
            out.append(f"crs EPSG:{other.epsg} != cube's EPSG:{self.epsg}")
        if not math.isclose(self.resolution, other.resolution):
            out.append(f"resolution {other.resolution} != cube's {self.resolution}")
        if not np.allclose(self.bounds, other.bounds):
            out.append(f"bounds {list(other.bounds)} != cube's {list(self.bounds)}")
        return out


def snap_bounds(bounds: tuple[float, float, float, float], resolution: float):
    """Snap ``bounds`` outward to multiples of ``resolution``.

    >>> snap_bounds((100.5, 200.0, 119.0, 230.1), 10)
    (100.0, 200.0, 120.0, 240.0)
    """
    minx, miny, maxx, maxy = bounds
    r = resolution
    # round() first so that values already on the grid do not move by float noise
    snap_dn = lambda v: math.floor(round(v / r, 6)) * r  # noqa: E731
    snap_up = lambda v: math.ceil(round(v / r, 6)) * r  # noqa: E731
    return (
        float(snap_dn(minx)),
        float(snap_dn(miny)),
        float(snap_up(maxx)),
        float(snap_up(maxy)),
    )


def grid_for_bbox(
    bbox: tuple[float, float, float, float], resolution: float, epsg: int | None = None
) -> Grid:
    """The cube grid covering a WGS 84 ``bbox``.

    The CRS is the UTM zone of the bbox centre unless ``epsg`` is given; the bbox is projected
    with densified edges and its bounds snapped outward to ``resolution``.

    >>> g = grid_for_bbox((11.50, 48.10, 11.52, 48.11), 10)
    >>> g.epsg, g.resolution, g.bounds[0] % 10 == 0
    (32632, 10.0, True)
    """
    if epsg is None:
        epsg = utm_epsg((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    projected = tr.transform_bounds(*bbox, densify_pts=21)
    if not all(math.isfinite(v) for v in projected):
        raise InvalidRequestError(f"bbox {list(bbox)} cannot be projected to EPSG:{epsg}")
    return Grid(int(epsg), float(resolution), snap_bounds(projected, float(resolution)))
