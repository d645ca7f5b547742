"""Temporal composites: median, mean, min or max of every pixel over a period, with counts.

A spec is ``STAT:PERIOD``: STAT one of ``median mean min max``; PERIOD one of

* ``all`` — the cube's whole time range (one composite);
* ``month`` — calendar months (labelled by their first day);
* ``year`` — calendar years;
* ``season`` — meteorological seasons DJF, MAM, JJA, SON, labelled by their first day; December
  belongs to the *following* winter (December 2023 to February 2024 is the season 2023-12-01).

Composites are computed over the valid observations (NaN, i.e. nodata, clouds masked by
``mask_clouds``, pixels outside a clip polygon, are skipped) of every continuous variable
(bands and indices; classification and flag layers such as SCL are left out: a median of classes
means nothing). Each variable ``B04`` gets ``B04_<stat>`` per stat asked for and ``B04_count``,
the number of valid observations per pixel and period (``uint16``).

They live in the cube's store, in the group ``composites/<period>`` (dims ``period, y, x``;
coordinates ``period`` = period start, ``period_end`` = its last day, ``spatial_ref``), and are
recomputed from the whole cube by every build or update that writes to it, in the same commit,
so they always describe exactly the time steps the cube holds.

Example:
    >>> parse_composites(["median:month", "MAX:season", "mean"])
    ('median:month', 'max:season', 'mean:all')
    >>> season_start(pd.DatetimeIndex(["2024-01-15", "2024-03-01", "2023-12-31"])).strftime(
    ...     "%Y-%m-%d").tolist()
    ['2023-12-01', '2024-03-01', '2023-12-01']
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.stats import continuous_variables

STATS = ("median", "mean", "min", "max")
PERIODS = ("all", "month", "year", "season")
COMPOSITE_ENCODING = {"dtype": "float32", "_FillValue": np.float32(np.nan)}


def parse_composites(specs: Iterable[str]) -> tuple[str, ...]:
    """Canonical ``stat:period`` specs (a bare stat means ``stat:all``), without repeats.

    Raises:
        InvalidRequestError: an unknown stat or period.
    """
    out: list[str] = []
    for raw in specs:
        text = str(raw).strip().lower()
        stat, _, period = text.partition(":")
        period = period or "all"
        if stat not in STATS:
            raise InvalidRequestError(
                f"composite {raw!r}: unknown statistic {stat!r}; use one of {', '.join(STATS)}"
            )
        if period not in PERIODS:
            raise InvalidRequestError(
                f"composite {raw!r}: unknown period {period!r}; use one of {', '.join(PERIODS)}"
            )
        spec = f"{stat}:{period}"
        if spec not in out:
            out.append(spec)
    return tuple(out)


def season_start(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """First day of the meteorological season of each time (December opens the winter)."""
    month = times.month
    start_month = np.where(month == 12, 12, ((month // 3) * 3))
    start_month = np.where(month < 3, 12, start_month)
    year = np.where(month < 3, times.year - 1, times.year)
    return pd.DatetimeIndex(
        [pd.Timestamp(int(y), int(m), 1) for y, m in zip(year, start_month, strict=True)]
    )


def period_bounds(
    times: pd.DatetimeIndex, period: str
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """(period start, period end) for every time: the label each time step is grouped by."""
    if period == "all":
        first = times.min().normalize()
        last = times.max().normalize()
        return pd.DatetimeIndex([first] * len(times)), pd.DatetimeIndex([last] * len(times))
    if period == "month":
        start = times.to_period("M").start_time
        return start, start + pd.offsets.MonthEnd(0)
    if period == "year":
        start = times.to_period("Y").start_time
        return start, start + pd.offsets.YearEnd(0)
    if period == "season":
        start = season_start(times)
        return start, start + pd.offsets.MonthEnd(3)
    raise InvalidRequestError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")


def composite(cube: xr.Dataset, stat: str | Sequence[str], period: str) -> xr.Dataset:
    """Composites of ``cube`` (decoded) for one period kind: ``<var>_<stat>`` and ``<var>_count``.

    Args:
        cube: the decoded cube (:func:`stac2cube.store.open_cube`), NaN where there is no
            observation.
        stat: ``median``, ``mean``, ``min`` or ``max``, or several of them (computed together,
            sharing the period grouping and the counts).
        period: ``all``, ``month``, ``year`` or ``season``.

    Returns:
        Dims ``(period, y, x)``: ``<var>_<stat>`` (float32, NaN where a pixel has no valid
        observation in the period) and ``<var>_count`` (uint16) per continuous variable;
        coordinates ``period`` (start), ``period_end`` (last day), ``spatial_ref``. Lazy with a
        dask-backed cube (each period's time steps in one chunk along time); nothing is read.

    Raises:
        InvalidRequestError: unknown stat or period, or a cube without continuous variables.
        StoreError: a cube without time steps.
    """
    stats = [stat] if isinstance(stat, str) else list(stat)
    for s in stats:
        if s not in STATS:
            raise InvalidRequestError(f"unknown statistic {s!r}; use one of {', '.join(STATS)}")
    if period not in PERIODS:
        raise InvalidRequestError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    names = continuous_variables(cube)
    if not names:
        raise InvalidRequestError("the cube has no continuous variables to composite")
    if cube.sizes.get("time", 0) == 0:
        raise StoreError("the cube has no time steps to composite")
    times = pd.DatetimeIndex(cube.time.values)
    starts, ends = period_bounds(times, period)
    parts = []
    for label in pd.unique(starts):
        idx = np.flatnonzero(starts == label)
        sel = cube[names].isel(time=idx)
        if hasattr(sel[names[0]].data, "chunks"):
            sel = sel.chunk({"time": -1})
        out = {}
        for name in names:
            values = sel[name]
            for stat in stats:
                reduced = getattr(values, stat)("time", skipna=True)
                out[f"{name}_{stat}"] = reduced.astype("float32")
            out[f"{name}_count"] = values.notnull().sum("time").astype("uint16")
        part = xr.Dataset(out).expand_dims(period=[pd.Timestamp(label)])
        part = part.assign_coords(period_end=("period", [ends[idx[0]]]))
        parts.append(part)
    ds = xr.concat(parts, dim="period")
    for name in names:
        for stat in stats:
            ds[f"{name}_{stat}"].attrs.update(
                long_name=f"{stat} of {cube[name].attrs.get('long_name', name)} per {period}",
                units=cube[name].attrs.get("units", ""),
                grid_mapping="spatial_ref",
            )
        ds[f"{name}_count"].attrs.update(
            long_name=f"valid observations of {name} per {period}", grid_mapping="spatial_ref"
        )
    if "spatial_ref" in cube.coords:
        ds = ds.assign_coords(spatial_ref=cube.spatial_ref)
    ds.attrs.update(
        {
            "stac2cube:composite_period": period,
            "stac2cube:composite_stats": " ".join(stats),
            "stac2cube:time_steps": int(times.size),
            "stac2cube:time_range": f"{times.min().isoformat()}/{times.max().isoformat()}",
        }
    )
    return ds


def _by_period(specs: Sequence[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for spec in parse_composites(specs):
        stat, period = spec.split(":")
        grouped.setdefault(period, []).append(stat)
    return grouped


def write_composites(session, specs: Sequence[str]) -> list[str]:
    """(Re)write the composites of ``specs`` into a writable icechunk session of a cube.

    Reads the cube from the session itself (so this run's uncommitted time steps count) and
    replaces each group ``composites/<period>``. Returns the groups written.

    The composites are computed in this process with dask's threads, even under a Dask
    cluster: reading this run's uncommitted steps needs the writable session, which is not
    shipped to workers.
    """
    import dask

    cube = xr.open_zarr(session.store, consolidated=False, chunks={})
    if cube.sizes.get("time", 0) == 0:
        return []
    written = []
    with dask.config.set(scheduler="threads"):
        for period, stats in _by_period(specs).items():
            written.append(_write_period(session, cube, period, stats))
    return written


def _write_period(session, cube: xr.Dataset, period: str, stats: list[str]) -> str:
    """Replace the group ``composites/<period>`` with the composites of ``stats``."""
    ds = composite(cube, stats, period)
    encoding = {
        name: (
            {"dtype": "uint16", "chunks": (1, *_chunks(var))}
            if name.endswith("_count")
            else {**COMPOSITE_ENCODING, "chunks": (1, *_chunks(var))}
        )
        for name, var in ds.data_vars.items()
    }
    group = f"composites/{period}"
    with warnings.catch_warnings():  # pixels without observations are NaN, as documented
        warnings.filterwarnings("ignore", r"All-NaN|Mean of empty", RuntimeWarning)
        ds.to_zarr(session.store, group=group, mode="w", consolidated=False, encoding=encoding)
    return group


def _chunks(var: xr.DataArray) -> tuple[int, int]:
    return (min(512, var.sizes["y"]), min(512, var.sizes["x"]))


def open_composites(path: str | Path, period: str, *, snapshot: str | None = None) -> xr.Dataset:
    """The composites of one period kind of the cube at ``path`` (lazy, decoded).

    Example:
        >>> open_composites("munich.icechunk", "month").B04_median  # doctest: +SKIP
    """
    from stac2cube.store import open_repo, repo_exists

    if not repo_exists(path):
        raise StoreError(f"no cube at {path}")
    repo = open_repo(path)
    session = (
        repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session("main")
    )
    try:
        return xr.open_zarr(
            session.store, group=f"composites/{period}", consolidated=False, chunks={}
        )
    except (FileNotFoundError, KeyError) as exc:
        raise StoreError(
            f"cube {path} has no {period} composites (build it with composites=['median:{period}'])"
        ) from exc
