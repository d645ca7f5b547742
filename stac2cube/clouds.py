"""Cloud layers of a Sentinel-2 cube: s2cloudless on the matching L1C scenes, masks, shadows.

For every time step of a Sentinel-2 L2A cube this stage finds the Level-1C scenes of the same
acquisitions (:func:`pair_scenes`), reads their top-of-atmosphere reflectance on a processing
grid laid over the cube's area (:func:`processing_grid`), runs s2cloudless on it and writes, in
the group ``clouds`` of the cube's store, on the cube's grid and time axis:

* ``cloud_prob`` ``(time, y, x)``: s2cloudless's cloud probability, stored as ``uint8`` percent
  (``scale_factor`` 0.01, fill 255), decoded to 0-1 with NaN where there is no L1C data;
* ``cloud_mask`` ``(threshold, time, y, x)``: 0/1 per threshold (coordinate ``threshold`` in
  percent), NaN where there is no data;
* ``shadow_mask`` ``(time, y, x)``: 0/1 (when shadows were asked for);
* per step the coordinate ``l1c_item_ids`` (the L1C ids used, comma-separated; empty when no
  L1C scene matched) and, in the group attribute ``stac2cube:clouds``, the settings and per step
  the L2A ids, L1C ids, their processing baselines and offsets, and the sun angles.

Radiometry: TOA reflectance = (DN + RADIO_ADD_OFFSET) / 10000, the offset (-1000) only for
processing baseline >= 04.00, decided per item (:func:`stac2cube.radiometry.sentinel2_radiometry`)
and recorded. Bands in s2cloudless's order :data:`S2CLOUDLESS_BANDS`. A pixel is valid when
all ten bands hold data; the scenes of a step are mosaicked first valid pixel wins, in the order
of the step's L2A scenes.

Processing resolution (``resolution``, metres): s2cloudless runs on a grid of that pixel size
covering the cube (10 m bands averaged to it). Equal to the cube's resolution, it runs on the
cube's own pixels (bands resampled like the cube: nearest). Coarser, the probability is
interpolated bilinearly back onto the cube grid and the masks are taken nearest.

Masks (:func:`cloud_masks`): s2cloudless's own post-processing, run on the probability in
percent as stored (nodata counted as 0): a disk average of ``average_over`` metres radius, then
``> threshold``, then a dilation by a disk of ``dilation`` metres radius; metres are converted
to pixels of the processing grid (rounded; 0 px skips the step). Nodata stays nodata.

Shadows (:func:`project_shadows`): the cloud mask at the lowest threshold is projected away
from the sun (the step's mean ``view:sun_azimuth`` / ``view:sun_elevation``; flat terrain) for
cloud heights ``shadow_heights`` (metres, in steps of one processing pixel of ground
distance), and intersected with dark pixels (NIR B08 TOA < ``dark_nir``) that are not cloud.
Limits: clouds outside the processed area cast no shadow into it; water and other dark surfaces
under the projection count as shadow; terrain is ignored.

Streaming: the cube grid is processed per step in blocks of ``block`` pixels, each read with the
halo its kernels and shadow projection need (:func:`halo`), so memory depends on the block, not
on the grid or the number of steps.

Example:
    >>> s = CloudSettings.make(thresholds=[40, 60], resolution=20)
    >>> s.thresholds, s.kernel_px(s.average_over), s.kernel_px(s.dilation)
    ((40.0, 60.0), 2, 1)
    >>> processing_grid(Grid(32632, 10.0, (690300.0, 5338100.0, 691900.0, 5339700.0)), 60).shape
    (27, 27)
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from stac2cube.errors import InvalidRequestError
from stac2cube.grid import Grid

#: s2cloudless's ten input bands, in its order
S2CLOUDLESS_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
GROUP = "clouds"
RECORD_ATTR = "stac2cube:clouds"
NODATA = 255
#: default processing resolution (metres); chosen by measurement (README "Cloud layers")
DEFAULT_RESOLUTION = 60.0
#: default processing resolution of the csmask method (its models work best near 30 m)
CSMASK_RESOLUTION = 30.0
DEFAULT_THRESHOLDS = (40.0,)
#: s2cloudless's classic post-processing (average_over 4 px, dilation 2 px) at 10 m
DEFAULT_AVERAGE_OVER = 40.0
DEFAULT_DILATION = 20.0
DEFAULT_SHADOW_HEIGHTS = (200.0, 2000.0)
DEFAULT_DARK_NIR = 0.15
#: cube pixels per block side processed at a time
DEFAULT_BLOCK = 1024
CloudMethod = Literal["s2cloudless", "csmask"]


class CloudLayerError(InvalidRequestError):
    """The cloud layers cannot be made for this cube or catalog (one line)."""


@dataclass(frozen=True)
class CloudSettings:
    """Every option of the cloud layers (stored in the group's attributes).

    Attributes:
        thresholds: cloud-probability thresholds in percent (0-100), one mask each.
        resolution: processing resolution in metres (None: :data:`DEFAULT_RESOLUTION`, or the
            cube's resolution when that is coarser).
        average_over: radius of the averaging disk in metres (0: none).
        dilation: radius of the dilation disk in metres (0: none).
        shadows: also write ``shadow_mask``.
        shadow_heights: (lowest, highest) cloud height in metres for the shadow projection.
        dark_nir: NIR (B08) TOA reflectance below which a pixel may be shadow.
        method: ``s2cloudless`` (L1C) or ``csmask`` (L2A bands, ukis-csmask).
        collection: L1C collection id (None: the catalog's).
        catalog: catalog of the L1C scenes (None: the cube's).
    """

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    resolution: float | None = None
    average_over: float = DEFAULT_AVERAGE_OVER
    dilation: float = DEFAULT_DILATION
    shadows: bool = False
    shadow_heights: tuple[float, float] = DEFAULT_SHADOW_HEIGHTS
    dark_nir: float = DEFAULT_DARK_NIR
    method: CloudMethod = "s2cloudless"
    collection: str | None = None
    catalog: str | None = None

    @classmethod
    def make(
        cls,
        *,
        thresholds: Sequence[float] | float | None = None,
        resolution: float | None = None,
        **kwargs: Any,
    ) -> CloudSettings:
        """Validated settings from loose input (None: the default).

        Raises:
            CloudLayerError: a threshold outside 0-100, a non-positive resolution, an unknown
                method, negative kernels.
        """
        if thresholds is None:
            values: tuple[float, ...] = DEFAULT_THRESHOLDS
        else:
            raw = [thresholds] if isinstance(thresholds, (int, float, str)) else list(thresholds)
            try:
                values = tuple(sorted({float(t) for t in raw}))
            except (TypeError, ValueError):
                raise CloudLayerError(f"thresholds must be numbers 0-100, got {raw}") from None
            if not values:
                raise CloudLayerError("give at least one threshold (percent, 0-100)")
        bad = [t for t in values if not (0 <= t <= 100) or math.isnan(t)]
        if bad:
            raise CloudLayerError(
                f"threshold {bad[0]:g} is outside 0-100 (thresholds are percent probability)"
            )
        if resolution is not None:
            try:
                resolution = float(resolution)
            except (TypeError, ValueError):
                raise CloudLayerError(
                    f"cloud_resolution must be a number of metres, got {resolution!r}"
                ) from None
            if not math.isfinite(resolution) or resolution <= 0:
                raise CloudLayerError(
                    f"cloud_resolution must be a positive number of metres, got {resolution:g}"
                )
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if "shadow_heights" in kwargs:
            kwargs["shadow_heights"] = tuple(float(v) for v in kwargs["shadow_heights"])
        settings = cls(thresholds=values, resolution=resolution, **kwargs)
        if settings.method not in ("s2cloudless", "csmask"):
            raise CloudLayerError(
                f"unknown cloud method {settings.method!r}; use s2cloudless or csmask"
            )
        if settings.average_over < 0 or settings.dilation < 0:
            raise CloudLayerError("average_over and dilation are radii in metres, >= 0")
        low, high = settings.shadow_heights
        if not 0 <= low <= high:
            raise CloudLayerError(f"shadow_heights must be 0 <= low <= high, got {low}, {high}")
        return settings

    def processing_resolution(self, cube_resolution: float) -> float:
        """The processing resolution on a cube of ``cube_resolution`` (never finer than it)."""
        default = CSMASK_RESOLUTION if self.method == "csmask" else DEFAULT_RESOLUTION
        res = self.resolution if self.resolution is not None else default
        return max(float(res), float(cube_resolution))

    def kernel_px(self, metres: float, resolution: float | None = None) -> int:
        """A radius in metres as whole pixels of the processing grid."""
        res = resolution or self.processing_resolution(self.resolution or DEFAULT_RESOLUTION)
        return round(metres / res)

    def describe(self, cube_resolution: float) -> dict[str, Any]:
        """JSON-ready record: the settings, resolved for a cube, with the kernels in pixels."""
        res = self.processing_resolution(cube_resolution)
        out = asdict(self)
        out.update(
            resolution=res,
            thresholds=list(self.thresholds),
            shadow_heights=list(self.shadow_heights),
            average_over_px=self.kernel_px(self.average_over, res),
            dilation_px=self.kernel_px(self.dilation, res),
        )
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CloudSettings:
        """The settings stored in a ``clouds`` group (inverse of :meth:`describe`)."""
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in record.items() if k in names}
        return cls.make(**kwargs)

    def same_pixels(self, other: CloudSettings, cube_resolution: float) -> bool:
        """Whether ``other`` makes the same layers (catalog/collection aside)."""
        a = {k: v for k, v in self.describe(cube_resolution).items()}
        b = {k: v for k, v in other.describe(cube_resolution).items()}
        for key in ("catalog", "collection"):
            a.pop(key), b.pop(key)
        return a == b


def processing_grid(cube: Grid, resolution: float) -> Grid:
    """The grid s2cloudless runs on: the cube's own at its resolution, else pixels of
    ``resolution`` on multiples of it covering the cube."""
    if abs(resolution - cube.resolution) < 1e-9:
        return cube
    x0, y0, x1, y1 = cube.bounds
    r = float(resolution)
    bounds = (
        math.floor(x0 / r) * r,
        math.floor(y0 / r) * r,
        math.ceil(x1 / r) * r,
        math.ceil(y1 / r) * r,
    )
    return Grid(cube.epsg, r, bounds)


# --- pairing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPairing:
    """The L1C scenes of one cube time step."""

    time: str
    l2a_ids: tuple[str, ...]
    l1c: tuple[dict[str, Any], ...] = ()
    unmatched: tuple[str, ...] = ()

    @property
    def l1c_ids(self) -> tuple[str, ...]:
        return tuple(i["id"] for i in self.l1c)


def pair_scenes(
    ledger_entry: Mapping[str, Any], l1c_items: Sequence[dict[str, Any]]
) -> StepPairing:
    """The L1C items of the acquisitions of one ledger entry (its L2A scenes).

    An L1C item matches an L2A scene when both are one acquisition
    (:func:`stac2cube.items.same_acquisition`: platform, tile, datatake, datastrip or footprint,
    sensing times at most 10 minutes apart), never by day alone. Of several matches (the
    granule processed twice) the newest processing wins (baseline, then generation time).
    L1C items are in the order of the L2A scenes they match.
    """
    from stac2cube.items import acquisition, processing_rank, same_acquisition

    records = list(ledger_entry["items"])
    acqs = [(item, acquisition(item)) for item in l1c_items]
    chosen: list[dict[str, Any]] = []
    unmatched = []
    for record in records:
        acq = record.get("acquisition")
        if not acq:
            unmatched.append(record["id"])
            continue
        matches = [item for item, a in acqs if same_acquisition(acq, a)]
        if not matches:
            unmatched.append(record["id"])
            continue
        best = max(matches, key=processing_rank)
        if all(best["id"] != c["id"] for c in chosen):
            chosen.append(best)
    return StepPairing(
        time=ledger_entry["time"],
        l2a_ids=tuple(r["id"] for r in records),
        l1c=tuple(chosen),
        unmatched=tuple(unmatched),
    )


def l1c_search_window(entries: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The datetime interval (ISO, UTC) covering the acquisitions of ``entries`` +- 1 hour."""
    times = [
        dt.datetime.fromisoformat(r.get("acquisition", {}).get("datetime") or r["datetime"])
        for e in entries
        for r in e["items"]
    ]
    pad = dt.timedelta(hours=1)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (
        (min(times) - pad).astimezone(dt.UTC).strftime(fmt),
        (max(times) + pad).astimezone(dt.UTC).strftime(fmt),
    )


# --- radiometry -----------------------------------------------------------------------------


def l1c_offsets(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per item: baseline, rule and the reflectance offset applied (-0.1 for >= 04.00)."""
    from stac2cube.radiometry import sentinel2_radiometry

    out = []
    for item in items:
        rad = sentinel2_radiometry(item)
        out.append(
            {"id": item["id"], "baseline": rad.baseline, "rule": rad.rule, "offset": rad.offset}
        )
    return out


def toa_reflectance(dn: np.ndarray, offset: float) -> np.ndarray:
    """TOA reflectance of L1C DN: ``DN / 10000 + offset`` (offset -0.1 = RADIO_ADD_OFFSET
    -1000 for baseline >= 04.00, else 0); NaN where DN is 0 (nodata).

    >>> toa_reflectance(np.array([0, 1000, 3500], "uint16"), -0.1).tolist()
    [nan, 0.0, 0.25]
    """
    out = ((dn.astype("float64") + round(offset * 10000)) / 10000).astype("float32")
    out[dn == 0] = np.nan
    return out


def mosaic_toa(stack: np.ndarray, offsets: Sequence[float]) -> np.ndarray:
    """First valid pixel wins: ``(item, band, y, x)`` DN -> ``(y, x, band)`` TOA float32, NaN
    where no item holds all bands."""
    n, bands, h, w = stack.shape
    out = np.full((h, w, bands), np.nan, "float32")
    filled = np.zeros((h, w), bool)
    for k in range(n):
        valid = (stack[k] > 0).all(axis=0) & ~filled
        if not valid.any():
            continue
        toa = toa_reflectance(stack[k], offsets[k])  # (band, y, x)
        out[valid] = np.moveaxis(toa, 0, -1)[valid]
        filled |= valid
    return out


# --- the layers on one window ---------------------------------------------------------------

_DETECTOR: dict[str, Any] = {}


def detector():
    """One s2cloudless detector per process (its LightGBM model is loaded once)."""
    if "s2" not in _DETECTOR:
        from s2cloudless import S2PixelCloudDetector

        _DETECTOR["s2"] = S2PixelCloudDetector(all_bands=False)
    return _DETECTOR["s2"]


def cloud_probability(toa: np.ndarray) -> np.ndarray:
    """s2cloudless probability of ``(y, x, 10)`` TOA (NaN = nodata): float32, NaN where any band
    is missing."""
    valid = np.isfinite(toa).all(axis=-1)
    prob = np.full(toa.shape[:2], np.nan, "float32")
    if valid.any():
        data = toa[valid][np.newaxis, np.newaxis]  # (1, 1, n, 10): only the valid pixels
        prob[valid] = detector().get_cloud_probability_maps(data)[0, 0]
    return prob


def quantise(prob: np.ndarray) -> np.ndarray:
    """Probability 0-1 (NaN nodata) -> uint8 percent, :data:`NODATA` for NaN.

    >>> quantise(np.array([0.0, 0.404, 0.405, 1.0, np.nan])).tolist()
    [0, 40, 40, 100, 255]
    """
    out = np.full(prob.shape, NODATA, "uint8")
    ok = np.isfinite(prob)
    out[ok] = np.clip(np.round(prob[ok].astype("float64") * 100), 0, 100).astype("uint8")
    return out


def cloud_masks(
    percent: np.ndarray, thresholds: Sequence[float], average_px: int, dilation_px: int
) -> np.ndarray:
    """Masks ``(threshold, y, x)`` uint8 (0/1, :data:`NODATA`) of a uint8 percent probability.

    s2cloudless's own ``get_mask_from_prob`` (disk average of ``average_px`` radius with
    reflected borders, ``> threshold``, dilation by a disk of ``dilation_px``), run on the
    percent values with nodata counted as 0; nodata stays nodata.
    """
    from s2cloudless import S2PixelCloudDetector

    nodata = percent == NODATA
    values = np.where(nodata, 0, percent).astype("float32")[np.newaxis]
    det = S2PixelCloudDetector(average_over=average_px or None, dilation_size=dilation_px or None)
    out = np.empty((len(thresholds), *percent.shape), "uint8")
    for k, t in enumerate(thresholds):
        out[k] = det.get_mask_from_prob(values, threshold=float(t))[0]
        out[k][nodata] = NODATA
    return out


def shadow_offsets(
    azimuth: float, elevation: float, heights: tuple[float, float], resolution: float
) -> list[tuple[int, int]]:
    """Pixel offsets ``(rows, cols)`` from a cloud to its shadow for cloud heights in
    ``heights``, one per processing pixel of ground distance (flat terrain).

    The shadow lies away from the sun: ``distance = height / tan(elevation)`` towards azimuth
    + 180 degrees (azimuth clockwise from north; rows grow southwards).

    >>> shadow_offsets(180.0, 45.0, (100.0, 300.0), 100.0)
    [(-1, 0), (-2, 0), (-3, 0)]
    """
    if elevation <= 0:
        return []
    tan = math.tan(math.radians(elevation))
    near, far = heights[0] / tan, heights[1] / tan
    az = math.radians(azimuth)
    east, north = -math.sin(az), -math.cos(az)  # unit vector away from the sun
    out: list[tuple[int, int]] = []
    n = max(1, math.ceil((far - near) / resolution))
    for k in range(n + 1):
        d = near + (far - near) * k / n
        step = (round(-north * d / resolution), round(east * d / resolution))
        if step not in out:
            out.append(step)
    return out


def project_shadows(
    cloud: np.ndarray,
    valid: np.ndarray,
    nir: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    dark_nir: float = DEFAULT_DARK_NIR,
) -> np.ndarray:
    """Shadow mask uint8 (0/1, :data:`NODATA` where not ``valid``): pixels reached by the cloud
    mask shifted by any of ``offsets`` that are dark (``nir < dark_nir``) and not cloud."""
    cloud = cloud == 1
    reach = np.zeros(cloud.shape, bool)
    h, w = cloud.shape
    for dr, dc in offsets:
        if abs(dr) >= h or abs(dc) >= w:
            continue
        src = cloud[max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)]
        reach[max(0, dr) : h - max(0, -dr), max(0, dc) : w - max(0, -dc)] |= src
    with np.errstate(invalid="ignore"):
        dark = nir < dark_nir
    out = (reach & dark & ~cloud & valid).astype("uint8")
    out[~valid] = NODATA
    return out


def halo(settings: CloudSettings, resolution: float, sun: tuple[float, float] | None):
    """Pixels of the processing grid a block must be read beyond its edges:
    ``(top, bottom, left, right)`` (the kernels, one pixel for interpolation, and, for shadows,
    the projection distance on the sun's side)."""
    k = settings.kernel_px(settings.average_over, resolution)
    k += settings.kernel_px(settings.dilation, resolution) + 2
    top = bottom = left = right = k
    if settings.shadows and sun is not None:
        rows = [dr for dr, _ in shadow_offsets(*sun, settings.shadow_heights, resolution)]
        cols = [dc for _, dc in shadow_offsets(*sun, settings.shadow_heights, resolution)]
        # a shadow at p comes from a cloud at p - offset
        top += max([dr for dr in rows if dr > 0], default=0)
        bottom += max([-dr for dr in rows if dr < 0], default=0)
        left += max([dc for dc in cols if dc > 0], default=0)
        right += max([-dc for dc in cols if dc < 0], default=0)
    return top, bottom, left, right


@dataclass
class WindowLayers:
    """The layers of one processing window (uint8, processing grid)."""

    percent: np.ndarray
    masks: np.ndarray
    shadow: np.ndarray | None


def window_layers(
    toa: np.ndarray,
    settings: CloudSettings,
    resolution: float,
    sun: tuple[float, float] | None,
    *,
    probability: Any = None,
) -> WindowLayers:
    """All layers of a ``(y, x, 10)`` TOA window on the processing grid.

    ``probability`` replaces s2cloudless (``toa -> float prob``; the csmask method).
    """
    shadow_class = None
    if settings.method == "csmask" and probability is None:
        from stac2cube.clouds_csmask import csmask_probabilities

        classes = csmask_probabilities(toa)
        prob = classes[..., 1]
        with np.errstate(invalid="ignore"):
            shadow_class = np.nanargmax(np.nan_to_num(classes, nan=-1.0), axis=-1) == 2
    else:
        prob = (probability or cloud_probability)(toa)
    percent = quantise(prob)
    masks = cloud_masks(
        percent,
        settings.thresholds,
        settings.kernel_px(settings.average_over, resolution),
        settings.kernel_px(settings.dilation, resolution),
    )
    shadow = None
    if settings.shadows:
        valid = percent != NODATA
        if shadow_class is not None:  # csmask's own shadow class
            shadow = np.where(valid, shadow_class & (masks[0] != 1), False).astype("uint8")
            shadow[~valid] = NODATA
        elif sun is None:
            shadow = np.where(valid, 0, NODATA).astype("uint8")
        else:
            nir = toa[..., S2CLOUDLESS_BANDS.index("B08")]
            offsets = shadow_offsets(*sun, settings.shadow_heights, resolution)
            shadow = project_shadows(masks[0], valid, nir, offsets, settings.dark_nir)
    return WindowLayers(percent, masks, shadow)


# --- from the processing grid to the cube grid -----------------------------------------------


def upsample_probability(percent: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a uint8 percent window at fractional pixel positions
    (``fy`` rows, ``fx`` columns, pixel centres at integers), weighted by valid neighbours;
    :data:`NODATA` where the nearest pixel is nodata."""
    from scipy.ndimage import map_coordinates

    valid = (percent != NODATA).astype("float32")
    values = np.where(percent == NODATA, 0, percent).astype("float32")
    yy, xx = np.meshgrid(fy, fx, indexing="ij")
    coords = np.stack([yy, xx])
    num = map_coordinates(values * valid, coords, order=1, mode="nearest")
    den = map_coordinates(valid, coords, order=1, mode="nearest")
    near = map_coordinates(valid, coords, order=0, mode="nearest")
    out = np.full(yy.shape, NODATA, "uint8")
    ok = (near > 0.5) & (den > 0)
    out[ok] = np.clip(np.round(num[ok] / den[ok]), 0, 100).astype("uint8")
    return out


# --- time-step records ----------------------------------------------------------------------


def step_record(pairing: StepPairing, offsets: list[dict[str, Any]], sun) -> dict[str, Any]:
    """What the group records of one step."""
    return {
        "l2a": list(pairing.l2a_ids),
        "l1c": list(pairing.l1c_ids),
        "l1c_radiometry": offsets,
        "unmatched": list(pairing.unmatched),
        "sun": list(sun) if sun is not None else None,
    }


def sun_angles(items: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """Mean ``(view:sun_azimuth, view:sun_elevation)`` of ``items``; None when none says."""
    az, el = [], []
    for item in items:
        props = item.get("properties", {})
        a, e = props.get("view:sun_azimuth"), props.get("view:sun_elevation")
        if a is not None and e is not None:
            az.append(math.radians(float(a)))
            el.append(float(e))
    if not az:
        return None
    mean_az = math.degrees(math.atan2(np.mean(np.sin(az)), np.mean(np.cos(az)))) % 360
    return (round(mean_az, 6), round(float(np.mean(el)), 6))


def load_record(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The group's record (settings and steps) from its attributes; empty when absent."""
    raw = attrs.get(RECORD_ATTR)
    if raw is None:
        return {}
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def stale_times(ledger: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> list[str]:
    """Times of ``ledger`` whose layers are missing or were made from other L2A scenes."""
    steps = record.get("steps", {})
    out = []
    for entry in ledger:
        done = steps.get(entry["time"])
        if done is None or done.get("l2a") != [i["id"] for i in entry["items"]]:
            out.append(entry["time"])
    return out


def check_sentinel2(record: Mapping[str, Any], name: str) -> None:
    """Raise :class:`CloudLayerError` unless the cube is Sentinel-2 L2A."""
    mission = record.get("mission")
    if mission != "sentinel-2-l2a":
        raise CloudLayerError(
            f"cube {name} is a {mission} cube: cloud layers need a Sentinel-2 L2A cube "
            "(s2cloudless runs on the matching Sentinel-2 L1C scenes)"
        )


def l1c_unavailable(catalog: str, why: str) -> CloudLayerError:
    """The one-line error for a catalog without Sentinel-2 L1C, naming the alternatives."""
    from stac2cube.catalogs import where_offered

    return CloudLayerError(
        f"catalog {catalog} has no Sentinel-2 L1C ({why}); alternatives: take L1C from "
        f"another catalog (--catalog earth-search|terrabyte: {where_offered('sentinel-2-l1c')}), "
        "mask with the L2A SCL band (build --mask-clouds), or use the L2A-based detector "
        "(--cloud-method csmask)"
    )


def detector_version() -> str:
    """The installed s2cloudless version."""
    from importlib.metadata import version

    return version("s2cloudless")


def merged_settings(stored: CloudSettings | None, **given: Any) -> CloudSettings:
    """The settings of a run: those ``given`` (not None), else the group's ``stored`` ones,
    else the defaults.

    >>> merged_settings(CloudSettings.make(thresholds=[30], shadows=True), resolution=20)
    ... # doctest: +NORMALIZE_WHITESPACE
    CloudSettings(thresholds=(30.0,), resolution=20.0, average_over=40.0, dilation=20.0,
        shadows=True, shadow_heights=(200.0, 2000.0), dark_nir=0.15, method='s2cloudless',
        collection=None, catalog=None)
    """
    base = asdict(stored) if stored is not None else {}
    if given.get("catalog") is not None and given.get("collection") is None:
        base.pop("collection", None)  # another catalog: its own L1C collection
    base.update({k: v for k, v in given.items() if v is not None})
    return CloudSettings.make(**base)


def masked_view(ds, layers, threshold: float, *, shadows: bool = True):
    """``ds`` (a cube's main group) with clouds (and shadows) as NaN: every float variable
    along ``(time, y, x)`` is NaN where ``cloud_mask`` at ``threshold`` percent is 1 (or,
    with ``shadows`` and a stored ``shadow_mask``, where that is 1). Classification bands are
    left as they are; the stored bands are never changed (a lazy view). ``cloud_fraction``
    per step becomes the share of valid layer pixels masked as cloud at ``threshold``.

    Raises:
        CloudLayerError: the layers have no mask at ``threshold``.
    """
    have = [float(t) for t in layers.threshold.values]
    if float(threshold) not in have:
        raise CloudLayerError(
            f"the cloud layers have no mask at threshold {threshold:g}; stored thresholds: "
            f"{', '.join(f'{t:g}' for t in have)} (add one with stac2cube clouds --thresholds)"
        )
    cloud = layers.cloud_mask.sel(threshold=float(threshold), drop=True)
    masked = cloud == 1
    if shadows and "shadow_mask" in layers:
        masked = masked | (layers.shadow_mask == 1)
    masked = masked.drop_vars([c for c in masked.coords if c not in ("time", "y", "x")])
    masked = masked.reindex(time=ds.time, fill_value=False)
    masked = masked.assign_coords(y=ds.y, x=ds.x)
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if set(var.dims) == {"time", "y", "x"} and var.dtype.kind == "f":
            out[name] = var.where(~masked)
            out[name].attrs = dict(var.attrs)
            out[name].encoding = dict(var.encoding)
    valid = cloud.notnull().sum(("y", "x"))
    fraction = ((cloud == 1).sum(("y", "x")) / valid.where(valid > 0)).astype("float32")
    fraction = fraction.drop_vars([c for c in fraction.coords if c != "time"])
    fraction = fraction.reindex(time=ds.time)
    out = out.assign_coords(cloud_fraction=("time", fraction.data))
    out.attrs["stac2cube:cloud_masked"] = f"NaN where cloud_mask at {threshold:g}% is 1" + (
        " or shadow_mask is 1" if shadows and "shadow_mask" in layers else ""
    )
    return out
