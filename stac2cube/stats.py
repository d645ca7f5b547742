"""Per-time-step statistics of a cube, kept as ``<cube>.stats.csv`` beside it.

One row per time step: ``time``, ``n_scenes``, ``item_ids``, ``valid_fraction`` and
``cloud_fraction`` (the cube's own per-step coordinates; see :mod:`stac2cube.scene_metadata`),
then ``<var>_mean`` and ``<var>_std`` of the valid pixels of every continuous variable (bands
and indices; classification and flag layers are skipped).

The file is updated incrementally: a run recomputes only the rows of the steps it wrote (and of
steps the file lacks) and drops rows of steps the cube no longer has, so a nightly update reads
only its new pixels.

Example:
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> ds = xr.Dataset({"B04": (("time", "y", "x"), np.array([[[0.1, np.nan], [0.3, 0.2]]]))},
    ...                 coords={"time": pd.to_datetime(["2024-01-05T10:30:21"])})
    >>> step_statistics(ds)[["time", "B04_mean"]].round(3).to_dict("records")
    [{'time': '2024-01-05T10:30:21', 'B04_mean': 0.2}]
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

if TYPE_CHECKING:
    from stac2cube.cube import Cube

STEP_COLUMNS = ("n_scenes", "item_ids", "valid_fraction", "cloud_fraction")


def continuous_variables(cube: xr.Dataset) -> list[str]:
    """Variables whose mean is meaningful: float values, not classes or flags."""
    out = []
    for name, var in cube.data_vars.items():
        if "time" not in var.dims or var.dtype.kind != "f":
            continue
        if "flag_values" in var.attrs or "flag_masks" in var.attrs or "nodata" in var.attrs:
            continue
        out.append(str(name))
    return out


def _iso(times: Iterable) -> list[str]:
    return [pd.Timestamp(t).isoformat() for t in times]


def _first_band(cube: xr.Dataset, names: list[str]) -> str:
    """The first requested band among ``names`` (the cube's request attribute), else the first."""
    request = cube.attrs.get("stac2cube:request")
    try:
        bands = json.loads(request)["bands"] if isinstance(request, str) else []
    except (ValueError, KeyError):
        bands = []
    return next((b for b in bands if b in names), names[0])


def step_statistics(cube: xr.Dataset) -> pd.DataFrame:
    """The statistics rows of every time step of ``cube`` (decoded; see the module docs).

    Cubes written before the per-step ``valid_fraction`` and ``cloud_fraction`` coordinates
    existed get ``valid_fraction`` computed here (share of the grid where the first requested
    continuous band has data) and ``cloud_fraction`` NaN.
    """
    names = continuous_variables(cube)
    frame = pd.DataFrame({"time": _iso(cube.time.values)})
    for column in STEP_COLUMNS:
        if column in cube.coords:
            frame[column] = np.asarray(cube[column].values)
        elif column == "cloud_fraction":
            frame[column] = np.full(len(frame), np.nan, "float32")
        elif column == "valid_fraction" and names:
            frame[column] = np.nan  # filled below, in the same pass as the means
    if names:
        values = cube[names].drop_vars(
            [c for c in cube.coords if c not in ("time", "y", "x")], errors="ignore"
        )
        parts = [
            values.mean(("y", "x"), skipna=True).rename({n: f"{n}_mean" for n in names}),
            values.std(("y", "x"), skipna=True).rename({n: f"{n}_std" for n in names}),
        ]
        if "valid_fraction" not in cube.coords:
            valid = values[_first_band(cube, names)].notnull().mean(("y", "x"))
            valid = valid.astype("float32")
            parts.append(valid.rename("valid_fraction").to_dataset())
        reduced = xr.merge(parts, compat="override").compute()
        if "valid_fraction" not in cube.coords:
            frame["valid_fraction"] = reduced["valid_fraction"].values
        for n in names:
            frame[f"{n}_mean"] = reduced[f"{n}_mean"].values
            frame[f"{n}_std"] = reduced[f"{n}_std"].values
    return frame


def write_statistics_csv(
    store: str | Path | Cube, csv_path: str | Path, *, times: Iterable[str] | None = None
) -> Path:
    """Write or update the statistics CSV of the cube at ``store``; returns its path.

    Args:
        store: the cube (its path, or the run's :class:`~stac2cube.cube.Cube`).
        csv_path: the CSV to write (``<cube>.stats.csv``).
        times: ISO times of the steps a run wrote; their rows are recomputed. None (or no
            existing CSV) computes every row.
    """
    from stac2cube.cube import as_cube

    cube = as_cube(store).open_dataset()
    csv_path = Path(csv_path)
    cube_times = _iso(cube.time.values)
    old = None
    if times is not None and csv_path.exists():
        old = pd.read_csv(csv_path, dtype={"time": str, "item_ids": str})
        fresh = {pd.Timestamp(t).isoformat() for t in times}
        old = old[old["time"].isin(set(cube_times)) & ~old["time"].isin(fresh)]
        todo = [t for t in cube_times if t not in set(old["time"])]
    else:
        todo = cube_times
    rows = step_statistics(cube.sel(time=pd.DatetimeIndex(todo))) if todo else None
    parts = [p for p in (old, rows) if p is not None and len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else step_statistics(cube.isel(time=[]))
    frame = frame.sort_values("time").reset_index(drop=True)
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(csv_path)
    return csv_path
