"""Super-resolution of a Sentinel-2 cube's 10 m and 20 m bands to 2.5 m with SEN2SR (no Prefect).

The models are the SEN2SRLite family (:mod:`stac2cube.superres_models`): ``rgbn`` (B04 B03 B02
B08 -> 2.5 m), ``full`` (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 -> 2.5 m) and ``rswir-x2``
(B05 B06 B07 B8A B11 B12 sharpened to the cube's 10 m grid, the 10 m bands as reference).

How a time step is processed (:func:`super_resolve`):

* **Patches.** The hard constraint's low-pass masks are sized for 128 px input patches, so a
  step is cut into 128 px windows overlapping by ``overlap`` pixels (32 by default), spaced
  evenly so that the last one ends on the grid's edge; a grid smaller than a patch is padded
  (edge values) to one patch and cropped back. Non-square grids and any size work.
* **Blending.** Where windows overlap, their outputs are averaged with linear weights that
  fall from 1 to 0 across the overlap (nothing is taken from the outer quarter of an overlap,
  where a window's edge shows); at the grid's own edges a window's weight stays 1. A pixel
  covered by one window only is that window's output, unchanged.
* **Nodata.** Inputs are reflectance (the cube's decoded values, DN/10000) as float32. A pixel
  is valid when every input band is finite; invalid pixels are filled with the nearest valid
  pixel's values for inference (a single NaN would spoil a whole patch), windows without a
  valid pixel are skipped, and the output is NaN where the invalid mask, dilated by
  ``nodata_dilation`` input pixels (default 2: the reach of the hard constraint's bicubic
  upsampling), covers it. The CNNs' receptive field is 21 input pixels
  (:data:`~stac2cube.superres_models.CNN_REACH`; 42 for ``full``): set ``nodata_dilation`` to
  it for a mask no filled value can reach.
* **20 m phase** (``full``, ``rswir-x2``): these models take the 20 m bands at 10 m and keep
  every second pixel (even rows and columns) as the 20 m pixel. The cube's 10 m grid is
  therefore processed in windows starting on native 20 m pixel edges (multiples of 20 m in the
  cube's CRS, where Sentinel-2 puts them): a grid starting half a 20 m pixel off is padded by
  one pixel and cropped back. A cube at another resolution than 10 m is refused.
* **Devices.** ``auto`` takes CUDA when torch sees a GPU, else the CPU. On CUDA the batch size
  follows the free GPU memory, halves on out-of-memory, and the CNNs run in fp16 (or bf16)
  with any batch that comes out non-finite redone in fp32; on the CPU everything is fp32.

The output (:func:`write_superres`) is the group ``superres`` of the cube's store: one variable
per output band (the input band names), dims ``(time, y, x)`` on a grid nested in the cube's
10 m grid (each 10 m pixel is exactly 4 x 4 output pixels; ``x``/``y`` are pixel centres; same
CRS; ``spatial_ref``), the cube's time axis, stored as ``uint16`` with the cube's fixed
reflectance encoding (``scale_factor`` 1e-4, ``add_offset`` -0.1, ``_FillValue`` 0), identical
across appends. Its attributes name the model, variant, weights digest, sen2sr and torch
versions, patch size, overlap and the settings, and record a fingerprint per time step (its
scenes and the weights), so only new or replaced steps are computed.

Example:
    >>> tile_starts(300, 128, 32)
    [0, 86, 172]
    >>> tile_starts(100, 128, 32)
    [0]
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from stac2cube._log import get_logger
from stac2cube.encoding import S2_REFLECTANCE_ENCODING
from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.superres_models import BICUBIC_REACH, LoadedModel, Variant, load_model, variant

if TYPE_CHECKING:
    from stac2cube.cube import Cube

GROUP = "superres"
PATCH = 128
DEFAULT_OVERLAP = 32
SUPERRES_ENCODING = dict(S2_REFLECTANCE_ENCODING)
SETTINGS_ATTR = "stac2cube:superres_settings"
STEPS_ATTR = "stac2cube:superres_steps"
S2_MISSIONS = ("sentinel-2-l2a", "sentinel-2-l1c")
#: output chunk (per time step) of the 2.5 m arrays
OUT_CHUNK = 1024
TIME_UNITS = "seconds since 1970-01-01"
#: GPU memory one 128 px patch takes in a batch (fp32 activations of the 10-band model, with
#: a margin; the batch size on CUDA is the free memory over this)
GPU_BYTES_PER_PATCH = 160 * 2**20

DeviceName = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuperresSettings:
    """What the stage runs with; stored in the group's attributes so updates keep it current.

    Attributes:
        model_dir: folder of the model (mlstac layout) or of several models.
        model: ``rgbn``, ``full`` or ``rswir-x2``.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: patches per forward pass; None: 4 on the CPU, from free memory on CUDA.
        overlap: overlap of neighbouring 128 px patches, in input pixels.
        precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` or ``bf16``.
        nodata_dilation: input pixels the nodata mask is grown by before masking the output.
    """

    model_dir: str
    model: str = "rgbn"
    device: str = "auto"
    batch_size: int | None = None
    overlap: int = DEFAULT_OVERLAP
    precision: str = "auto"
    nodata_dilation: int = BICUBIC_REACH

    def __post_init__(self) -> None:
        variant(self.model)
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidRequestError(f"unknown device {self.device!r}; use auto, cpu or cuda")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise InvalidRequestError(
                f"unknown precision {self.precision!r}; use auto, fp32, fp16 or bf16"
            )
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise InvalidRequestError(f"batch size must be at least 1, not {self.batch_size}")
        if not 0 <= int(self.overlap) <= PATCH // 2:
            raise InvalidRequestError(f"overlap must be 0..{PATCH // 2} pixels, not {self.overlap}")
        if int(self.nodata_dilation) < 0:
            raise InvalidRequestError("nodata dilation must be 0 or more pixels")
        object.__setattr__(self, "model_dir", str(Path(self.model_dir).expanduser().resolve()))
        object.__setattr__(self, "model", variant(self.model).name)

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], **override: Any) -> SuperresSettings:
        """Settings stored in a group, with the non-None values of ``override`` replacing them."""
        base = {k: attrs[k] for k in cls.__dataclass_fields__ if k in attrs}
        base.update({k: v for k, v in override.items() if v is not None})
        return cls(**base)


# -- devices -------------------------------------------------------------------------------------


def resolve_device(device: str = "auto"):
    """The torch device for ``auto``/``cpu``/``cuda``.

    Raises:
        InvalidRequestError: ``cuda`` asked for where torch sees no GPU (one line).
    """
    import torch

    if device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise InvalidRequestError(
            f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU on this "
            "machine; use --device cpu or auto, or run on a GPU node (SLURM --gres=gpu:1)"
        )
    if device in ("cuda", "auto") and available:
        return torch.device("cuda")
    if device == "auto":
        return torch.device("cpu")
    raise InvalidRequestError(f"unknown device {device!r}; use auto, cpu or cuda")


def resolve_precision(precision: str, device) -> str:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; others as given."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def default_batch_size(device, patches_per_item: int = 1) -> int:
    """Patches per forward pass: 4 on the CPU; on CUDA as many as the free memory holds."""
    if device.type != "cuda":
        return 4
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(256, free * 0.8 // (GPU_BYTES_PER_PATCH * patches_per_item))))


# -- tiling --------------------------------------------------------------------------------------


def tile_starts(length: int, patch: int = PATCH, overlap: int = DEFAULT_OVERLAP, *, even=False):
    """Start offsets of windows of ``patch`` pixels covering ``length`` pixels with at least
    ``overlap`` pixels of overlap, evenly spaced, the last ending at ``length``. ``even``:
    every start is even (``length`` must be even)."""
    if length <= patch:
        return [0]
    step = patch - overlap
    n = math.ceil((length - patch) / step) + 1
    starts = [round(k * (length - patch) / (n - 1)) for k in range(n)]
    if even:
        starts = [s - (s % 2) for s in starts]
    return sorted(set(starts))


def _ramp_1d(starts: Sequence[int], patch: int, k: int) -> np.ndarray:
    """Blending weight along one axis of window ``k``: 1, falling linearly to 0 across each
    overlap with a neighbour (the outer quarter of the overlap at 0)."""
    w = np.ones(patch, dtype=np.float64)
    t = np.arange(patch) + 0.5
    if k > 0:  # overlap with the previous window: [0, o)
        o = starts[k - 1] + patch - starts[k]
        if o > 0:
            m = o / 4
            w = np.minimum(w, np.clip((t - m) / max(o - 2 * m, 1e-9), 0, 1))
    if k < len(starts) - 1:  # overlap with the next window: [patch - o, patch)
        o = starts[k] + patch - starts[k + 1]
        if o > 0:
            m = o / 4
            w = np.minimum(w, np.clip((patch - t - m) / max(o - 2 * m, 1e-9), 0, 1))
    return w


def _fill_nearest(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``data`` (bands, y, x) with invalid pixels set to the nearest valid pixel's values."""
    if valid.all():
        return data
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~valid, return_indices=True)
    return data[:, iy, ix]


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0 or not mask.any():
        return mask
    from scipy.ndimage import maximum_filter

    return maximum_filter(mask, size=2 * pixels + 1, mode="nearest")


def super_resolve(
    data: np.ndarray,
    model: LoadedModel | Callable[[Any], Any],
    *,
    scale: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 4,
    phase: tuple[int, int] = (0, 0),
    even: bool | None = None,
    nodata_dilation: int = BICUBIC_REACH,
    out_channels: Sequence[int] | None = None,
    patch: int = PATCH,
    stats: dict[str, Any] | None = None,
    sink: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """Super-resolve one time step: ``(bands, y, x)`` reflectance -> ``(out, y*s, x*s)`` float32.

    Args:
        data: the model's input bands in its order, reflectance, NaN for nodata.
        model: a :class:`~stac2cube.superres_models.LoadedModel` (or any callable taking a
            ``(n, bands, patch, patch)`` tensor, with ``scale`` given).
        overlap: overlap of neighbouring windows in input pixels.
        batch_size: windows per forward pass (halved on CUDA out-of-memory).
        phase: ``(rows, cols)`` of padding put before the grid so that windows start on a
            native 20 m pixel edge (0 or 1 each; ``full``/``rswir-x2``).
        even: windows start at even pixels (default: the model needs the 20 m phase).
        nodata_dilation: input pixels the nodata mask grows by before masking the output.
        out_channels: model output channels to keep (default: the variant's outputs).
        stats: filled with ``patches`` (windows run) and ``redone`` (batches redone in fp32).
        sink: called as ``sink(first_row, block)`` with ``(out, rows, x*s)`` blocks of final
            output rows, top to bottom, as soon as no later window reaches them: the step's
            output is never held whole (memory: a band of about one window's height).

    Returns:
        The output bands, NaN where the (dilated) input was nodata (None with ``sink``).
    """
    import torch

    v: Variant | None = getattr(model, "variant", None)
    s = int(scale if scale is not None else v.scale)  # type: ignore[union-attr]
    if even is None:
        even = bool(v and v.needs_20m_phase)
    if out_channels is None and v is not None:
        out_channels = [v.bands.index(b) for b in v.outputs]
    data = np.asarray(data, dtype=np.float32)
    c, h, w = data.shape
    valid = np.isfinite(data).all(axis=0)
    n_out = len(out_channels) if out_channels is not None else c
    out_shape = (n_out, h * s, w * s)
    stats = stats if stats is not None else {}
    stats.setdefault("patches", 0)
    stats.setdefault("redone", 0)
    if not valid.any():
        empty = np.full(out_shape, np.nan, dtype=np.float32)
        if sink is None:
            return empty
        sink(0, empty)
        return None
    filled = _fill_nearest(np.where(valid, data, 0).astype(np.float32), valid)
    # pad: the 20 m phase before, even sizes and at least one patch after
    py, px = phase
    hp, wp = max(patch, h + py), max(patch, w + px)
    if even:
        hp, wp = hp + hp % 2, wp + wp % 2
    padded = np.pad(filled, ((0, 0), (py, hp - h - py), (px, wp - w - px)), mode="edge")
    vpad = np.pad(valid, ((py, hp - h - py), (px, wp - w - px)), constant_values=False)
    ys, xs = tile_starts(hp, patch, overlap, even=even), tile_starts(wp, patch, overlap, even=even)
    wy = [np.repeat(_ramp_1d(ys, patch, k), s) for k in range(len(ys))]
    wx = [np.repeat(_ramp_1d(xs, patch, k), s) for k in range(len(xs))]
    windows = [
        (i, j)
        for i, y0 in enumerate(ys)
        for j, x0 in enumerate(xs)
        if vpad[y0 : y0 + patch, x0 : x0 + patch].any()
    ]
    bad = _dilate(~valid, int(nodata_dilation))
    result = None
    if sink is None:
        result = np.full(out_shape, np.nan, dtype=np.float32)

        def sink(row0: int, block: np.ndarray) -> None:
            result[:, row0 : row0 + block.shape[1]] = block

    # output rows are summed in a band that starts at the first row not yet final, and handed
    # to ``sink`` as soon as no later window reaches them (windows go row by row)
    strip = _Strip(n_out, patch * s, wp * s)
    device = getattr(model, "device", torch.device("cpu"))
    bs = max(1, int(batch_size))
    k = 0

    def flush(upto: int) -> None:
        """Hand the output rows above padded output row ``upto`` to ``sink``."""
        block, row0 = strip.take(upto)
        lo, hi = max(row0, py * s), min(row0 + block.shape[1], (py + h) * s)
        if hi <= lo:
            return
        out = block[:, lo - row0 : hi - row0, px * s : (px + w) * s]
        first, last = (lo - py * s) // s, (hi - py * s - 1) // s
        rows = bad[first : last + 1]
        if rows.any():
            hr = np.repeat(np.repeat(rows, s, axis=0), s, axis=1)
            off = (lo - py * s) - first * s
            out[:, hr[off : off + hi - lo]] = np.nan
        sink(lo - py * s, out)

    while k < len(windows):
        chunk = windows[k : k + bs]
        batch = np.stack(
            [padded[:, ys[i] : ys[i] + patch, xs[j] : xs[j] + patch] for i, j in chunk]
        )
        try:
            out = _forward(model, torch.from_numpy(batch), device, stats)
        except torch.OutOfMemoryError:
            if bs == 1:
                raise
            bs = max(1, bs // 2)
            torch.cuda.empty_cache()
            get_logger().info("CUDA out of memory: batch size halved to %d", bs)
            continue
        if out_channels is not None:
            out = out[:, list(out_channels)]
        for (i, j), o in zip(chunk, out, strict=True):
            weight = np.outer(wy[i], wx[j]).astype(np.float32)
            strip.add(o * weight, weight, ys[i] * s, xs[j] * s)
        stats["patches"] += len(chunk)
        k += len(chunk)
        # rows above the next window's row are final: windows go row by row
        if k < len(windows):
            flush(ys[windows[k][0]] * s)
    flush(hp * s)
    return result


class _Strip:
    """Running weighted sums of the output rows from ``base`` on (grows as windows need)."""

    def __init__(self, bands: int, height: int, width: int) -> None:
        self.base = 0
        self.acc = np.zeros((bands, height, width), dtype=np.float32)
        self.wsum = np.zeros((height, width), dtype=np.float32)

    def add(self, values: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        top, n = row - self.base, values.shape[1]
        if top + n > self.wsum.shape[0]:  # grow (a batch spanning several window rows)
            extra = top + n - self.wsum.shape[0]
            self.acc = np.concatenate(
                [self.acc, np.zeros((self.acc.shape[0], extra, self.acc.shape[2]), np.float32)],
                axis=1,
            )
            self.wsum = np.concatenate(
                [self.wsum, np.zeros((extra, self.wsum.shape[1]), np.float32)]
            )
        self.acc[:, top : top + n, col : col + values.shape[2]] += values
        self.wsum[top : top + n, col : col + values.shape[2]] += weight

    def take(self, upto: int) -> tuple[np.ndarray, int]:
        """The weighted means of rows ``base..upto`` (NaN where nothing was added); these
        rows leave the strip. Returns them and their first row."""
        n = max(0, min(upto - self.base, self.wsum.shape[0]))
        with np.errstate(invalid="ignore", divide="ignore"):
            block = self.acc[:, :n] / self.wsum[:n]
        row0 = self.base
        self.acc = np.concatenate([self.acc[:, n:], np.zeros_like(self.acc[:, :n])], axis=1)
        self.wsum = np.concatenate([self.wsum[n:], np.zeros_like(self.wsum[:n])])
        self.base += n
        return block, row0


def _forward(model, batch, device, stats: dict[str, Any]) -> np.ndarray:
    """One forward pass; batches that come out non-finite under fp16/bf16 are redone in fp32."""
    import torch

    with torch.inference_mode():
        out = model(batch.to(device))
        if getattr(model, "precision", "fp32") != "fp32" and not torch.isfinite(out).all():
            stats["redone"] = stats.get("redone", 0) + 1
            with _fp32(model):
                out = model(batch.to(device))
        return out.float().cpu().numpy()


class _fp32:
    """Context: the model's autocast CNNs run in float32 inside it."""

    def __init__(self, model) -> None:
        self.mods = [m for m in model.module.modules() if type(m).__name__ == "AmpCNN"]
        self.saved = [m.dtype for m in self.mods]

    def __enter__(self) -> None:
        for m in self.mods:
            m.dtype = None

    def __exit__(self, *exc: object) -> None:
        for m, d in zip(self.mods, self.saved, strict=True):
            m.dtype = d


# -- the cube ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CubeCheck:
    """What the stage needs to know about a cube, checked before anything is written."""

    mission: str
    epsg: int
    resolution: float
    bounds: tuple[float, float, float, float]
    phase: tuple[int, int]
    resampling: str | None = None
    notes: list[str] = field(default_factory=list)


def check_cube(
    record: dict[str, Any], variables: Iterable[str], v: Variant, name: str
) -> CubeCheck:
    """Refuse (one line) a cube the model cannot run on: not Sentinel-2, not 10 m, or without
    the model's bands.

    Args:
        record: the cube's request record.
        variables: the cube's variables.
        v: the model variant.
        name: the cube's name for messages.
    """
    from stac2cube.grid import Grid

    mission = str(record.get("mission"))
    if mission not in S2_MISSIONS:
        raise InvalidRequestError(
            f"super-resolution needs a Sentinel-2 cube; {name} is a {mission} cube"
        )
    grid = Grid.from_attrs(record["grid"])
    if abs(grid.resolution - 10.0) > 1e-9:
        raise InvalidRequestError(
            f"super-resolution needs a cube on a 10 m grid (the models' input); {name} has "
            f"{grid.resolution:g} m"
        )
    missing = [b for b in v.bands if b not in set(variables)]
    if missing:
        raise InvalidRequestError(
            f"the {v.name} model needs bands {' '.join(v.bands)}; {name} lacks "
            f"{' '.join(missing)} (build a cube with --bands {' '.join(v.bands)})"
        )
    # native 20 m pixel edges lie on multiples of 20 m (Sentinel-2 tile origins: of 60 m)
    phase = (round(grid.bounds[3] / 10.0) % 2, round(grid.bounds[0] / 10.0) % 2)
    return CubeCheck(
        mission,
        grid.epsg,
        grid.resolution,
        tuple(grid.bounds),  # type: ignore[arg-type]
        phase if v.needs_20m_phase else (0, 0),
        record.get("resampling"),
    )


def output_coords(x: np.ndarray, y: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of the grid nested ``scale`` x ``scale`` in the one of centres ``x``, ``y``
    (north-up: ``y`` decreasing)."""
    if scale == 1:
        return np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    res = float(abs(x[1] - x[0])) if len(x) > 1 else 10.0
    res_y = float(abs(y[1] - y[0])) if len(y) > 1 else res
    sub = (np.arange(scale) + 0.5) / scale - 0.5  # offsets of the sub-pixel centres
    xs = (np.asarray(x, dtype="float64")[:, None] + sub[None, :] * res).ravel()
    ys = (np.asarray(y, dtype="float64")[:, None] - sub[None, :] * res_y).ravel()
    return xs, ys


def _spatial_ref(check: CubeCheck, resolution: float) -> xr.DataArray:
    from stac2cube.dataset import spatial_ref
    from stac2cube.grid import Grid

    return spatial_ref(Grid(check.epsg, resolution, check.bounds))


def fingerprint(entry: dict[str, Any] | None, digest: str) -> str:
    """What a step's output depends on: its scenes (ids and processing stamps) and ``digest``
    (the weights' digest and the tiling settings)."""
    items = sorted(json.dumps(i, sort_keys=True) for i in (entry or {}).get("items", []))
    h = hashlib.sha256(json.dumps([digest, items]).encode()).hexdigest()
    return h[:24]


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    return {"sen2sr_version": version("sen2sr"), "torch_version": torch.__version__}


def group_attrs(model: LoadedModel, settings: SuperresSettings, check: CubeCheck) -> dict:
    v = model.variant
    return {
        "stac2cube:superres_model": "SEN2SRLite",
        "stac2cube:superres_variant": v.name,
        "stac2cube:superres_mlm_id": model.mlm_id or v.mlm_id,
        "stac2cube:superres_weights_sha256": model.digest,
        "stac2cube:superres_sen2sr_version": _versions()["sen2sr_version"],
        "stac2cube:superres_torch_version": _versions()["torch_version"],
        "stac2cube:superres_patch_size": model.patch,
        "stac2cube:superres_overlap": int(settings.overlap),
        "stac2cube:superres_scale": v.scale,
        "stac2cube:superres_resolution": check.resolution / v.scale,
        "stac2cube:superres_bands": " ".join(v.outputs),
        "stac2cube:superres_nodata_dilation": int(settings.nodata_dilation),
        SETTINGS_ATTR: json.dumps(settings.to_attrs()),
    }


def stored_settings(session) -> SuperresSettings | None:
    """The settings the cube's ``superres`` group was made with (None: no such group)."""
    import zarr

    try:
        attrs = zarr.open_group(session.store, path=GROUP, mode="r").attrs.asdict()
    except (FileNotFoundError, KeyError, ValueError):
        return None
    raw = attrs.get(SETTINGS_ATTR)
    return SuperresSettings.from_attrs(json.loads(raw)) if raw else None


def prepare(
    record: dict[str, Any],
    variables: Iterable[str],
    settings: SuperresSettings,
    name: str,
) -> tuple[LoadedModel, CubeCheck]:
    """Check the cube and the device, load the model: every error before anything is written."""
    v = variant(settings.model)
    check = check_cube(record, variables, v, name)
    device = resolve_device(settings.device)
    model = load_model(
        settings.model_dir,
        v.name,
        device=device,
        precision=resolve_precision(settings.precision, device),  # type: ignore[arg-type]
        patch=PATCH,
    )
    return model, check


def write_superres(
    session,
    cube: Cube,
    times: Iterable[str | pd.Timestamp] | None,
    settings: SuperresSettings,
    *,
    ledger: list[dict[str, Any]] | None = None,
    record: dict[str, Any] | None = None,
    prepared: tuple[LoadedModel, CubeCheck] | None = None,
) -> dict[str, Any]:
    """Bring the group ``superres`` of a writable session of ``cube`` up to date.

    Steps are computed when their time is in ``times`` (this run wrote or replaced them) or when
    their fingerprint (scenes, weights) differs from the one the group records: so a cube that
    gets the stage for the first time has every step computed, and a second run changes
    nothing. One step at a time is read, super-resolved and written (memory flat in the number
    of steps). Other steps are left as stored (appends) or copied from the session's parent
    snapshot when the time axis changed in the middle (inserted or removed steps).

    Args:
        session: writable icechunk session of the cube (the build's, or the flow's own).
        cube: the cube's handle (name, repository for the parent snapshot).
        times: times this run wrote or replaced (None: only what the fingerprints ask for).
        settings: model, device and tiling settings.
        ledger: the ledger the run commits (default: the cube's).
        record: the cube's request record (default: the cube's).
        prepared: a model and cube check from :func:`prepare` (made here otherwise).

    Returns:
        ``{"computed": n, "kept": n, "time_steps": n, "patches": n, "redone": n}``.

    Runs in this process with dask's threads, even under a Dask cluster: reading this run's
    uncommitted steps needs the writable session, which is not shipped to workers.
    """
    import dask

    with dask.config.set(scheduler="threads"):
        return _write_superres(session, cube, times, settings, ledger, record, prepared)


def _write_superres(session, cube, times, settings, ledger, record, prepared) -> dict[str, Any]:
    import zarr

    state = cube.state
    record = record if record is not None else (state.request if state else {})
    ledger = ledger if ledger is not None else cube.ledger
    ds = xr.open_zarr(session.store, consolidated=False, chunks={})
    model, check = prepared or prepare(record, ds.data_vars, settings, cube.name)
    v = model.variant
    all_times = pd.DatetimeIndex(ds.time.values) if "time" in ds.dims else pd.DatetimeIndex([])
    keys = [t.isoformat() for t in all_times]
    entries = {_naive(pd.Timestamp(e["time"])).isoformat(): e for e in ledger}
    # what a step's pixels depend on besides its scenes: the weights and the tiling settings
    depends = f"{model.digest}:{settings.overlap}:{settings.nodata_dilation}"
    prints = {k: fingerprint(entries.get(k), depends) for k in keys}
    forced = {_naive(pd.Timestamp(t)).isoformat() for t in (times or [])}

    stored = _stored_group(session, v, check)
    old_prints: dict[str, str] = json.loads(stored.attrs.get(STEPS_ATTR, "{}")) if stored else {}
    old_keys = [pd.Timestamp(t).isoformat() for t in stored.time.values] if stored else []
    todo = {k for k in keys if k in forced or old_prints.get(k) != prints[k]}
    log = get_logger()
    summary = {"computed": 0, "kept": len(keys) - len(todo), "time_steps": len(keys)}
    if not todo and old_keys == keys:
        log.info("super-resolution: all %d time steps are current", len(keys))
        return {**summary, "patches": 0, "redone": 0}

    xs, ys = output_coords(ds.x.values, ds.y.values, v.scale)
    copy_from = None
    if stored is None or old_keys != keys[: len(old_keys)]:
        if stored is not None:  # the time axis changed inside: rebuild, copying kept steps
            copy_from = _parent_group(cube, session)
        _create_group(session, v, all_times, xs, ys, check, model, settings)
        start_new = 0
    else:
        _append_times(session, v, all_times[len(old_keys) :])
        start_new = len(old_keys)
    group = zarr.open_group(session.store, path=GROUP, mode="r+")
    arrays = {b: group[b] for b in v.outputs}
    bs = settings.batch_size or default_batch_size(model.device, 6 if v.name == "full" else 1)
    stats: dict[str, Any] = {}
    for idx, key in enumerate(keys):
        if key not in todo:
            if idx >= start_new and copy_from is not None and key in old_keys:
                src = old_keys.index(key)
                for b in v.outputs:
                    arrays[b][idx] = copy_from[b][src]
            continue
        step = ds[list(v.bands)].isel(time=idx)
        data = np.stack([step[b].values for b in v.bands]).astype(np.float32)

        def write_rows(row0: int, block: np.ndarray, idx: int = idx) -> None:
            for k, b in enumerate(v.outputs):
                arrays[b][idx, row0 : row0 + block.shape[1], :] = encode(block[k])

        super_resolve(
            data,
            model,
            overlap=settings.overlap,
            batch_size=bs,
            phase=check.phase,
            nodata_dilation=settings.nodata_dilation,
            stats=stats,
            sink=write_rows,
        )
        summary["computed"] += 1
        log.info("super-resolution: %s done (%d of %d)", key, summary["computed"], len(todo))
    group.attrs.update(
        {
            **group_attrs(model, settings, check),
            STEPS_ATTR: json.dumps(prints),
            "stac2cube:time_steps": len(keys),
        }
    )
    return {**summary, **stats}


def _naive(t: pd.Timestamp) -> pd.Timestamp:
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t


def encode(values: np.ndarray) -> np.ndarray:
    """Reflectance -> stored integers (:data:`SUPERRES_ENCODING`), NaN -> the fill value."""
    enc = SUPERRES_ENCODING
    info = np.iinfo(enc["dtype"])
    scaled = np.round((values - enc["add_offset"]) / enc["scale_factor"])
    lo = enc["_FillValue"] + 1
    out = np.clip(np.nan_to_num(scaled, nan=enc["_FillValue"]), lo, info.max)
    out[~np.isfinite(values)] = enc["_FillValue"]
    return out.astype(enc["dtype"])


def _stored_group(session, v: Variant, check: CubeCheck) -> xr.Dataset | None:
    """The stored group when it was made by this variant on this grid; else None (rebuilt)."""
    try:
        stored = xr.open_zarr(session.store, group=GROUP, consolidated=False, chunks={})
    except (FileNotFoundError, KeyError, ValueError):
        return None
    if stored.attrs.get("stac2cube:superres_variant") != v.name or set(stored.data_vars) != set(
        v.outputs
    ):
        return None
    return stored


def _parent_group(cube: Cube, session):
    import zarr

    ro = cube.repository().readonly_session(snapshot_id=session.snapshot_id)
    return zarr.open_group(ro.store, path=GROUP, mode="r")


def _create_group(session, v, times, xs, ys, check, model, settings) -> None:
    """Write the group's skeleton: coordinates, encodings, attributes; no pixel chunks (fill)."""
    import dask.array as da

    shape = (len(times), len(ys), len(xs))
    chunks = (1, min(OUT_CHUNK, len(ys)), min(OUT_CHUNK, len(xs)))
    res = check.resolution / v.scale
    data = {
        b: (
            ("time", "y", "x"),
            da.zeros(shape, dtype="float32", chunks=chunks),
            {
                "long_name": f"{b} super-resolved to {res:g} m (SEN2SRLite {v.name})",
                "units": "1",
                "grid_mapping": "spatial_ref",
            },
        )
        for b in v.outputs
    }
    out = xr.Dataset(
        data,
        coords={
            "time": ("time", times.values),
            "y": ("y", ys, {"units": "m", "standard_name": "projection_y_coordinate"}),
            "x": ("x", xs, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "spatial_ref": _spatial_ref(check, res),
        },
        attrs=group_attrs(model, settings, check),
    )
    encoding = {b: {**SUPERRES_ENCODING, "chunks": chunks} for b in v.outputs}
    encoding["time"] = {"units": TIME_UNITS, "dtype": "int64", "chunks": (4096,)}
    import dask

    # the pixels are never computed (compute=False: only metadata and coordinates are written);
    # in this process, even under a distributed client (a writable session is not shipped)
    with dask.config.set(scheduler="synchronous"):
        out.to_zarr(
            session.store,
            group=GROUP,
            mode="w",
            consolidated=False,
            encoding=encoding,
            compute=False,
        )


def _append_times(session, v: Variant, new: pd.DatetimeIndex) -> None:
    """Grow the group along time by ``new`` (their pixels are written after, step by step)."""
    import zarr

    if not len(new):
        return
    group = zarr.open_group(session.store, path=GROUP, mode="r+")
    tarr = group["time"]
    units = tarr.attrs.get("units", TIME_UNITS)
    if units != TIME_UNITS:
        raise StoreError(f"the superres group's time units {units!r} are not {TIME_UNITS!r}")
    n0 = tarr.shape[0]
    tarr.resize((n0 + len(new),))
    tarr[n0:] = (new - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    for b in v.outputs:
        arr = group[b]
        arr.resize((n0 + len(new), *arr.shape[1:]))


def stored_settings_of(cube: Cube) -> SuperresSettings | None:
    """The settings of the cube's committed ``superres`` group (None: the cube has none)."""
    if not cube.exists:
        return None
    return stored_settings(cube.repository().readonly_session("main"))


def build_settings(params: dict[str, Any]) -> SuperresSettings | None:
    """The stage's settings a build or update run was asked for (``superres``,
    ``superres_model_dir``, ``superres_model``), checked before anything is searched: None
    when the switch is off (a cube that has the group still keeps it current, with the
    settings stored in it: :func:`run_settings`).

    Raises:
        InvalidRequestError: the switch without a model folder (given, or stored in the cube's
            group), a missing or incomplete folder, ``device="cuda"`` without a GPU.
    """
    from stac2cube.cube import Cube
    from stac2cube.superres_models import model_folder

    if not params.get("superres"):
        return None
    model_dir = params.get("superres_model_dir")
    stored = None
    store = params.get("store")
    if model_dir is None and store and not params.get("per_feature"):
        cube = Cube(store)
        stored = stored_settings_of(cube) if cube.exists else None
    if model_dir is None and stored is None:
        raise InvalidRequestError(
            "superres needs superres_model_dir (--superres-model-dir DIR: a folder with the "
            "SEN2SR weights, see the README, Super-resolution)"
        )
    settings = stored or SuperresSettings(
        model_dir=str(model_dir), model=params.get("superres_model") or "rgbn"
    )
    model_folder(settings.model_dir, settings.model)
    resolve_device(settings.device)
    return settings


def run_settings(session, asked: SuperresSettings | None) -> SuperresSettings | None:
    """The settings a build or update run writes the group with: those asked for, else those
    the cube's group was made with (None: the cube has no group and none was asked for)."""
    return asked if asked is not None else stored_settings(session)
