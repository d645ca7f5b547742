"""Synthetic Sentinel-2 scenes for co-registration: fine texture with known sub-pixel shifts.

Every scene of one site shows the same ground: a white-noise texture (about 1 px detail, a
Gaussian blur of 0.5 px; AROSICS needs such detail to match) that is band-limited and periodic,
so a copy moved by any fraction of a pixel is known exactly (a phase ramp in the Fourier
domain). A scene's ``shift = (dx, dy)`` moves its content ``dx`` columns east and ``dy`` rows
south: AROSICS's correction of it is ``x_shift_px = -dx``, ``y_shift_px = -dy``.

Clouds: a ``cloud_box`` (rows and columns of 10 m pixels) is bright and flat in every band and
class 9 (cloud high probability) in SCL. The rest of SCL is class 4 (vegetation); nodata
columns (``nodata_cols``, on the east edge) are DN 0 and SCL 0.

Example:
    >>> import datetime as dt
    >>> s = coreg_scene(dt.datetime(2024, 1, 5, 10, 30, tzinfo=dt.UTC), shift=(0.3, -1.7))
    >>> s.dn("B08").shape, s.dn("SCL").shape, int(s.dn("SCL")[0, 0])
    ((240, 240), (120, 120), 4)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from stac2cube.testing.synthetic import (
    S2_BANDS,
    SCL_CLOUD_HIGH,
    SCL_VEGETATION,
    TILE_A,
    SceneSpec,
)

#: mean reflectance and texture amplitude per band
_LEVEL = {"B02": (0.05, 0.01), "B03": (0.08, 0.015), "B04": (0.1, 0.03), "B08": (0.3, 0.06)}
CLOUD_REFLECTANCE = 0.7


@lru_cache(maxsize=8)
def _spectrum(n: int, seed: int, blur: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spec = np.fft.fft2(rng.normal(size=(n, n)))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    return spec * np.exp(-((fx**2 + fy**2) * (2 * np.pi * blur) ** 2) / 2)


def texture(n: int, dx: float = 0.0, dy: float = 0.0, *, seed: int = 7, blur: float = 0.5):
    """The ground texture (zero mean, unit deviation) of an ``n`` x ``n`` scene, its content
    moved ``dx`` columns east and ``dy`` rows south (exactly: a Fourier phase ramp)."""
    spec = _spectrum(n, seed, blur)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    moved = spec * np.exp(-2j * np.pi * (fx * dx + fy * dy))
    base = np.fft.ifft2(spec).real
    return np.fft.ifft2(moved).real / base.std()


@dataclass(frozen=True)
class CoregScene(SceneSpec):
    """A :class:`SceneSpec` whose 10 m bands show the shared texture moved by ``shift``.

    Attributes:
        shift: ``(dx, dy)`` in pixels: content moved east and south.
        cloud_box: ``(row0, row1, col0, col1)`` of cloud, in 10 m pixels (None: clear).
        texture_seed: the ground (scenes of one site share it).
    """

    shift: tuple[float, float] = (0.0, 0.0)
    cloud_box: tuple[int, int, int, int] | None = None
    texture_seed: int = 7

    def dn(self, band: str) -> np.ndarray:
        res = S2_BANDS[band][0]
        n = self.size * 10 // res
        rows, cols = np.mgrid[0:n, 0:n]
        cloud = np.zeros((n, n), bool)
        if self.cloud_box is not None:
            r0, r1, c0, c1 = self.cloud_box
            cloud = (rows * res >= r0 * 10) & (rows * res < r1 * 10)
            cloud &= (cols * res >= c0 * 10) & (cols * res < c1 * 10)
        nodata = cols * res >= (self.size - self.nodata_cols) * 10
        if band == "SCL":
            out = np.full((n, n), SCL_VEGETATION, "uint8")
            out[cloud] = SCL_CLOUD_HIGH
            out[nodata] = 0
            return out
        if res != 10:
            refl = np.full((n, n), 0.2)
        else:
            mean, amp = _LEVEL.get(band, (0.1, 0.02))
            refl = mean + amp * texture(n, *self.shift, seed=self.texture_seed)
        refl = np.where(cloud, CLOUD_REFLECTANCE, np.clip(refl, 0.005, 1.0))
        out = np.round(refl * 10000).astype("uint16") + self.dn_offset
        out[nodata] = 0
        return out.astype("uint16")


def coreg_scene(when: dt.datetime, **kw) -> CoregScene:
    """A 240 x 240 px scene of tile A (2.4 km) at ``when``."""
    return CoregScene(
        tile=TILE_A[0],
        epsg=TILE_A[1],
        origin=TILE_A[2],
        datetime=when,
        size=kw.pop("size", 240),
        collection=kw.pop("collection", "coreg-s2"),
        **kw,
    )


def _at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T10:30:21").replace(tzinfo=dt.UTC)


#: the central block a default (centred) window would use, in 10 m pixels of the scene
CENTRE_CLOUD = (90, 160, 90, 160)
#: the scenes of January (``(dx, dy)`` content shifts) and February
JANUARY = {
    "2024-01-05": dict(shift=(0.0, 0.0)),
    "2024-01-10": dict(shift=(0.3, -1.7), nodata_cols=30),
    "2024-01-15": dict(shift=(-1.7, 0.3), cloud_box=CENTRE_CLOUD),
    "2024-01-20": dict(shift=(0.5, 0.5), cloud_box=(0, 240, 0, 240)),
}
FEBRUARY = {
    "2024-02-04": dict(shift=(0.8, -0.4)),
    "2024-02-09": dict(shift=(-1.2, 1.1)),
}


def coreg_scenes(days: dict[str, dict] | None = None) -> list[CoregScene]:
    """The co-registration test scenes (default: January and February)."""
    days = days if days is not None else {**JANUARY, **FEBRUARY}
    return [coreg_scene(_at(day), **kw) for day, kw in days.items()]


def coreg_bbox() -> list[float]:
    """A WGS 84 box of 2 km x 2 km inside the scenes (200 x 200 cube pixels, 200 m from the
    scenes' west and north edges)."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 200, y1 - 2200)
    e, n = tr.transform(x0 + 2200, y1 - 200)
    return [w, s, e, n]
