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
kept current by every build or update that writes to the cube, in the same commit, so they
always describe exactly the time steps the cube holds. An update recomputes only the periods it
touched (those of the steps it added or replaced), from those periods' steps alone, and writes
only their chunks; the other periods' stored values are left as they are. So an update's cost
follows the periods it touched, not the cube's length, with these exceptions:

* ``all``: after additions only, ``mean``, ``min``, ``max`` and the counts are combined from
  the stored composite and the new steps (mean to float32 precision); ``median``, or any
  replaced step, needs every step: the ``all`` group is then recomputed from the whole cube.
* a year (or season) is recomputed from all its steps, so its cost grows within the year.
* a new period among or before the stored ones, a period left without steps, or stats or
  variables the stored group lacks: that period kind is recomputed from the whole cube.

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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.stats import continuous_variables

if TYPE_CHECKING:
    from stac2cube.cube import Cube

STATS = ("median", "mean", "min", "max")
PERIODS = ("all", "month", "year", "season")
COMPOSITE_ENCODING = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
TIME_STEPS_ATTR = "stac2cube:time_steps"
#: stats that combine from a stored composite and new steps alone (median needs every step)
COMBINABLE = ("mean", "min", "max")


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
            **time_attrs(times),
        }
    )
    return ds


def time_attrs(times: pd.DatetimeIndex) -> dict[str, object]:
    """The attributes of a composites group that name the time steps it describes."""
    return {
        TIME_STEPS_ATTR: int(times.size),
        "stac2cube:time_range": f"{times.min().isoformat()}/{times.max().isoformat()}",
    }


def _by_period(specs: Sequence[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for spec in parse_composites(specs):
        stat, period = spec.split(":")
        grouped.setdefault(period, []).append(stat)
    return grouped


def write_composites(
    session, specs: Sequence[str], touched: Iterable[str | pd.Timestamp] | None = None
) -> list[str]:
    """Bring the composites of ``specs`` in a writable icechunk session of a cube up to date.

    Reads the cube from the session itself (so this run's uncommitted time steps count).

    Args:
        session: writable icechunk session of the cube.
        specs: ``stat:period`` specs.
        touched: times of the steps this run added, replaced or removed (both the new and the
            old time of a replaced step). Only their periods are recomputed and written (see the
            module's notes for what needs more). None recomputes and replaces every group.

    Returns:
        The groups written.

    The composites are computed in this process with dask's threads, even under a Dask
    cluster: reading this run's uncommitted steps needs the writable session, which is not
    shipped to workers.
    """
    import dask

    cube = xr.open_zarr(session.store, consolidated=False, chunks={})
    if cube.sizes.get("time", 0) == 0:
        return []
    changed = None if touched is None else as_times(touched)
    written = []
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        # pixels without observations are NaN, as documented
        warnings.filterwarnings("ignore", r"All-NaN|Mean of empty|invalid value", RuntimeWarning)
        for period, stats in _by_period(specs).items():
            written.append(_write_period(session, cube, period, stats, changed))
    return written


def as_times(values: Iterable[str | pd.Timestamp]) -> pd.DatetimeIndex:
    """Times as the cube's time axis holds them (UTC, without a time zone), sorted, unique."""
    times = pd.DatetimeIndex([pd.Timestamp(v) for v in values])
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    return times.unique().sort_values()


def _write_period(
    session, cube: xr.Dataset, period: str, stats: list[str], touched: pd.DatetimeIndex | None
) -> str:
    """Update the group ``composites/<period>``: only the touched periods where it can."""
    group = f"composites/{period}"
    stored = None if touched is None else _stored(session, cube, group, stats)
    update = None
    if stored is not None:
        plan = _all_update if period == "all" else _period_update
        update = plan(cube, stored, period, stats, touched)
    if update is None:
        ds = composite(cube, stats, period)
        encoding = {
            name: (
                {"dtype": "uint16", "chunks": (1, *_chunks(var))}
                if name.endswith("_count")
                else {**COMPOSITE_ENCODING, "chunks": (1, *_chunks(var))}
            )
            for name, var in ds.data_vars.items()
        }
        ds.to_zarr(session.store, group=group, mode="w", consolidated=False, encoding=encoding)
        return group
    for part, where in update:
        part = part.drop_vars([n for n in part.variables if "period" not in part[n].dims])
        chunks = dict(zip(("period", "y", "x"), (1, *_chunks(part)), strict=True))
        part = part.assign({n: v.chunk(chunks) for n, v in part.data_vars.items()})
        part.attrs = {}
        part.to_zarr(session.store, group=group, consolidated=False, **where)
    import zarr

    times = pd.DatetimeIndex(cube.time.values)
    zarr.open_group(session.store, path=group, mode="r+").attrs.update(time_attrs(times))
    return group


def _stored(session, cube: xr.Dataset, group: str, stats: list[str]) -> xr.Dataset | None:
    """The stored group, lazy, if it holds exactly the variables of ``stats``; else None."""
    try:
        stored = xr.open_zarr(session.store, group=group, consolidated=False, chunks={})
    except (FileNotFoundError, KeyError):
        return None
    names = continuous_variables(cube)
    want = {f"{n}_{s}" for n in names for s in stats} | {f"{n}_count" for n in names}
    return stored if set(stored.data_vars) == want else None


Update = list[tuple[xr.Dataset, dict]]


def _period_update(
    cube: xr.Dataset, stored: xr.Dataset, period: str, stats: list[str], touched: pd.DatetimeIndex
) -> Update | None:
    """The touched periods, each written in its place or appended; None: rewrite the group."""
    starts, _ = period_bounds(pd.DatetimeIndex(cube.time.values), period)
    labels = pd.DatetimeIndex(pd.unique(period_bounds(touched, period)[0]))
    have = pd.DatetimeIndex(stored.period.values)
    new = labels.difference(have)
    if not labels.isin(starts).all() or (new.size and new.min() < have.max()):
        return None  # a period left without steps, or a new one among the stored ones
    ds = composite(cube.isel(time=np.flatnonzero(starts.isin(labels))), stats, period)
    update: Update = [
        (ds.sel(period=[label]), {"region": {"period": slice(k, k + 1)}})
        for k, label in enumerate(have)
        if label in labels
    ]
    if new.size:
        update.append((ds.sel(period=new), {"append_dim": "period"}))
    return update


def _all_update(
    cube: xr.Dataset, stored: xr.Dataset, period: str, stats: list[str], touched: pd.DatetimeIndex
) -> Update | None:
    """The ``all`` composite combined from the stored one and the added steps; None when a
    stat needs every step or a step was replaced or removed."""
    times = pd.DatetimeIndex(cube.time.values)
    added = times.isin(touched)
    if (
        not set(stats) <= set(COMBINABLE)
        or int(added.sum()) != touched.size
        or stored.attrs.get(TIME_STEPS_ATTR) != times.size - touched.size
    ):
        return None
    new = composite(cube.isel(time=np.flatnonzero(added)), stats, period)
    out = {}
    for name in continuous_variables(cube):
        n_old = stored[f"{name}_count"].astype("float64").data
        n_new = new[f"{name}_count"].astype("float64").data
        n = n_old + n_new
        out[f"{name}_count"] = (("period", "y", "x"), n.astype("uint16"))
        for stat in stats:
            old = stored[f"{name}_{stat}"].astype("float64").data
            add = new[f"{name}_{stat}"].astype("float64").data
            if stat == "mean":
                total = np.nan_to_num(old) * n_old + np.nan_to_num(add) * n_new
                value = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
            else:
                value = (np.fmin if stat == "min" else np.fmax)(old, add)
            out[f"{name}_{stat}"] = (("period", "y", "x"), value.astype("float32"))
    ds = xr.Dataset(out, coords={"period": [times.min().normalize()]})
    ds = ds.assign_coords(period_end=("period", [times.max().normalize()]))
    # a region write leaves index coordinates alone: without its index the new label is written
    return [(ds.drop_indexes("period"), {"region": {"period": slice(0, 1)}})]


def _chunks(var: xr.DataArray | xr.Dataset) -> tuple[int, int]:
    return (min(512, var.sizes["y"]), min(512, var.sizes["x"]))


def open_composites(
    path: str | Path | Cube, period: str, *, snapshot: str | None = None
) -> xr.Dataset:
    """The composites of one period kind of the cube at ``path`` (lazy, decoded): its group
    ``composites/<period>`` (:meth:`Cube.open_dataset <stac2cube.cube.Cube.open_dataset>`).

    Example:
        >>> open_composites("munich.icechunk", "month").B04_median  # doctest: +SKIP
    """
    from stac2cube.cube import GroupNotFoundError, as_cube

    cube = as_cube(path)
    try:
        return cube.open_dataset(group=f"composites/{period}", snapshot=snapshot)
    except GroupNotFoundError as exc:
        raise StoreError(
            f"cube {cube.name} has no {period} composites (build it with composites=['median:{period}'])"
        ) from exc
