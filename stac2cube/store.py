"""The cube store: an icechunk repository (Zarr v3) holding one cube, its request and ledger.

Layout of the root group:

* one variable a band, dims ``(time, y, x)``, chunks ``(1, 512, 512)``: one chunk per time
  step keeps appends proportional to the scenes added; 512 x 512 keeps a small window's time
  series to one modest chunk per step. Reflectance is stored as ``uint16`` with CF
  ``scale_factor=1e-4``, ``add_offset=-0.1`` and ``_FillValue=0`` (lossless for every
  Sentinel-2 DN, negative reflectance down to -0.0999 included); xarray decodes it to float
  with NaN for nodata. Classification bands (SCL) are ``uint8`` classes, 0 = nodata.
* per-time-step coordinates ``n_scenes``, ``item_ids``, ``radiometry_rule``,
  ``processing_baseline``; the ``spatial_ref`` grid-mapping coordinate.
* attributes ``stac2cube:request`` (what was asked, so ``update`` needs only the path),
  ``stac2cube:ledger`` (per time step: item ids, datetimes, baselines, radiometry applied, the
  pixel options it was processed with) and ``stac2cube:version``.

The grid and the pixel options are the cube's identity (:func:`check_compatible`); appends write
only the variables along time (:data:`APPEND`).

Every run writes inside one icechunk session and commits once: a run that dies leaves the cube at
its previous commit. The store's lifecycle (lock, staging of a first build, session, commit,
state, groups) is the :class:`~stac2cube.cube.Cube` handle's; the path functions here
(:func:`read_state`, :func:`open_cube`, :func:`store_lock`, ...) are one-off wrappers of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from stac2cube.encoding import S2_REFLECTANCE_ENCODING as REFLECTANCE_ENCODING
from stac2cube.errors import GridMismatchError, StoreError
from stac2cube.grid import TOLERANCE, Grid
from stac2cube.radiometry import ProcessingOptions
from stac2cube.spec import DEFAULT_BATCH_SIZE

CHUNK = 512
REQUEST_ATTR = "stac2cube:request"
LEDGER_ATTR = "stac2cube:ledger"
VERSION_ATTR = "stac2cube:version"
#: chunk length of the per-time-step coordinates (time, item_ids, n_scenes, ...)
STEP_CHUNK = 4096
#: decoded bytes one cluster computation may bring back to the flow process
COMPUTE_BYTES = 256 * 2**20
_ENCODING_KEYS = ("dtype", "scale_factor", "add_offset", "_FillValue")
TIME_ENCODING = {"units": "seconds since 1970-01-01", "dtype": "int64"}
#: ``to_zarr`` arguments of an append: only variables along time are written (never ``x``,
#: ``y``, ``spatial_ref``: they are the cube's grid, written once)
APPEND = {"mode": "a-", "append_dim": "time"}

#: Stored chunks one batch may write at most (:func:`steps_per_batch`): keeps the dask graph of
#: a batch (a few tasks per chunk) to a few tens of MB on large grids.
BATCH_CHUNKS = 8192


def steps_per_batch(batch_size: int, shape: tuple[int, int], variables: int) -> int:
    """Time steps of one batch: ``batch_size``, fewer where that many steps of ``variables``
    pixel variables on a grid of ``shape`` (rows, columns) would exceed :data:`BATCH_CHUNKS`
    stored chunks; at least one.

    Memory does not depend on it (the write streams chunk by chunk); each batch has a fixed
    cost (a load, a preprocess and a write task, one dask computation), so fewer is faster.

    Example:
        >>> steps_per_batch(32, (1020, 1020), 4)  # 16 chunks a step
        32
        >>> steps_per_batch(32, (10980, 10980), 4)  # a full Sentinel-2 tile: 1936 chunks a step
        4
    """
    rows, cols = shape
    per_step = max(1, variables) * -(-rows // CHUNK) * -(-cols // CHUNK)
    return max(1, min(batch_size, BATCH_CHUNKS // per_step))


def _quiet_icechunk() -> None:
    import icechunk

    # the local-filesystem "not safe for concurrent commits" notice: we lock ourselves
    icechunk.set_logs_filter("error")


def check_store_path(path: str | Path, *, name: str | None = None) -> Path:
    """``path`` as a Path, refused when it is, or lies under, a regular file.

    (icechunk panics on such a path instead of raising an error.) ``name`` is how messages
    call the store (default: ``path``).
    """
    p = Path(path)
    for here in (p, *p.absolute().parents):
        if here.is_dir():
            return p
        if here.exists():
            what = "is a file" if here == p else f"lies under {here}, a file"
            raise StoreError(f"{name or path} {what}, not a cube store; choose another --store")
    return p


def repo_exists(path: str | Path) -> bool:
    """True when ``path`` holds an icechunk repository."""
    return _cube(path).exists


def open_repo(path: str | Path, *, create: bool = False):
    """The icechunk repository at ``path``; create it when ``create`` and it does not exist."""
    return _cube(path).repository(create=create)


def _cube(path: str | Path):
    """A :class:`~stac2cube.cube.Cube` handle of ``path`` (the functions here wrap it)."""
    from stac2cube.cube import Cube

    return Cube(path)


@dataclass(frozen=True)
class CubeState:
    """What an existing cube says about itself."""

    request: dict[str, Any]
    ledger: list[dict[str, Any]]
    version: str

    @property
    def grid(self) -> Grid:
        return Grid.from_attrs(self.request["grid"])

    @property
    def item_ids(self) -> set[str]:
        return {i["id"] for step in self.ledger for i in step["items"]}

    @property
    def times(self) -> list[str]:
        return [step["time"] for step in self.ledger]


def read_state(path: str | Path, snapshot: str | None = None) -> CubeState | None:
    """The :class:`CubeState` of the cube at ``path``, or None when there is none yet.

    (A one-off read: a run keeps its :class:`~stac2cube.cube.Cube` and reads it once.)
    """
    return _cube(path).read_state(snapshot)


def processing_record(request: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a request record that change pixel values, as each ledger entry keeps them.

    A key missing from the record (a cube made before it was recorded) takes the default it had
    then: ``nearest`` resampling, no clipping, the default :class:`ProcessingOptions`.
    """
    return {
        "resampling": request.get("resampling") or "nearest",
        "clip": bool(request.get("clip", False)),
        **ProcessingOptions.from_record(request.get("options")).describe(),
    }


def _json(value: Any) -> Any:
    """``value`` as it reads back from the stored JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def check_compatible(state: CubeState, request: dict[str, Any]) -> None:
    """Raise :class:`GridMismatchError` naming every way ``request`` differs from the cube.

    Fixed at creation: the grid (CRS, resolution, exact bounds), the options that change pixel
    values (:func:`processing_record`, and the clip polygon), and the bands, indices, tile mode,
    mission and collection, which decide the cube's variables and steps.
    """
    problems = []
    grid = Grid.from_attrs(request["grid"])
    if found := state.grid.differences(grid):
        problems.append(
            f"grid {grid.describe()} != cube's {state.grid.describe()} ({', '.join(found)})"
        )
    for key in ("mission", "collection"):
        if state.request.get(key) != request.get(key):
            problems.append(f"{key} {request.get(key)!r} != cube's {state.request.get(key)!r}")
    if list(state.request.get("bands", [])) != list(request.get("bands", [])):
        problems.append(f"bands {request.get('bands')} != cube's {state.request.get('bands')}")
    for key, default in (("indices", []), ("tile_mode", "mosaic")):  # the variables and steps
        have, want = state.request.get(key, default), request.get(key, default)
        if have != want:
            problems.append(f"{key} {want!r} != cube's {have!r}")
    have, want = processing_record(state.request), processing_record(_json(request))
    problems += [f"{k} {want[k]!r} != cube's {have[k]!r}" for k in have if have[k] != want[k]]
    if have["clip"] and want["clip"] and state.request.get("aoi") != _json(request.get("aoi")):
        problems.append("clip polygon (aoi) differs from the cube's")
    if problems:
        raise GridMismatchError(
            "request does not match the existing cube: "
            + "; ".join(problems)
            + " (the cube is left unchanged; `stac2cube update STORE` extends it with its own "
            "settings, another --store makes a different cube)"
        )


def encode_for_store(ds: xr.Dataset, chunk: int = CHUNK) -> dict[str, dict[str, Any]]:
    """Zarr encodings of the cube's variables (first write only; appends reuse them)."""
    # per-step coordinates: long chunks, else they keep the first build's length (often 1)
    # and every append adds a chunk (and manifest entries) per coordinate
    enc: dict[str, dict[str, Any]] = {"time": {**TIME_ENCODING, "chunks": (STEP_CHUNK,)}}
    for name, coord in ds.coords.items():
        if coord.dims == ("time",) and name != "time":
            enc[name] = {"chunks": (STEP_CHUNK,)}
    for name, var in ds.data_vars.items():
        chunks = (1, min(chunk, var.sizes["y"]), min(chunk, var.sizes["x"]))
        own = {k: v for k, v in var.encoding.items() if k in _ENCODING_KEYS}
        if own:  # set by preprocess per variable kind (Landsat, S1 dB, DEM, masks)
            enc[name] = {**own, "chunks": chunks}
        elif var.dtype.kind == "f":
            enc[name] = {**REFLECTANCE_ENCODING, "chunks": chunks}
        else:
            enc[name] = {"dtype": str(var.dtype), "chunks": chunks}
    return enc


def _pixel_chunks(ds: xr.Dataset) -> xr.Dataset:
    """Chunk the pixel variables like the store.

    Per-step coordinates computed from the pixels (``valid_fraction``, ``cloud_fraction``) stay
    lazy, in one dask chunk: several dask chunks would write one stored chunk (``STEP_CHUNK``
    steps long) at once, which xarray refuses.
    """
    steps = {
        name: coord.variable.chunk({"time": -1})
        for name, coord in ds.coords.items()
        if coord.dims == ("time",) and name != "time" and coord.chunks is not None
    }
    pixels = {  # Variables, not DataArrays: chunking a DataArray would chunk its coordinates
        name: var.variable.chunk({"time": 1, "y": CHUNK, "x": CHUNK})
        for name, var in ds.data_vars.items()
        if var.chunks is not None  # values in memory are written as they are
    }
    return ds.assign(pixels).assign_coords(steps)


def _distributed_client():
    """The current ``distributed.Client`` (the flow's cluster inside :func:`pixel_client`), or
    None with dask's local scheduler."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _distributed_client_active() -> bool:
    return _distributed_client() is not None


@contextmanager
def forked(session) -> Iterator[Any]:
    """A fork of the run's (clean) writable ``session`` for the pixel writes, merged back into
    ``session`` when the block ends without error.

    Dask workers, in this process or in others (a ``LocalCluster`` of processes, SLURM jobs),
    write the chunks they compute through copies of the fork; only the copies' change sets
    (metadata) come back, and they are merged into the fork after each write. The run still
    commits ``session`` once. A session that already has changes cannot fork: it is yielded
    itself, and :func:`_put` then computes on a cluster and writes from this process.

    Every stored chunk must be written by workers at most once in a fork (a copy made before
    a chunk's first write carries no entry for it; a copy made after would carry the old one):
    :func:`_put` writes the lazy per-step coordinates (one chunk holds thousands of steps) from
    this process.
    """
    if session.has_uncommitted_changes or session.read_only:
        yield session
        return
    fork = session.fork()
    yield fork
    session.merge(fork)


def _is_fork(target) -> bool:
    from icechunk.session import ForkSession

    return isinstance(target, ForkSession)


def _lazy_step_coords(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """Per-step coordinates computed from the pixels (dask-backed, e.g. ``valid_fraction``)."""
    return {
        str(name): coord
        for name, coord in ds.coords.items()
        if name not in ds.dims and coord.chunks is not None
    }


_CF_KEYS = ("scale_factor", "add_offset", "_FillValue")


def as_decoded(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its variables that hold stored integers already (CF attributes set, see
    :func:`stac2cube.dataset.build_dataset`) turned into decoded float64 values, lazily.

    Writes into existing arrays (appends, regions) and concatenations with a decoded cube need
    them: xarray encodes with the store's encoding there. The round trip is exact: the stored
    integers come back from ``round((value - add_offset) / scale_factor)``.
    """
    out = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind not in "iu" or "scale_factor" not in var.attrs:
            continue
        cf = {k: var.attrs[k] for k in _CF_KEYS if k in var.attrs}
        values = var.variable.astype("float64")
        if "_FillValue" in cf:
            values = values.where(var.variable != cf["_FillValue"])
        values = values * float(cf["scale_factor"]) + float(cf.get("add_offset", 0.0))
        values.attrs = {k: v for k, v in var.attrs.items() if k not in cf}
        values.encoding = {**var.encoding, **cf, "dtype": str(var.dtype)}
        out[name] = values
    return ds.assign(out) if out else ds


def stored_bytes(ds: xr.Dataset) -> int:
    """Bytes of the pixel variables of ``ds`` as stored (encoded dtype, uncompressed)."""
    total = 0
    for var in ds.data_vars.values():
        dtype = np.dtype(var.encoding.get("dtype", var.dtype))
        total += int(var.size) * dtype.itemsize
    return total


def _put(target, ds: xr.Dataset, **kwargs: Any) -> None:
    """Write ``ds`` into ``target`` (a writable session, or its fork: :func:`forked`);
    ``to_zarr`` arguments (``mode``, ``append_dim``, ``region``, ``encoding``) in ``kwargs``.

    The pixels stream chunk by chunk: each dask task reads, converts, encodes and writes one
    ``(1, 512, 512)`` chunk, so memory is a few chunks per thread whatever the grid, the batch
    or the time axis. With a distributed cluster and a fork, the workers write (nothing but
    change sets comes back). The lazy per-step coordinates are computed in the same dask
    computation (the reads are shared) and written from this process afterwards.
    """
    client = _distributed_client()
    if client is not None and not _is_fork(target):
        _put_computed(target, ds, **kwargs)
        return
    from icechunk.xarray import _XarrayDatasetWriter

    from stac2cube._progress import compute

    if kwargs.get("mode") != "w-":  # into existing arrays: xarray encodes with theirs
        ds = as_decoded(ds)
    ds = _pixel_chunks(ds)
    lazy = _lazy_step_coords(ds)
    if lazy:  # placeholders now (written eagerly here), values once computed
        ds = ds.assign_coords(
            {n: (c.dims, np.zeros(c.shape, c.dtype), c.attrs) for n, c in lazy.items()}
        )
        for name, coord in lazy.items():
            ds[name].encoding = dict(coord.encoding)
    writer = _XarrayDatasetWriter(ds, store=target.store, safe_chunks=True)
    writer._open_group(
        group=None,
        mode=kwargs.get("mode"),
        append_dim=kwargs.get("append_dim"),
        region=kwargs.get("region"),
    )
    writer.write_metadata(kwargs.get("encoding"))
    writer.write_eager()
    coords = [c.data for c in lazy.values()]
    if not writer.writer.sources:
        values = compute(*coords)
    elif client is not None:  # workers write through copies of the fork: merge their changes
        import dask.array as da
        from icechunk.dask import computing_meta, merge_sessions_array_kwargs
        from icechunk.distributed import extract_session, merge_sessions

        stored = writer.writer.sync(
            compute=False,
            chunkmanager_store_kwargs={"load_stored": False, "return_stored": True},
        )
        changes = [
            da.reduction(
                arr,
                name="ice-changeset",
                chunk=computing_meta(extract_session),
                aggregate=computing_meta(merge_sessions_array_kwargs),
                concatenate=False,
                keepdims=False,
                dtype=object,
                meta=np.array([object()], dtype=object),
            )
            for arr in (stored if isinstance(stored, list | tuple) else [stored])
        ]
        out = compute(*changes, *coords, nbytes=stored_bytes(ds), steps=ds.sizes["time"])
        target.merge(merge_sessions(*out[: len(changes)]))
        values = out[len(changes) :]
    else:  # dask's local scheduler: the tasks write into this process's session
        delayed = writer.writer.sync(compute=False)
        out = compute(delayed, *coords, nbytes=stored_bytes(ds), steps=ds.sizes["time"])
        values = out[1:]
    if lazy:
        _write_step_values(target, ds, dict(zip(lazy, values, strict=True)), **kwargs)


def _write_step_values(target, ds: xr.Dataset, values: dict[str, Any], **kwargs: Any) -> None:
    """Write computed per-step coordinates where :func:`_put` wrote their placeholders."""
    import zarr

    group = zarr.open_group(target.store, mode="r+")
    n = ds.sizes["time"]
    if "region" in kwargs:
        start = kwargs["region"]["time"].start
    elif kwargs.get("append_dim") == "time":
        start = group["time"].shape[0] - n
    else:
        start = 0
    for name, value in values.items():
        array = group[name]
        encoded = xr.conventions.encode_cf_variable(
            xr.Variable(("time",), np.asarray(value), encoding=dict(ds[name].encoding)),
            name=name,
        )
        array[start : start + n] = np.asarray(encoded.values, dtype=array.dtype)


def _put_computed(session, ds: xr.Dataset, **kwargs: Any) -> None:
    """A session with changes on a distributed cluster (it cannot fork): the pixels are
    computed on the cluster, as many time steps at a time as fit in ``COMPUTE_BYTES``, and
    written from this process."""
    from icechunk.xarray import to_icechunk

    if kwargs.get("mode") != "w-":
        ds = as_decoded(ds)
    # as many steps per computation as fit in COMPUTE_BYTES (at least one), whatever the batch
    per_step = sum(
        v.dtype.itemsize * v.size // max(v.sizes["time"], 1) for v in ds.data_vars.values()
    )
    group = max(1, int(COMPUTE_BYTES // max(per_step, 1)))
    for k in range(0, ds.sizes["time"], group):
        part = ds.isel(time=slice(k, k + group)).compute()
        if "region" in kwargs:
            start = kwargs["region"]["time"].start + k
            region = {"time": slice(start, start + part.sizes["time"])}
            to_icechunk(part, session, region=region)
        elif k == 0:
            to_icechunk(part, session, **kwargs)
        else:
            to_icechunk(part, session, **APPEND)


def write_time_steps(
    session, ds: xr.Dataset, *, first: bool, batch_size: int = DEFAULT_BATCH_SIZE
) -> int:
    """Write (``first``) or append along time the steps of ``ds``, ``batch_size`` at a time.

    Any number of batches go into one session, hence one commit.

    Returns:
        The number of time steps written.
    """
    n = ds.sizes["time"]
    if not first:
        check_fits_cube(session, ds)
    for k in range(0, n, batch_size):
        part = ds.isel(time=slice(k, k + batch_size))
        if first and k == 0:
            _put(session, part, mode="w-", encoding=encode_for_store(part))
        else:
            _put(session, part, **APPEND)
    return n


def check_fits_cube(session, ds: xr.Dataset) -> None:
    """:func:`check_same_grid` and :func:`check_same_step_variables` on the cube in
    ``session``, opened once."""
    cube = xr.open_zarr(session.store, consolidated=False, chunks={})
    check_same_grid(cube, ds)
    check_same_step_variables(cube, ds)


def check_same_grid(cube: xr.Dataset, ds: xr.Dataset) -> None:
    """Raise :class:`GridMismatchError` unless the ``x`` and ``y`` of ``ds`` are the ``cube``'s.

    Appends never write ``x``/``y`` (:data:`APPEND`): steps read on another grid would carry
    the cube's coordinates, not their own.
    """
    for dim in ("x", "y"):
        have, want = cube[dim].values, ds[dim].values
        if have.shape != want.shape or np.abs(have - want).max(initial=0.0) > TOLERANCE:
            raise GridMismatchError(
                f"these time steps lie on another grid than the cube ({dim} differs); "
                "the cube is left unchanged"
            )


def check_same_step_variables(cube: xr.Dataset, ds: xr.Dataset) -> None:
    """Raise :class:`GridMismatchError` unless ``ds`` has exactly the ``cube``'s per-step
    variables.

    An append with a variable the cube lacks (or without one it has) would leave arrays of
    different lengths along time: a cube that no longer opens.
    """
    have = {str(n) for n, v in cube.variables.items() if "time" in v.dims}
    want = {str(n) for n, v in ds.variables.items() if "time" in v.dims}
    if have != want:
        missing, extra = sorted(have - want), sorted(want - have)
        raise GridMismatchError(
            "these time steps do not fit the cube: "
            + "; ".join(
                part
                for part in (
                    f"the cube has {missing} that they lack" if missing else "",
                    f"they have {extra} that the cube lacks" if extra else "",
                )
                if part
            )
            + " (the cube is left unchanged; it was made by another stac2cube version or "
            "request: build a new store)"
        )


def _time_only(ds: xr.Dataset) -> xr.Dataset:
    """Drop what has no time dimension (region writes may only touch the region)."""
    return ds.drop_vars([n for n, v in ds.variables.items() if "time" not in v.dims])


def rewrite_time_steps(
    session,
    base: xr.Dataset,
    new: xr.Dataset,
    replaced_times: dict[str, str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Insert and replace time steps so that time stays sorted.

    Args:
        session: writable icechunk session of the cube.
        base: the cube as of the session's parent snapshot (read from a read-only session, so
            rewriting shifted steps never reads what this session already overwrote).
        new: time steps to write (additions and replacements), decoded.
        replaced_times: ``new time -> cube time`` of the steps ``new`` replaces.
        batch_size: time steps computed and written at a time.

    Only the tail from the first changed position onward is rewritten; everything before it is
    left as it is. Steps after the cube's end are plain appends.

    Returns:
        The number of time steps rewritten or appended.
    """

    new = as_decoded(new)  # stored integers as values, like the decoded cube
    # per-step coordinates (small, object dtype) in memory; pixels stay lazy
    base = base.assign_coords(
        {n: c.compute() for n, c in base.coords.items() if n not in base.dims}
    )
    old = pd.DatetimeIndex(base.time.values)
    gone = {pd.Timestamp(t) for t in replaced_times.values()}
    keep = base.sel(time=[t for t in old if t not in gone])
    merged = xr.concat(
        [keep, new],
        dim="time",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
    ).sortby("time")
    added = [t for t in pd.DatetimeIndex(new.time.values) if t.isoformat() not in replaced_times]
    changed = [old.get_loc(t) for t in gone] + [int(old.searchsorted(t)) for t in added]
    k = min(changed) if changed else len(old)
    tail = merged.isel(time=slice(k, None))
    n_old = len(old) - k
    # grow the arrays first (append the last steps), then overwrite the shifted region
    write_time_steps(
        session, tail.isel(time=slice(n_old, None)), first=False, batch_size=batch_size
    )
    for j in range(0, n_old, batch_size):
        part = _time_only(tail.isel(time=slice(j, min(j + batch_size, n_old))))
        _put(session, part, region={"time": slice(k + j, k + j + part.sizes["time"])})
    if n_old:
        # xarray does not rewrite index coordinates in region mode: write the shifted times
        _write_times(session, pd.DatetimeIndex(tail.time.values[:n_old]), start=k)
    return tail.sizes["time"]


def _write_times(session, times: pd.DatetimeIndex, *, start: int) -> None:
    import zarr

    array = zarr.open_group(session.store, mode="r+")["time"]
    units = array.attrs.get("units")
    if units != TIME_ENCODING["units"]:
        raise StoreError(f"unexpected time encoding {units!r} in the cube; cannot insert steps")
    seconds = (times - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    array[start : start + len(times)] = np.asarray(seconds, dtype="int64")


def merge_ledger(
    ledger: list[dict[str, Any]], entries: list[dict[str, Any]], replaced_times: dict[str, str]
) -> list[dict[str, Any]]:
    """The cube's ledger with replaced steps swapped for their new entries, sorted by time."""
    gone = set(replaced_times.values())
    out = [e for e in ledger if e["time"] not in gone] + list(entries)
    return sorted(out, key=lambda e: e["time"])


def write_metadata(session, *, request: dict[str, Any], ledger: list[dict[str, Any]], version: str):
    """Store the request and ledger as root attributes (part of the same commit)."""
    import zarr

    group = zarr.open_group(session.store, mode="r+")
    group.attrs.update(
        {
            REQUEST_ATTR: json.dumps(request),
            LEDGER_ATTR: json.dumps(ledger),
            VERSION_ATTR: version,
        }
    )


def open_cube(
    path: str | Path,
    *,
    snapshot: str | None = None,
    decode: bool = True,
    group: str | None = None,
    cloud_threshold: float | None = None,
) -> xr.Dataset:
    """Open the cube at ``path`` as a lazy, decoded ``xarray.Dataset``.

    Args:
        path: the cube store (an icechunk repository).
        snapshot: an icechunk snapshot id to read instead of the latest commit.
        decode: apply CF decoding (scale/offset, NaN for nodata); False gives stored integers.
        group: a side group (``clouds``, ``superres``, ``composites/month``) instead of the
            bands.
        cloud_threshold: a masked view: bands and indices NaN where the ``clouds`` group's
            ``cloud_mask`` at this threshold (percent) or its ``shadow_mask`` is 1, and
            ``cloud_fraction`` per step from those layers (:func:`stac2cube.clouds.masked_view`);
            the stored bands are not changed.

    Example:
        >>> ds = open_cube("demo.icechunk")  # doctest: +SKIP
        >>> ds.B04.sel(time="2024-01").mean("time")  # doctest: +SKIP
    """
    cube = _cube(path)
    ds = cube.open_dataset(group, snapshot=snapshot, decode=decode)
    if cloud_threshold is not None:
        from stac2cube.clouds import masked_view

        ds = masked_view(ds, cube.open_dataset("clouds", snapshot=snapshot), cloud_threshold)
    return ds


def cube_info(path: str | Path) -> dict[str, Any]:
    """Summary of the cube at ``path``: grid, bands, time range, scenes per time step."""
    return _cube(path).info()


def head_snapshot(path: str | Path) -> str:
    """Id of the snapshot the cube's ``main`` branch points to."""
    return _cube(path).head()


@contextmanager
def store_lock(path: str | Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive write lock of the cube at ``path`` (a sibling ``.NAME.lock`` file).

    The lock is an ``flock``: the kernel releases it when its process dies, even by SIGKILL.

    Raises:
        StoreError: another run holds the lock (after waiting ``wait`` seconds).
    """
    with _cube(path).lock(wait):
        yield


def history(path: str | Path) -> list[dict[str, Any]]:
    """The cube's commits, newest first: snapshot id, time, message and what each added."""
    return _cube(path).history()


def rollback(path: str | Path, snapshot: str) -> str:
    """Point the cube back at ``snapshot``; the abandoned head stays reachable as a tag.

    Returns:
        The name of the tag that keeps the previous head (``before-rollback-<time>``).
    """
    return _cube(path).rollback(snapshot)
