"""The fixed pixel grid of a cube: CRS, resolution and bounds snapped to the resolution.

``x``/``y`` coordinates are pixel centres (CF, rioxarray, odc-geo). Bounds snap *outward* to
``anchor + k * resolution`` in the target CRS. The anchor is the mission's native pixel edge
(:attr:`~stac2cube.missions.MissionSpec.grid_anchor`): 0 for Sentinel-2, whose tile origins
are multiples of 60 m, and 15 m for Landsat, whose pixel edges lie 15 m off multiples of 30 m.
So two cubes of one mission, CRS and resolution share pixel edges, and a cube at the native
resolution holds the source pixels themselves, without resampling.

A grid is a cube's identity: two grids are the same only when CRS, resolution and bounds agree
to a micrometre (:data:`TOLERANCE`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

from stac2cube.errors import InvalidRequestError

#: Largest difference (CRS units: metres) between two coordinates of one grid: float noise only.
TOLERANCE = 1e-6
#: The false northing of the WGS 84 / UTM south zones (EPSG:32701-32760).
UTM_SOUTH_FALSE_NORTHING = 10_000_000.0


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing ``(lon, lat)``.

    >>> utm_epsg(11.5, 48.1)
    32632
    >>> utm_epsg(-40.0, -4.6)
    32724
    """
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def centre_utm_epsg(bbox: tuple[float, float, float, float]) -> int:
    """EPSG code of the UTM zone of the centre of a WGS 84 ``bbox`` (a cube's default CRS)."""
    return utm_epsg((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)


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
        bounds: ``(minx, miny, maxx, maxy)``, on the grid's anchor plus multiples of
            ``resolution``.
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

    @property
    def anchor(self) -> tuple[float, float]:
        """Where the pixel edges lie: ``(x, y)`` modulo the resolution.

        >>> Grid(32632, 30.0, (690285.0, 5338095.0, 691905.0, 5339715.0)).anchor
        (15.0, 15.0)
        """
        return (self.bounds[0] % self.resolution, self.bounds[3] % self.resolution)

    def to_attrs(self) -> dict[str, Any]:
        return {"epsg": self.epsg, "resolution": self.resolution, "bounds": list(self.bounds)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Grid:
        return cls(int(attrs["epsg"]), float(attrs["resolution"]), tuple(attrs["bounds"]))

    def describe(self) -> str:
        """One line naming the grid.

        >>> Grid(32632, 10.0, (690300.0, 5338100.0, 691900.0, 5339700.0)).describe()
        'EPSG:32632 10 m bounds [690300.0, 5338100.0, 691900.0, 5339700.0]'
        """
        return f"{self.crs} {self.resolution:g} m bounds {list(self.bounds)}"

    def differences(self, other: Grid) -> list[str]:
        """How ``other`` differs from this (the cube's) grid; empty when they are the same to
        :data:`TOLERANCE`.

        >>> a = Grid(32632, 10.0, (0.0, 0.0, 100.0, 100.0))
        >>> a.differences(Grid(32632, 20.0, (0.0, 0.001, 100.0, 100.001)))
        ["resolution 20.0 != cube's 10.0", 'bounds differ by up to 0.001 m']
        """
        out = []
        if self.epsg != other.epsg:
            out.append(f"crs EPSG:{other.epsg} != cube's EPSG:{self.epsg}")
        if abs(self.resolution - other.resolution) > TOLERANCE:
            out.append(f"resolution {other.resolution} != cube's {self.resolution}")
        shift = max(abs(a - b) for a, b in zip(self.bounds, other.bounds, strict=True))
        if shift > TOLERANCE:
            out.append(f"bounds differ by up to {shift:.6g} m")
        return out


def snap_bounds(
    bounds: tuple[float, float, float, float],
    resolution: float,
    anchor: tuple[float, float] = (0.0, 0.0),
):
    """Snap ``bounds`` outward to ``anchor + k * resolution`` (``anchor`` is ``(x, y)``).

    >>> snap_bounds((100.5, 200.0, 119.0, 230.1), 10)
    (100.0, 200.0, 120.0, 240.0)
    >>> snap_bounds((100.5, 200.0, 119.0, 230.1), 30, (15.0, 15.0))
    (75.0, 195.0, 135.0, 255.0)
    """
    minx, miny, maxx, maxy = bounds
    r = resolution
    ax, ay = anchor
    # round() first so that values already on the grid do not move by float noise
    snap_dn = lambda v, a: a + math.floor(round((v - a) / r, 6)) * r  # noqa: E731
    snap_up = lambda v, a: a + math.ceil(round((v - a) / r, 6)) * r  # noqa: E731
    return (
        float(snap_dn(minx, ax)),
        float(snap_dn(miny, ay)),
        float(snap_up(maxx, ax)),
        float(snap_up(maxy, ay)),
    )


def native_anchor(epsg: int, anchor: tuple[float, float]) -> tuple[float, float]:
    """A mission's pixel-edge ``anchor`` (given in WGS 84 / UTM north metres) in ``epsg``.

    Landsat products use the UTM north zones everywhere (negative northings in the south): in a
    UTM south zone their edges move by the false northing. In any other CRS the source pixels
    are reprojected anyway: the anchor is 0.

    >>> native_anchor(32632, (15.0, 15.0)), native_anchor(32724, (15.0, 15.0))
    ((15.0, 15.0), (15.0, 10000015.0))
    >>> native_anchor(3035, (15.0, 15.0))
    (0.0, 0.0)
    """
    if 32601 <= epsg <= 32660:
        return (float(anchor[0]), float(anchor[1]))
    if 32701 <= epsg <= 32760:
        return (float(anchor[0]), float(anchor[1]) + UTM_SOUTH_FALSE_NORTHING)
    return (0.0, 0.0)


def grid_for_bbox(
    bbox: tuple[float, float, float, float],
    resolution: float,
    epsg: int | None = None,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> Grid:
    """The cube grid covering a WGS 84 ``bbox``.

    The CRS is the UTM zone of the bbox centre unless ``epsg`` is given; the bbox is projected
    with densified edges and its bounds snapped outward to ``anchor + k * resolution`` (``anchor``
    in the target CRS, see :func:`native_anchor`).

    >>> g = grid_for_bbox((11.50, 48.10, 11.52, 48.11), 10)
    >>> g.epsg, g.resolution, g.bounds[0] % 10 == 0
    (32632, 10.0, True)
    >>> grid_for_bbox((11.50, 48.10, 11.52, 48.11), 30, anchor=(15.0, 15.0)).bounds[0] % 30
    15.0
    """
    if epsg is None:
        epsg = centre_utm_epsg(bbox)
    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    projected = tr.transform_bounds(*bbox, densify_pts=21)
    if not all(math.isfinite(v) for v in projected):
        raise InvalidRequestError(f"bbox {list(bbox)} cannot be projected to EPSG:{epsg}")
    r = float(resolution)
    return Grid(int(epsg), r, snap_bounds(projected, r, anchor))
