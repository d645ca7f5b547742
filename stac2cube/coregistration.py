"""Co-registration: every time step aligned to one stored reference with AROSICS (no Prefect).

What it does, per cube (the flow :func:`stac2cube.flows.coregister.coregister_scenes` and the
``build``/``update`` switch ``coregister`` both call :func:`coregister_in_session`):

1. **A reference, fixed at the first run** and kept in the group ``coregistration`` of the
   store (variable ``reference``, the matching band on the cube's grid, NaN where unknown; the
   attributes say how it was made). ``median`` (default): the clearest steps (up to
   :attr:`CoregSettings.reference_steps` with at least half of their pixels clear) are aligned
   to the clearest of them (the *anchor*) and their clear pixels' median is taken, so the
   reference lies on the anchor's geometry. A date: that step's clear pixels. Later runs reuse
   the stored reference, so steps added next year land on this year's geometry.
2. **Estimation** on one native 10 m band (default ``B08``, else ``B04``), never a whole step in
   memory: each step's clear pixels (the ``clouds`` group's masks where the cube has them, else
   SCL classes 4 5 6 7 11, else valid data) are counted on cells of a quarter window; windows
   of ``window`` px are placed where at least :attr:`CoregSettings.min_clear` of the pixels are
   clear in the step and valid in the reference, spread out (the centre of the cube
   first when it is clear). Each window is one AROSICS ``COREG`` run on in-memory ``GeoArray``
   subsets with the nodata value and both bad-data masks given explicitly. The windows'
   shifts are combined by a reliability-weighted median; windows farther than
   :attr:`CoregSettings.tolerance` px from it are outliers; the result is the
   reliability-weighted mean of the inliers. Shifts beyond ``max_shift`` are rejected.
3. **Failures are flagged, not dropped:** a step without a usable window (too cloudy, no
   texture, no match) keeps its pixels and gets ``coreg_status = "failed: <reason>"``.
4. **One resampling:** a step's shift is applied once to every layer of the main group with
   dims (time, y, x) and to the step's cloud layers (continuous ones with Lanczos-6, classes
   and masks nearest; :mod:`stac2cube.coreg_shift`), strip by strip with the halo the shift
   needs. Steps whose status is ``ok`` or ``reference`` are never shifted again.

Per-step coordinates of the main group (:data:`COORDS`): ``coreg_x_shift_px``,
``coreg_y_shift_px`` (the correction applied, AROSICS's ``x_shift_px``/``y_shift_px``: the
content moved that many columns east / rows south), ``coreg_x_shift_m``, ``coreg_y_shift_m``
(the same in map units, AROSICS's ``x_shift_map``/``y_shift_map``: north positive),
``coreg_reliability`` (percent), ``coreg_windows`` (windows used), ``coreg_status``.

Example:
    >>> consensus([Estimate(0.31, -1.7, 90.0), Estimate(0.29, -1.69, 80.0),
    ...            Estimate(2.5, 1.0, 95.0)], tolerance=0.5)[:2]
    (0.3006, -1.6953)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from stac2cube.coreg_shift import LANCZOS_A, shift_array_step, shift_block
from stac2cube.errors import InvalidRequestError, Stac2CubeError

GROUP = "coregistration"
CLOUDS_GROUP = "clouds"
SETTINGS_ATTR = "stac2cube:coregistration"
#: the per-step coordinates of the main group
COORDS = (
    "coreg_x_shift_px",
    "coreg_y_shift_px",
    "coreg_x_shift_m",
    "coreg_y_shift_m",
    "coreg_reliability",
    "coreg_windows",
    "coreg_status",
)
NOT_RUN, OK, REFERENCE = "not run", "ok", "reference"
DONE = (OK, REFERENCE)
#: missions co-registration works on (10 m optical bands with a matching band)
MISSIONS = ("sentinel-2-l2a", "sentinel-2-l1c")
#: native 10 m Sentinel-2 bands, in order of preference for matching (NIR, red: AROSICS's advice)
MATCH_BANDS = ("B08", "B04", "B03", "B02")
#: SCL classes counted as clear: vegetation, bare soil, water, unclassified, snow
CLEAR_SCL = (4, 5, 6, 7, 11)
NODATA = -9999.0
STRIP = 512
#: stored SCL class -> clear (class 0, nodata, is not)
_CLEAR_LUT = np.isin(np.arange(256), CLEAR_SCL)


class CoregistrationError(Stac2CubeError):
    """Co-registration cannot run on this cube with these settings (nothing was written)."""


@dataclass(frozen=True)
class CoregSettings:
    """Options of a co-registration; stored in the ``coregistration`` group's attributes.

    Attributes:
        band: matching band (None: ``B08`` if the cube has it, else ``B04``, ``B03``, ``B02``).
        reference: ``median`` or a date (``YYYY-MM-DD``) of a cube step.
        max_shift: largest shift accepted, in pixels (> 0).
        window: matching window edge in pixels (a power of two, 32..1024).
        windows: most windows per step.
        reference_steps: most steps in a median reference.
        min_clear: share of a window that must be clear and valid in step and reference.
        tolerance: windows farther than this (px) from the weighted median are outliers.
        min_reliability: windows below this AROSICS reliability (percent) are not used.
    """

    band: str | None = None
    reference: str = "median"
    max_shift: float = 5.0
    window: int = 128
    windows: int = 5
    reference_steps: int = 5
    min_clear: float = 0.9
    tolerance: float = 0.5
    min_reliability: float = 30.0

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> CoregSettings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in attrs.items() if k in known})


@dataclass(frozen=True)
class Estimate:
    """One window's AROSICS result (or why it failed)."""

    x_px: float = math.nan
    y_px: float = math.nan
    reliability: float = math.nan
    error: str | None = None


@dataclass
class StepResult:
    """What co-registration did to one step."""

    time: str
    status: str = NOT_RUN
    x_px: float = math.nan
    y_px: float = math.nan
    x_m: float = math.nan
    y_m: float = math.nan
    reliability: float = math.nan
    windows: int = 0
    origins: list[tuple[int, int]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """JSON-ready (the ledger entry's ``coregistration``)."""
        out: dict[str, Any] = {
            "status": self.status,
            "windows": self.windows,
            "window_origins": [list(o) for o in self.origins],
        }
        for key in ("x_px", "y_px", "x_m", "y_m", "reliability"):
            value = getattr(self, key)
            out[key] = None if math.isnan(value) else round(float(value), 4)
        return out


@dataclass
class CoregRun:
    """The outcome of one co-registration run."""

    steps: list[StepResult] = field(default_factory=list)
    reference: dict[str, Any] = field(default_factory=dict)
    created_reference: bool = False

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status.startswith("failed")]

    def summary(self) -> dict[str, Any]:
        return {
            "coregistered_steps": sum(s.status == OK for s in self.steps),
            "failed_steps": {s.time: s.status.removeprefix("failed: ") for s in self.failed},
            "reference": self.reference,
            "shifts_px": {
                s.time: [round(s.x_px, 3), round(s.y_px, 3)] for s in self.steps if s.status == OK
            },
        }


# -- settings and checks ---------------------------------------------------------------------


def parse_reference(value: Any) -> str:
    """``median`` or an ISO date, normalised.

    >>> parse_reference("MEDIAN"), parse_reference("2024-01-05")
    ('median', '2024-01-05')
    """
    text = str(value or "median").strip().lower()
    if text == "median":
        return text
    try:
        return dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise InvalidRequestError(
            f"--reference {value!r}: give median or a date YYYY-MM-DD of a cube time step"
        ) from None


def make_settings(
    *,
    band: str | None = None,
    reference: str | None = None,
    max_shift: float | None = None,
    window: int | None = None,
) -> CoregSettings:
    """Validated settings (None: default); one-line :class:`InvalidRequestError` otherwise."""
    s = CoregSettings()
    if max_shift is not None:
        try:
            max_shift = float(max_shift)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"--max-shift {max_shift!r} is not a number") from None
        if not max_shift > 0 or not math.isfinite(max_shift):
            raise InvalidRequestError(f"--max-shift must be > 0 pixels, got {max_shift:g}")
        s = replace(s, max_shift=max_shift)
    if window is not None:
        try:
            window = int(window)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"--window {window!r} is not a whole number") from None
        if window < 32 or window > 1024 or window & (window - 1):
            raise InvalidRequestError(
                f"--window must be a power of two from 32 to 1024 pixels, got {window}"
            )
        s = replace(s, window=window)
    if band is not None:
        s = replace(s, band=str(band).strip().upper())
    if reference is not None:
        s = replace(s, reference=parse_reference(reference))
    return s


def check_cube(
    record: dict[str, Any],
    variables: Iterable[str],
    times: Sequence[str],
    shape: tuple[int, int],
    settings: CoregSettings,
    stored: CoregSettings | None,
) -> CoregSettings:
    """The settings a run on this cube uses, or a one-line error naming what does not fit.

    The stored reference's band and reference are fixed: asking for others fails.
    """
    mission = record.get("mission")
    if mission not in MISSIONS:
        raise CoregistrationError(
            f"co-registration works on Sentinel-2 cubes ({', '.join(MISSIONS)}) with a native "
            f"10 m band ({', '.join(MATCH_BANDS)}); this cube is {mission}"
        )
    variables = set(variables)
    if stored is not None:
        for key in ("band", "reference"):
            want, have = getattr(settings, key), getattr(stored, key)
            if want is not None and key == "band" and want != have:
                raise CoregistrationError(
                    f"this cube's reference is fixed on band {have}: --band {want} cannot be "
                    "used (open the snapshot tagged before-coregistration to start over)"
                )
        if settings.reference not in ("median", stored.reference):
            raise CoregistrationError(
                f"this cube's reference is fixed ({stored.reference}); --reference "
                f"{settings.reference} cannot replace it"
            )
        settings = replace(settings, band=stored.band, reference=stored.reference)
    band = settings.band
    if band is None:
        band = next((b for b in MATCH_BANDS if b in variables), None)
        if band is None:
            raise CoregistrationError(
                "co-registration needs a native 10 m band (B08, B04, B03 or B02); the cube has "
                f"{', '.join(sorted(variables)) or 'none'}"
            )
    elif band not in variables:
        raise CoregistrationError(
            f"band {band} is not in the cube (it has {', '.join(sorted(variables))}); "
            f"use --band with one of {', '.join(b for b in MATCH_BANDS if b in variables)}"
        )
    elif band not in MATCH_BANDS:
        raise CoregistrationError(
            f"band {band} is not a native 10 m band; use --band with one of "
            f"{', '.join(b for b in MATCH_BANDS if b in variables)}"
        )
    if settings.reference != "median" and settings.reference not in {t[:10] for t in times}:
        raise CoregistrationError(
            f"reference date {settings.reference} is not a time step of the cube (its steps: "
            f"{', '.join(t[:10] for t in times[:6])}{' ...' if len(times) > 6 else ''})"
        )
    need = settings.window + 2 * margin(settings)
    if min(shape) < need:
        raise CoregistrationError(
            f"the cube ({shape[0]} x {shape[1]} px) is too small for --window "
            f"{settings.window} with --max-shift {settings.max_shift:g} (needs {need} px); "
            "use a smaller --window"
        )
    return replace(settings, band=band)


def check_request(mission: str, bands: Sequence[str]) -> None:
    """A build asking for co-registration: a mission and bands it works with, or a one-line
    :class:`InvalidRequestError` (before anything is searched or written).

    >>> check_request("landsat-c2-l2", ["red"])
    Traceback (most recent call last):
    ...
    stac2cube.errors.InvalidRequestError: coregister works on Sentinel-2 cubes (sentinel-2-l2a, sentinel-2-l1c), not landsat-c2-l2
    """
    if mission not in MISSIONS:
        raise InvalidRequestError(
            f"coregister works on Sentinel-2 cubes ({', '.join(MISSIONS)}), not {mission}"
        )
    if not set(bands) & set(MATCH_BANDS):
        raise InvalidRequestError(
            f"coregister needs a native 10 m band among the bands ({', '.join(MATCH_BANDS)}); "
            f"got {', '.join(bands)}"
        )


def margin(settings: CoregSettings) -> int:
    """Pixels around a window that AROSICS may shift it by (plus a little)."""
    return math.ceil(settings.max_shift) + 4


# -- consensus -------------------------------------------------------------------------------


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, cum[-1] / 2.0)])


def consensus(
    estimates: Sequence[Estimate], *, tolerance: float = 0.5, max_shift: float = math.inf
) -> tuple[float, float, float, int]:
    """Combine window estimates: reliability-weighted median, outliers (farther than
    ``tolerance`` px from it) out, weighted mean of the rest.

    Returns:
        ``(x_px, y_px, reliability, windows used)``, rounded to 1e-4 px.

    Raises:
        CoregistrationError: no usable estimate (the message is the step's failure reason).
    """
    good = [e for e in estimates if e.error is None and math.isfinite(e.x_px)]
    good = [e for e in good if math.hypot(e.x_px, e.y_px) <= max_shift]
    if not good:
        reasons = [e.error for e in estimates if e.error] or ["shift beyond max_shift"]
        raise CoregistrationError(max(set(reasons), key=reasons.count))
    x = np.array([e.x_px for e in good])
    y = np.array([e.y_px for e in good])
    rel = np.array([e.reliability if math.isfinite(e.reliability) else 50.0 for e in good])
    w = np.maximum(rel, 1e-3)
    mx, my = _weighted_median(x, w), _weighted_median(y, w)
    inl = np.hypot(x - mx, y - my) <= tolerance
    if inl.sum() * 2 < len(good) and len(good) > 1:
        raise CoregistrationError(
            f"windows disagree ({len(good)} windows, {int(inl.sum())} within {tolerance} px)"
        )
    wi = w[inl]
    return (
        round(float(np.sum(x[inl] * wi) / wi.sum()), 4),
        round(float(np.sum(y[inl] * wi) / wi.sum()), 4),
        round(float(np.sum(rel[inl] * wi) / wi.sum()), 2),
        int(inl.sum()),
    )


# -- reading a cube in a session -------------------------------------------------------------


class CubeReader:
    """Reads regions of one session's cube: the matching band, clear masks, the reference."""

    def __init__(self, session, record: dict[str, Any], band: str) -> None:
        import xarray as xr

        self.session = session
        self.ds = xr.open_zarr(session.store, consolidated=False, chunks=None)
        self.band = band
        self.times = [pd.Timestamp(t).isoformat() for t in self.ds.time.values]
        self.height, self.width = self.ds.sizes["y"], self.ds.sizes["x"]
        grid = record["grid"]
        self.epsg = int(grid["epsg"])
        self.res = float(grid["resolution"])
        self.west, self.north = float(grid["bounds"][0]), float(grid["bounds"][3])
        self.clouds = self._clouds()
        self.has_scl = "SCL" in self.ds.data_vars
        self._scl_raw = None
        if self.has_scl:
            import zarr

            array = zarr.open_group(session.store, mode="r")["SCL"]
            if array.dtype == np.uint8:  # stored classes: counted without decoding
                self._scl_raw = array

    def _clouds(self):
        import xarray as xr

        try:
            clouds = xr.open_zarr(
                self.session.store, group=CLOUDS_GROUP, consolidated=False, chunks=None
            )
        except (FileNotFoundError, KeyError):
            return None
        if "time" not in clouds.dims or not ({"cloud_mask", "cloud_prob"} & set(clouds.data_vars)):
            return None
        return clouds

    @property
    def wkt(self) -> str:
        from pyproj import CRS

        return CRS.from_epsg(self.epsg).to_wkt()

    def geotransform(self, row: int, col: int) -> tuple[float, ...]:
        return (
            self.west + col * self.res,
            self.res,
            0.0,
            self.north - row * self.res,
            0.0,
            -self.res,
        )

    def values(self, t: int, rows: slice, cols: slice = slice(None), name: str | None = None):
        """Decoded values (NaN: nodata) of a variable (default: the band) of step ``t``."""
        var = self.ds[name or self.band]
        return np.asarray(var.isel(time=t, y=rows, x=cols).values, dtype="float64")

    def clear(
        self, t: int, rows: slice, cols: slice = slice(None), *, exact: bool = True
    ) -> np.ndarray:
        """Clear and valid pixels of step ``t``: cloud layers, else SCL, else valid data.

        ``exact=False`` (for counting) takes validity from SCL where the cube has it (class 0
        is nodata) instead of reading the matching band too.
        """
        scl = None
        if self._scl_raw is not None and not exact and self.clouds is None:
            return _CLEAR_LUT[np.asarray(self._scl_raw[t, rows, cols])]
        if self.has_scl:
            raw = self.ds["SCL"].isel(time=t, y=rows, x=cols).values
            scl = np.nan_to_num(np.asarray(raw, dtype="float64"), nan=0).astype("int64")
        if exact or scl is None:
            ok = np.isfinite(self.values(t, rows, cols))
        else:
            ok = scl > 0
        time = np.datetime64(pd.Timestamp(self.times[t]).tz_localize(None))
        if self.clouds is not None and time in self.clouds.time.values:
            sel = self.clouds.sel(time=time).isel(y=rows, x=cols)
            for name in ("cloud_mask", "shadow_mask"):
                if name in sel.data_vars:
                    m = np.asarray(sel[name].values, dtype="float64")
                    ok &= np.isfinite(m) & (m == 0)
            if "cloud_mask" not in sel.data_vars:
                p = np.asarray(sel["cloud_prob"].values, dtype="float64")
                ok &= np.isfinite(p) & (p < 0.4)
        elif scl is not None:
            ok &= np.isin(scl, CLEAR_SCL)
        return ok


class Image:
    """An image to match against, readable by region: a stored reference, or a step's clear
    pixels (the anchor of a median reference)."""

    def __init__(self, read: Callable[[slice, slice], np.ndarray]) -> None:
        self.read = read

    def valid(self, rows: slice, cols: slice) -> np.ndarray:
        return np.isfinite(self.read(rows, cols))


def cell_counts(mask_of: Callable[[slice], np.ndarray], height: int, width: int, cell: int):
    """Counts of True pixels per ``cell`` x ``cell`` cell, read strip by strip."""
    ny, nx = -(-height // cell), -(-width // cell)
    out = np.zeros((ny, nx))
    step = max(cell, (STRIP // cell) * cell)
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        m = mask_of(slice(y0, y1))
        rows = -(-(y1 - y0) // cell)
        padded = np.zeros((rows * cell, nx * cell), "uint32")
        padded[: y1 - y0, :width] = m
        k = y0 // cell
        out[k : k + rows] += padded.reshape(rows, cell, nx, cell).sum(axis=(1, 3))
    return out


def cell_area(height: int, width: int, cell: int) -> np.ndarray:
    """Pixels per cell (edge cells are smaller)."""
    rows = np.minimum(cell, height - np.arange(0, height, cell))
    cols = np.minimum(cell, width - np.arange(0, width, cell))
    return np.outer(rows, cols).astype("float64")


def place_windows(
    both: np.ndarray, cell: int, height: int, width: int, settings: CoregSettings
) -> list[tuple[int, int]]:
    """Upper-left pixels of up to ``settings.windows`` windows where ``both`` (clear pixels
    per cell in step and reference) reaches ``min_clear``; at least half a window apart, the
    clearest first (nearer the centre on ties)."""
    win, m = settings.window, margin(settings)
    k = win // cell
    need = settings.min_clear * win * win
    cands = []
    for r in range(-(-m // cell), (height - win - m) // cell + 1):
        for c in range(-(-m // cell), (width - win - m) // cell + 1):
            clear = both[r : r + k, c : c + k].sum()
            if clear >= need:
                dist = math.hypot(
                    (r * cell + win / 2) - height / 2, (c * cell + win / 2) - width / 2
                )
                cands.append((-clear, dist, r * cell, c * cell))
    cands.sort()
    chosen: list[tuple[int, int]] = []
    for _, _, r0, c0 in cands:
        if all(abs(r0 - r) >= win // 2 or abs(c0 - c) >= win // 2 for r, c in chosen):
            chosen.append((r0, c0))
            if len(chosen) == settings.windows:
                break
    return chosen


def estimate_window(
    reader: CubeReader,
    ref: Image,
    t: int,
    origin: tuple[int, int],
    settings: CoregSettings,
    *,
    target: Image | None = None,
) -> Estimate:
    """One AROSICS ``COREG`` run on the window at ``origin`` (rows/cols of its upper left),
    in memory, with nodata and both bad-data masks given."""
    from arosics import COREG
    from geoarray import GeoArray

    m, win = margin(settings), settings.window
    r0, c0 = origin[0] - m, origin[1] - m
    rows, cols = slice(r0, r0 + win + 2 * m), slice(c0, c0 + win + 2 * m)
    ref_v = ref.read(rows, cols)
    if target is None:
        tgt_v = reader.values(t, rows, cols)
        tgt_ok = reader.clear(t, rows, cols)
    else:
        tgt_v = target.read(rows, cols)
        tgt_ok = np.isfinite(tgt_v)
    ref_ok = np.isfinite(ref_v)
    gt, wkt = reader.geotransform(r0, c0), reader.wkt
    res = reader.res
    wp = (
        reader.west + (origin[1] + win / 2) * res,
        reader.north - (origin[0] + win / 2) * res,
    )
    try:
        coreg = COREG(
            GeoArray(np.where(ref_ok, ref_v, NODATA).astype("float32"), gt, wkt, nodata=NODATA),
            GeoArray(np.where(tgt_ok, tgt_v, NODATA).astype("float32"), gt, wkt, nodata=NODATA),
            wp=wp,
            ws=(win, win),
            max_shift=math.ceil(settings.max_shift),
            nodata=(NODATA, NODATA),
            mask_baddata_ref=GeoArray(~ref_ok, gt, wkt),
            mask_baddata_tgt=GeoArray(~tgt_ok, gt, wkt),
            resamp_alg_calc="cubic",
            CPUs=1,
            q=True,
            progress=False,
        )
        coreg.calculate_spatial_shifts()
    except Exception as exc:  # AROSICS raises plain RuntimeError/ValueError/AssertionError
        return Estimate(error=_reason(exc))
    if not coreg.success or coreg.x_shift_px is None:
        return Estimate(error="no match found")
    rel = coreg.shift_reliability
    return Estimate(
        float(coreg.x_shift_px),
        float(coreg.y_shift_px),
        float(rel) if rel is not None else math.nan,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def estimate_step(
    reader: CubeReader,
    ref: Image,
    t: int,
    settings: CoregSettings,
    *,
    target: Image | None = None,
    ref_cells: np.ndarray | None = None,
) -> tuple[float, float, float, int, list[tuple[int, int]]]:
    """The step's shift against ``ref`` (:func:`consensus` of its windows), and the windows
    tried (upper-left pixel, row and column). ``ref_cells``: the reference's valid pixels per
    cell (:func:`cell_counts`), counted once for a run (default: counted here).

    Raises:
        CoregistrationError: the step cannot be registered (the message says why).
    """
    cell = settings.window // 4
    h, w = reader.height, reader.width
    if ref_cells is None:
        ref_cells = cell_counts(lambda r: ref.valid(r, slice(None)), h, w, cell)
    if target is None:
        clear = cell_counts(lambda r: reader.clear(t, r, exact=False), h, w, cell)
    else:
        clear = cell_counts(lambda r: np.isfinite(target.read(r, slice(None))), h, w, cell)
    # pixels clear in the step and valid in the reference, at least (exact where either is
    # complete in the cell; the windows' own masks are exact)
    tgt_cells = np.maximum(0.0, clear + ref_cells - cell_area(h, w, cell))
    windows = place_windows(tgt_cells, cell, h, w, settings)
    if not windows:
        raise CoregistrationError(
            f"too cloudy: no {settings.window} px window {settings.min_clear:.0%} clear in "
            "both the step and the reference"
        )
    estimates = [
        estimate_window(reader, ref, t, origin, settings, target=target) for origin in windows
    ]
    estimates = [
        e
        if e.error or not (e.reliability < settings.min_reliability)
        else replace(e, error=f"low reliability ({e.reliability:.0f}%)")
        for e in estimates
    ]
    found = consensus(estimates, tolerance=settings.tolerance, max_shift=settings.max_shift)
    return (*found, windows)


# -- the reference ---------------------------------------------------------------------------


def stored_reference(session) -> tuple[CoregSettings, dict[str, Any]] | None:
    """The stored reference's settings and description, or None when the cube has none."""
    import zarr

    try:
        group = zarr.open_group(session.store, path=GROUP, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None
    raw = group.attrs.get(SETTINGS_ATTR)
    if raw is None:
        return None
    info = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return CoregSettings.from_attrs(info["settings"]), info


def _stored_image(session) -> Image:
    import zarr

    array = zarr.open_group(session.store, path=GROUP, mode="r")["reference"]

    def read(rows: slice, cols: slice) -> np.ndarray:
        return np.asarray(array[rows, cols], dtype="float64")

    return Image(read)


def _step_image(reader: CubeReader, t: int) -> Image:
    def read(rows: slice, cols: slice) -> np.ndarray:
        v = reader.values(t, rows, cols)
        return np.where(reader.clear(t, rows, cols), v, np.nan)

    return Image(read)


def _shifted_image(reader: CubeReader, t: int, sx: float, sy: float) -> Image:
    """Step ``t``'s clear pixels shifted by ``(sx, sy)`` (a median member), read by region."""
    base = _step_image(reader, t)
    from stac2cube.coreg_shift import halo

    h = halo(sx, sy)

    def read(rows: slice, cols: slice) -> np.ndarray:
        r0, r1 = rows.start or 0, rows.stop if rows.stop is not None else reader.height
        lo, hi = max(0, r0 - h), min(reader.height, r1 + h)
        src = base.read(slice(lo, hi), slice(None))
        out = shift_block(src, sx, sy, rows=(r0, r1), origin=lo)
        return out[:, cols]

    return Image(read)


def make_reference(
    session, reader: CubeReader, settings: CoregSettings, clear_share: list[float]
) -> tuple[dict[str, Any], dict[int, StepResult]]:
    """Compute the reference, write it to the group ``coregistration``; returns its
    description and the results of the steps that define it (status ``reference``)."""
    import xarray as xr
    import zarr

    if settings.reference == "median":
        order = sorted(range(len(reader.times)), key=lambda t: (-clear_share[t], t))
        anchor = order[0]
        members = [t for t in order if clear_share[t] >= 0.5][: settings.reference_steps]
        members = members or [anchor]
        anchor_img = _step_image(reader, anchor)
        cell = settings.window // 4
        anchor_cells = cell_counts(
            lambda r: anchor_img.valid(r, slice(None)), reader.height, reader.width, cell
        )
        shifts = {anchor: (0.0, 0.0)}
        for t in members[1:]:
            try:
                sx, sy, _, _, _ = estimate_step(
                    reader, anchor_img, t, settings, ref_cells=anchor_cells
                )
            except CoregistrationError:
                continue
            shifts[t] = (sx, sy)
        images = [
            anchor_img if t == anchor else _shifted_image(reader, t, *shifts[t]) for t in shifts
        ]
        how = {
            "method": "median",
            "anchor": reader.times[anchor],
            "members": [reader.times[t] for t in shifts],
            "member_shifts_px": {reader.times[t]: list(s) for t, s in shifts.items()},
        }
    else:
        anchor = next(t for t, v in enumerate(reader.times) if v[:10] == settings.reference)
        images = [_step_image(reader, anchor)]
        how = {"method": "date", "anchor": reader.times[anchor], "members": [reader.times[anchor]]}
    ds = xr.Dataset(
        coords={"y": reader.ds.y.values, "x": reader.ds.x.values},
    )
    if "spatial_ref" in reader.ds.coords:
        ds = ds.assign_coords(spatial_ref=reader.ds.spatial_ref)
    chunk = (min(STRIP, reader.height), min(STRIP, reader.width))
    ds.to_zarr(session.store, group=GROUP, mode="w", consolidated=False)
    group = zarr.open_group(session.store, path=GROUP, mode="r+")
    array = group.create_array(
        "reference",
        shape=(reader.height, reader.width),
        chunks=chunk,
        dtype="float32",
        fill_value=np.nan,
        dimension_names=["y", "x"],
        attributes={
            "long_name": f"co-registration reference ({settings.band}, {how['method']})",
            "grid_mapping": "spatial_ref",
            "units": "1",
        },
    )
    for y0 in range(0, reader.height, STRIP):
        rows = slice(y0, min(reader.height, y0 + STRIP))
        stack = np.stack([img.read(rows, slice(None)) for img in images])
        if len(images) == 1:
            out = stack[0]
        else:
            with np.errstate(all="ignore"), _no_warnings():
                out = np.nanmedian(stack, axis=0)
        array[rows, :] = out.astype("float32")
    info = {
        "settings": settings.to_attrs(),
        "band": settings.band,
        **how,
        "id": uuid.uuid4().hex[:12],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "resampling": f"lanczos{LANCZOS_A} (continuous), nearest (classes, masks)",
    }
    group.attrs[SETTINGS_ATTR] = json.dumps(info)
    results = {anchor: StepResult(reader.times[anchor], REFERENCE, 0.0, 0.0, 0.0, 0.0, 100.0, 0)}
    return info, results


class _no_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -- per-step coordinates --------------------------------------------------------------------


def placeholder_coords(n: int) -> dict[str, tuple[str, np.ndarray]]:
    """The per-step coordinates of ``n`` steps not co-registered yet (status ``not run``)."""
    out: dict[str, tuple[str, np.ndarray]] = {
        name: ("time", np.full(n, np.nan, "float32")) for name in COORDS[:5]
    }
    out["coreg_windows"] = ("time", np.zeros(n, "int16"))
    out["coreg_status"] = ("time", np.array([NOT_RUN] * n, object))
    return out


def with_placeholders(ds, cube_has_coords: bool):
    """``ds`` (steps about to be written) with ``not run`` coordinates when the cube has the
    co-registration coordinates (appends must carry every per-step variable of the cube)."""
    if not cube_has_coords or "coreg_status" in ds.coords:
        return ds
    return ds.assign_coords(placeholder_coords(ds.sizes["time"]))


def read_statuses(session) -> dict[str, str]:
    """``time -> coreg_status`` of the session's cube (empty without the coordinates)."""
    import xarray as xr

    ds = xr.open_zarr(session.store, consolidated=False, chunks=None)
    if "coreg_status" not in ds.coords:
        return {}
    times = [pd.Timestamp(t).isoformat() for t in ds.time.values]
    return dict(zip(times, [str(s) for s in ds.coreg_status.values], strict=True))


def write_coords(session, times: Sequence[str], results: dict[str, StepResult]) -> None:
    """Write the per-step coordinates for ``results`` (creating them, ``not run``, first)."""
    import xarray as xr
    import zarr

    root = zarr.open_group(session.store, mode="r+")
    n = len(times)
    if "coreg_status" not in root:
        attrs = root.attrs.asdict()
        coords = placeholder_coords(n)
        new = xr.Dataset(coords={k: v for k, v in coords.items()})
        new.to_zarr(
            session.store,
            mode="a",
            consolidated=False,
            encoding={k: {"chunks": (4096,)} for k in coords},
        )
        root = zarr.open_group(session.store, mode="r+")
        root.attrs.clear()
        root.attrs.update(attrs)  # xarray replaced the root attributes
        for _, member in root.members():
            if isinstance(member, zarr.Array) and member.metadata.dimension_names is not None:
                dims = tuple(member.metadata.dimension_names)
                if len(dims) == 3 and dims[0] == "time":
                    have = str(member.attrs.get("coordinates", "")).split()
                    member.attrs["coordinates"] = " ".join(dict.fromkeys([*have, *COORDS]))
    index = {t: i for i, t in enumerate(times)}
    values = {
        "coreg_x_shift_px": "x_px",
        "coreg_y_shift_px": "y_px",
        "coreg_x_shift_m": "x_m",
        "coreg_y_shift_m": "y_m",
        "coreg_reliability": "reliability",
        "coreg_windows": "windows",
        "coreg_status": "status",
    }
    for name, key in values.items():
        array = root[name]
        for time, res in results.items():
            value = getattr(res, key)
            array[index[time]] = value


# -- applying shifts -------------------------------------------------------------------------


def _layers(session, group: str | None) -> list[tuple[Any, str, float | None, tuple | None]]:
    """The (time, y, x) arrays of a group: ``(array, kind, fill, clip)`` each."""
    import zarr

    try:
        root = zarr.open_group(session.store, path=group or "", mode="r+")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return []
    out = []
    for name, member in root.members():
        if not isinstance(member, zarr.Array):
            continue
        dims = tuple(member.metadata.dimension_names or ())
        if dims != ("time", "y", "x"):
            continue
        attrs = member.attrs.asdict()
        fill = attrs.get("_FillValue", member.fill_value)
        fill = _decode_fill(fill, member.dtype)
        scaled = "scale_factor" in attrs or "add_offset" in attrs
        classes = "flag_values" in attrs or "flag_masks" in attrs or name in ("SCL", "qa_pixel")
        if member.dtype.kind == "b" or classes or (member.dtype.kind in "iu" and not scaled):
            kind = "nearest"
        else:
            kind = "continuous"
        clip = (0.0, 1.0) if name == "cloud_prob" and member.dtype.kind == "f" else None
        out.append((member, kind, fill, clip))
    return out


def _decode_fill(fill: Any, dtype: np.dtype) -> float | None:
    import base64

    if fill is None:
        return None
    if isinstance(fill, str):  # xarray stores float fills base64-encoded
        try:
            raw = base64.standard_b64decode(fill)
            return float(np.frombuffer(raw, dtype={8: "<f8", 4: "<f4", 2: "<f2"}[len(raw)])[0])
        except Exception:
            return None
    try:
        return float(fill)
    except (TypeError, ValueError):
        return None


def apply_shift(session, t: int, time: str, sx: float, sy: float) -> int:
    """Shift every (time, y, x) layer of step ``t`` of the main group, and the step's layers of
    the cloud group, by ``(sx, sy)``. Returns the number of layers shifted."""
    n = 0
    for array, kind, fill, clip in _layers(session, None):
        shift_array_step(array, (t,), sx, sy, kind=kind, fill=fill, strip=STRIP, clip=clip)
        n += 1
    clouds = _layers(session, CLOUDS_GROUP)
    if clouds:
        import xarray as xr

        times = xr.open_zarr(session.store, group=CLOUDS_GROUP, consolidated=False).time.values
        match = np.flatnonzero(pd.DatetimeIndex(times) == pd.Timestamp(time).tz_localize(None))
        for array, kind, fill, clip in clouds:
            if match.size:
                shift_array_step(array, (int(match[0]),), sx, sy, kind=kind, fill=fill, clip=clip)
                n += 1
    return n


# -- one run ---------------------------------------------------------------------------------


def coregister_in_session(
    session,
    record: dict[str, Any],
    settings: CoregSettings,
    times: Iterable[str] | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> CoregRun:
    """Co-register steps of the cube in a writable icechunk session (nothing is committed).

    Args:
        session: writable session of the cube (this run's uncommitted steps count).
        record: the cube's request record (mission, grid).
        settings: as checked by :func:`check_cube` (band resolved).
        times: steps to do (ISO times); None: every step not ``ok``/``reference`` yet. Steps
            already done are skipped in any case; a new reference does every step.
        log: called with a line per step.

    Returns:
        What was done (the steps' results, the reference's description).
    """
    reader = CubeReader(session, record, settings.band)
    if not reader.times:
        return CoregRun()
    stored = stored_reference(session)
    statuses = read_statuses(session)
    run = CoregRun()
    results: dict[str, StepResult] = {}
    if stored is None:
        cell = settings.window // 4
        share = [
            cell_counts(
                lambda r, t=t: reader.clear(t, r, exact=False), reader.height, reader.width, cell
            ).sum()
            / (reader.height * reader.width)
            for t in range(len(reader.times))
        ]
        info, ref_steps = make_reference(session, reader, settings, share)
        run.created_reference = True
        for t, res in ref_steps.items():
            results[reader.times[t]] = res
        todo = [t for t in reader.times if t not in results]
    else:
        info = stored[1]
        wanted = set(reader.times) if times is None else {_iso(t) for t in times}
        todo = [
            t
            for t in reader.times
            if (t in wanted or statuses.get(t, NOT_RUN) == NOT_RUN)
            and statuses.get(t, NOT_RUN) not in DONE
        ]
    run.reference = {k: info[k] for k in ("id", "method", "anchor", "band", "created") if k in info}
    ref = _stored_image(session)
    ref_cells = None
    if todo:  # the reference's valid pixels per cell, counted once
        ref_cells = cell_counts(
            lambda r: ref.valid(r, slice(None)), reader.height, reader.width, settings.window // 4
        )
    for time in todo:
        t = reader.times.index(time)
        res = StepResult(time)
        try:
            sx, sy, rel, nwin, res.origins = estimate_step(
                reader, ref, t, settings, ref_cells=ref_cells
            )
        except CoregistrationError as exc:
            res.status = f"failed: {exc}"
        else:
            res.status, res.x_px, res.y_px, res.reliability, res.windows = OK, sx, sy, rel, nwin
            res.x_m, res.y_m = sx * reader.res, -sy * reader.res
            apply_shift(session, t, time, sx, sy)
        if res.status == statuses.get(time) and not res.status.startswith(OK):
            continue  # failed again, for the same reason: nothing to write
        results[time] = res
        if log is not None:
            shift = f" ({res.x_px:+.3f}, {res.y_px:+.3f}) px" if res.status == OK else ""
            log(f"co-registration {time}: {res.status}{shift}")
    if results:
        write_coords(session, reader.times, results)
    run.steps = [results[t] for t in reader.times if t in results]
    return run


def _iso(value: str | pd.Timestamp) -> str:
    ts = pd.Timestamp(value)
    if ts.tz is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.isoformat()


def ledger_with(ledger: list[dict[str, Any]], run: CoregRun) -> list[dict[str, Any]]:
    """The ledger with each co-registered step's entry naming its shift and the reference."""
    by_time = {_iso(s.time): s for s in run.steps}
    out = []
    for entry in ledger:
        res = by_time.get(_iso(entry["time"]))
        if res is not None:
            entry = {
                **entry,
                "coregistration": {**res.record(), "reference": run.reference.get("id")},
            }
        out.append(entry)
    return out


# -- the stage inside a build or update run --------------------------------------------------

TAG = "before-coregistration"


def cube_has_coords(cube) -> bool:
    """True when the committed cube (a :class:`~stac2cube.cube.Cube`) has the per-step
    co-registration coordinates."""
    if cube.state is None:
        return False
    return "coreg_status" in cube.open_dataset(snapshot=cube.snapshot).coords


def with_cube_placeholders(cube, ds):
    """``ds`` ready to be appended to ``cube``: ``not run`` coordinates where the cube has
    them (the build calls this on every batch before it is written)."""
    return with_placeholders(ds, cube_has_coords(cube))


def tag_before(repo, snapshot: str | None) -> str | None:
    """Tag ``snapshot`` (the raw pixels before the first co-registration) as
    ``before-coregistration`` (``-2``, ``-3`` ... when taken). Returns the tag."""
    if snapshot is None:
        return None
    have = set(repo.list_tags())
    name, k = TAG, 1
    while name in have:
        k += 1
        name = f"{TAG}-{k}"
    repo.create_tag(name, snapshot)
    return name


def coregister_build_steps(
    session,
    cube,
    record: dict[str, Any],
    ledger: list[dict[str, Any]],
    times: Sequence[str],
    *,
    enable: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The co-registration stage of a build or update run, in its session (same commit).

    Runs when the cube has a stored reference (it stays co-registered without being told) or
    when ``enable`` (the ``coregister`` switch) turns the stage on; then the steps of
    ``times`` (written or replaced by the run) are aligned, and on a first run every step.
    Returns the ledger with the steps' shifts.
    """
    stored = stored_reference(session)
    if stored is None and not enable:
        return ledger
    if stored is not None and not times:
        return ledger
    import xarray as xr

    ds = xr.open_zarr(session.store, consolidated=False, chunks=None)
    all_times = [pd.Timestamp(t).isoformat() for t in ds.time.values]
    settings = check_cube(
        record,
        [str(v) for v in ds.data_vars],
        all_times,
        (ds.sizes["y"], ds.sizes["x"]),
        stored[0] if stored is not None else CoregSettings(),
        stored[0] if stored is not None else None,
    )
    parent = session.snapshot_id if cube.state is not None else None
    run = coregister_in_session(session, record, settings, times, log=log)
    if run.created_reference and parent is not None:
        tag_before(cube.repository(), parent)
    if log is not None and run.failed:
        log(
            f"co-registration failed for {len(run.failed)} step(s): "
            + "; ".join(f"{s.time} {s.status}" for s in run.failed)
        )
    return ledger_with(ledger, run)
