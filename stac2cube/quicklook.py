"""Quicklooks of a cube: true-colour frames, a time-lapse GIF, a PNG grid.

Colours per cube: Sentinel-2 ``B04 B03 B02``, Landsat ``red green blue`` (true colour);
Sentinel-1 ``vv``, ``vh`` and their ratio ``vv/vh`` in dB as red, green, blue (the usual
dual-pol false colour; ``hh hv hh/hv`` likewise; linear gamma0 cubes are shown in dB too);
otherwise the first continuous variable in grey (the DEM's elevation). Each channel is stretched
linearly between its 2nd and 98th percentile over the *whole series* (sampled), so frames are
comparable through time; a pixel where any channel is nodata is black in the GIF and
:func:`quicklook_rgb`, transparent in PNGs.

Example:
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({n: (("time", "y", "x"), np.random.default_rng(0).random((2, 4, 4)))
    ...                  for n in ("B04", "B03", "B02")})
    >>> rgb_bands(ds)
    ['B04', 'B03', 'B02']
    >>> rgba_frame(ds, 0, rgb_bands(ds), channel_limits(ds, rgb_bands(ds))).shape
    (4, 4, 4)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from stac2cube.errors import InvalidRequestError

if TYPE_CHECKING:
    from stac2cube.cube import Cube

TRUE_COLOUR = (("B04", "B03", "B02"), ("red", "green", "blue"))
SAR_FALSE_COLOUR = (("vv", "vh"), ("hh", "hv"))


def rgb_bands(ds: xr.Dataset) -> list[str]:
    """The channels shown as red, green, blue (one name: grey; see the module docs).

    A channel is a variable name, or ``co/cross`` for the ratio of two SAR polarisations.

    Raises:
        InvalidRequestError: ``ds`` holds none of the bands a quicklook can show.
    """
    for names in TRUE_COLOUR:
        if all(n in ds.data_vars for n in names):
            return list(names)
    for co, cross in SAR_FALSE_COLOUR:
        if co in ds.data_vars and cross in ds.data_vars:
            return [co, cross, f"{co}/{cross}"]
    from stac2cube.stats import continuous_variables

    names = continuous_variables(ds)
    if not names:
        raise InvalidRequestError(
            "the cube has no band a quicklook can show (true colour needs B04 B03 B02 or "
            "red green blue, SAR false colour vv vh or hh hv; otherwise a continuous band); "
            f"it holds {', '.join(map(str, ds.data_vars)) or 'no variables'}"
        )
    return names[:1]


def source_variables(names: Sequence[str]) -> list[str]:
    """The cube variables the channels ``names`` are computed from."""
    return list(dict.fromkeys(v for n in names for v in n.split("/")))


_POLARISATIONS = {p for pair in SAR_FALSE_COLOUR for p in pair}


def _in_db(var: xr.DataArray) -> xr.DataArray:
    """SAR backscatter in dB: the cube's default; linear gamma0 (``units = "1"``) is converted."""
    if var.attrs.get("units") != "1":
        return var
    return 10.0 * np.log10(var.where(var > 0))


def _channel(ds: xr.Dataset, name: str) -> xr.DataArray:
    if "/" in name:  # polarisation ratio: a difference in dB
        co, cross = name.split("/")
        return _in_db(ds[co]) - _in_db(ds[cross])
    if name in _POLARISATIONS:
        return _in_db(ds[name])
    return ds[name]


def subsample(ds: xr.Dataset, size: int) -> xr.Dataset:
    """Every n-th pixel, so that the longer side has at most ``size`` pixels."""
    step = max(1, -(-max(ds.sizes["y"], ds.sizes["x"]) // size))
    return ds.isel(y=slice(None, None, step), x=slice(None, None, step))


def channel_limits(
    ds: xr.Dataset, names: Sequence[str], *, sample_steps: int = 24
) -> list[tuple[float, float]]:
    """2nd and 98th percentile of each channel over (up to ``sample_steps``) time steps."""
    idx = np.unique(np.linspace(0, ds.sizes["time"] - 1, min(sample_steps, ds.sizes["time"])))
    sample = ds.isel(time=idx.astype(int))
    limits = []
    for name in names:
        values = np.asarray(_channel(sample, name).values, "float64")
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
        limits.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return limits


def rgba_frame(
    ds: xr.Dataset, t: int, names: Sequence[str], limits: Sequence[tuple[float, float]]
) -> np.ndarray:
    """``(y, x, 4)`` uint8 RGBA of time step ``t``: stretched channels, alpha 0 where nodata."""
    layers = [np.asarray(_channel(ds.isel(time=t), n).values, "float64") for n in names]
    valid = np.logical_and.reduce([np.isfinite(a) for a in layers])
    channels = []
    for a, (lo, hi) in zip(layers, limits, strict=True):
        scaled = np.clip((a - lo) / (hi - lo), 0, 1)
        channels.append(np.where(valid, np.round(scaled * 255), 0).astype("uint8"))
    if len(channels) == 1:
        channels = channels * 3
    return np.dstack([*channels, np.where(valid, 255, 0).astype("uint8")])


def quicklook_rgb(
    cube: xr.Dataset,
    time_index: int,
    *,
    limits: Sequence[tuple[float, float]] | None = None,
) -> np.ndarray:
    """``(y, x, 3)`` uint8 picture of time step ``time_index`` (colours: see the module docs).

    Args:
        cube: the decoded cube (or a subsampled part of it, :func:`subsample`).
        time_index: position along ``time`` (negative counts from the end).
        limits: ``(low, high)`` stretch per channel; default: 2nd-98th percentile over the
            whole series (:func:`channel_limits`), so frames of one cube are comparable.

    Returns:
        The stretched channels; black where any channel is nodata.

    Raises:
        InvalidRequestError: the cube holds none of the bands a quicklook can show.
    """
    names = rgb_bands(cube)
    ds = cube[source_variables(names)]
    if limits is None:
        limits = channel_limits(ds, names)
    frame = ds.isel(time=[time_index]).load()
    return rgba_frame(frame, 0, names, limits)[..., :3]


def png_bytes(rgba: np.ndarray) -> bytes:
    """PNG of an RGBA array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _frames(ds: xr.Dataset, max_frames: int) -> list[int]:
    n = ds.sizes["time"]
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, max_frames))}) if n else []


def write_quicklooks(
    store: str | Path | Cube,
    out: str | Path,
    *,
    fmt: str = "gif",
    max_frames: int = 60,
    size: int = 512,
    seconds_per_frame: float = 0.5,
) -> Path:
    """Write a time-lapse GIF (``fmt="gif"``) or a PNG grid (``"png"``) of the cube at ``store``.

    GIF frames carry their date top left (frames too small for it, under about 94 x 60
    pixels, go without); PNG grid panels have it as their title.

    Args:
        store: the cube (its path, or the run's :class:`~stac2cube.cube.Cube`).
        out: the file to write.
        fmt: ``gif`` or ``png``.
        max_frames: at most this many time steps, evenly spread over the series.
        size: longest side of a frame in pixels (the cube is subsampled to it).
        seconds_per_frame: GIF frame duration.

    Returns:
        ``out``.
    """
    from stac2cube.cube import as_cube

    if fmt not in ("gif", "png"):
        raise InvalidRequestError(f"quicklook format must be gif or png, got {fmt!r}")
    handle = as_cube(store)
    cube = handle.open_dataset()
    if cube.sizes.get("time", 0) == 0:
        raise InvalidRequestError(f"cube {handle.name} has no time steps to show")
    names = rgb_bands(cube)
    small = subsample(cube[source_variables(names)], size)
    small = small.isel(time=_frames(small, max_frames)).load()
    limits = channel_limits(small, names)
    labels = [pd.Timestamp(t).strftime("%Y-%m-%d") for t in small.time.values]
    frames = [rgba_frame(small, k, names, limits) for k in range(small.sizes["time"])]
    out = Path(out)
    if fmt == "gif":
        _write_gif(frames, labels, out, seconds_per_frame)
    else:
        _write_grid(frames, labels, out, title=f"{Path(handle.name).name}: {' '.join(names)}")
    return out


def _write_gif(frames: list[np.ndarray], labels: list[str], out: Path, seconds: float) -> None:
    from PIL import Image, ImageDraw

    images = []
    for rgba, label in zip(frames, labels, strict=True):
        image = Image.fromarray(rgba[..., :3], mode="RGB")
        width = 8 + 7 * len(label)  # the default bitmap font: ~6 px a character
        if image.width >= width + 16 and image.height >= 4 * 15:  # too small: no label
            draw = ImageDraw.Draw(image)
            draw.rectangle((0, 0, width, 14), fill=(0, 0, 0))
            draw.text((4, 2), label, fill=(255, 255, 255))
        images.append(image)
    # Pillow merges a frame identical to the previous one into it (adding its duration)
    images[0].save(
        out, save_all=True, append_images=images[1:], duration=int(seconds * 1000), loop=0
    )


def _write_grid(frames: list[np.ndarray], labels: list[str], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(frames)
    cols = min(n, 6)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, rgba, label in zip(axes.ravel(), frames, labels, strict=False):
        ax.imshow(rgba)
        ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
