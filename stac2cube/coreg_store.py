"""Co-registration in a cube's store: per-step coordinates, applying shifts, one run, and the
stage inside a build or update run (no Prefect). See :mod:`stac2cube.coregistration`.

Example:
    >>> placeholder_coords(2)["coreg_status"][1].tolist()
    ['not run', 'not run']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stac2cube.coreg_shift import shift_array_step
from stac2cube.coregistration import (
    CLOUDS_GROUP,
    COORDS,
    DONE,
    NOT_RUN,
    OK,
    STRIP,
    CoregistrationError,
    CoregRun,
    CoregSettings,
    CubeReader,
    StepResult,
    _stored_image,
    cell_counts,
    check_cube,
    estimate_step,
    make_reference,
    stored_reference,
)

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
    """The pixel arrays of a group along time (dims ``(..., time, ..., y, x)``): ``(array,
    kind, fill, clip)`` each, ``clip`` in stored units (probabilities stay within 0..1)."""
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
        if "time" not in dims or dims[-2:] != ("y", "x") or len(dims) < 3:
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
        clip = None
        if name == "cloud_prob":  # a probability: 0..1 decoded
            scale = float(attrs.get("scale_factor", 1.0))
            offset = float(attrs.get("add_offset", 0.0))
            clip = ((0.0 - offset) / scale, (1.0 - offset) / scale)
        out.append((member, kind, fill, clip))
    return out


def _shift_layer(array, t: int, sx: float, sy: float, kind, fill, clip) -> None:
    """Shift step ``t`` of one array (every index of its other leading dims, e.g. the
    thresholds of a cloud mask)."""
    import itertools

    dims = tuple(array.metadata.dimension_names)
    lead = dims[:-2]
    ranges = [[t] if d == "time" else range(array.shape[k]) for k, d in enumerate(lead)]
    for index in itertools.product(*ranges):
        shift_array_step(array, index, sx, sy, kind=kind, fill=fill, strip=STRIP, clip=clip)


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
    """Shift every pixel layer of step ``t`` of the main group, and the step's layers of the
    cloud group, by ``(sx, sy)``. Returns the number of layers shifted."""
    n = 0
    for array, kind, fill, clip in _layers(session, None):
        _shift_layer(array, t, sx, sy, kind, fill, clip)
        n += 1
    clouds = _layers(session, CLOUDS_GROUP)
    if clouds:
        import xarray as xr

        times = xr.open_zarr(session.store, group=CLOUDS_GROUP, consolidated=False).time.values
        match = np.flatnonzero(pd.DatetimeIndex(times) == pd.Timestamp(time).tz_localize(None))
        for array, kind, fill, clip in clouds:
            if match.size:
                _shift_layer(array, int(match[0]), sx, sy, kind, fill, clip)
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
