"""The cube handle: one object per run for the store of one cube (no Prefect).

A :class:`Cube` is made once from the store path. The path is resolved once, kept absolute,
and every part of a run (planning, the lock, the staging of a first build, the session, the
commit, the sidecar files and the report) goes through the handle instead of the path string.
The handle caches the cube's :class:`~stac2cube.store.CubeState`: read on first use, read again
only when asked (:meth:`Cube.refresh`, under the lock), and replaced by what the run commits
(:meth:`Cube.commit`), so nothing after the commit reopens the store to learn what it holds.

Groups of the store: the main group (``group=None``: the bands, indices and per-step
coordinates along ``time``) and side groups of the same time axis, e.g. ``composites/month``
(:mod:`stac2cube.composites`); :meth:`Cube.open_dataset` opens any of them.

A handle holds the path and the cached state, never an open session: it pickles, so Prefect
tasks may receive it (wrap it in ``quote()`` like the other large arguments).

Example:
    >>> from stac2cube.cube import Cube
    >>> cube = Cube("munich.icechunk")  # doctest: +SKIP
    >>> cube.state.times[-1], cube.open_dataset(group="composites/month")  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import xarray as xr

from stac2cube.errors import StoreError
from stac2cube.store import (
    LEDGER_ATTR,
    REQUEST_ATTR,
    VERSION_ATTR,
    CubeState,
    _json,
    _quiet_icechunk,
    check_store_path,
    write_metadata,
)

#: marks a state not read yet (None is a valid state: no cube)
_UNREAD = object()


class GroupNotFoundError(StoreError):
    """The cube has no such group (e.g. composites it was never asked for)."""


class Cube:
    """Handle of the cube store at ``path``: lifecycle, state and groups of one cube.

    Args:
        path: the store (an icechunk repository, or where a new one goes). Kept as given in
            :attr:`name` (messages, the summary, the files beside the cube), resolved once to
            the absolute :attr:`path` every operation uses.
    """

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        self.path = Path(path).resolve()
        self._state: Any = _UNREAD
        self._snapshot: str | None = None
        self._repo = None  # opened on first use; never pickled
        self._work: Path | None = None  # staging directory of a first build being written

    def __repr__(self) -> str:
        return f"Cube({self.name!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_repo": None}

    # -- the store ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """True when the store holds an icechunk repository (a cube, or a store being made)."""
        import icechunk

        check_store_path(self.path, name=self.name)
        if not self.path.exists():
            return False
        _quiet_icechunk()
        return icechunk.Repository.exists(icechunk.local_filesystem_storage(str(self.path)))

    def repository(self, *, create: bool = False):
        """The icechunk repository; create it when ``create`` and it does not exist."""
        if self._repo is None:
            self._repo = self._open_repo(self._work or self.path, create=create)
        return self._repo

    def _open_repo(self, where: Path, *, create: bool):
        import icechunk

        _quiet_icechunk()
        check_store_path(where, name=self.name if where == self.path else str(where))
        storage = icechunk.local_filesystem_storage(str(where))
        if where.exists() and icechunk.Repository.exists(storage):
            return icechunk.Repository.open(storage)
        if not create:
            raise StoreError(f"no cube at {self.name}")
        if where.exists() and any(where.iterdir()):
            raise StoreError(f"{self.name} exists and is not a cube store; choose another --store")
        return icechunk.Repository.create(storage)

    def _readonly(self, snapshot: str | None = None):
        repo = self.repository()
        return (
            repo.readonly_session(snapshot_id=snapshot)
            if snapshot
            else repo.readonly_session("main")
        )

    def require(self) -> CubeState:
        """The cube's state; :class:`StoreError` ``no cube at ...`` when there is none."""
        state = self.state
        if state is None:
            raise StoreError(f"no cube at {self.name}")
        return state

    # -- state and ledger --------------------------------------------------------------------

    @property
    def state(self) -> CubeState | None:
        """The cube's request, ledger and version (None: no cube yet), read once and cached."""
        if self._state is _UNREAD:
            self.refresh()
        return self._state

    def refresh(self) -> CubeState | None:
        """Read the state again (under :meth:`lock`, to see what other runs committed)."""
        self._state, self._snapshot = self._read(None)
        return self._state

    def read_state(self, snapshot: str | None = None) -> CubeState | None:
        """The state as of ``snapshot`` (the cached one for None); never cached otherwise."""
        return self.state if snapshot is None else self._read(snapshot)[0]

    def _read(self, snapshot: str | None) -> tuple[CubeState | None, str | None]:
        import zarr

        if not self.exists:
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(
                    f"{self.name} exists and is not a cube store; choose another --store"
                )
            self._repo = None
            return None, None
        session = self._readonly(snapshot)
        not_a_cube = f"{self.name} is an icechunk repository but holds no stac2cube cube"
        try:
            attrs = zarr.open_group(session.store, mode="r").attrs.asdict()
        except Exception as exc:
            raise StoreError(not_a_cube) from exc
        if REQUEST_ATTR not in attrs:
            raise StoreError(not_a_cube)
        state = CubeState(
            request=_load(attrs[REQUEST_ATTR]),
            ledger=_load(attrs.get(LEDGER_ATTR, "[]")),
            version=str(attrs.get(VERSION_ATTR, "?")),
        )
        return state, session.snapshot_id

    @property
    def snapshot(self) -> str | None:
        """The snapshot the cached state was read at (or committed as)."""
        self.state  # noqa: B018 (read it when not read yet)
        return self._snapshot

    @property
    def ledger(self) -> list[dict[str, Any]]:
        """The cached state's ledger (empty without a cube)."""
        return list(self.state.ledger) if self.state is not None else []

    def head(self) -> str:
        """Id of the snapshot the ``main`` branch points to now."""
        return self.repository().lookup_branch("main")

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the exclusive write lock of the cube (a sibling ``.NAME.lock`` file).

        The lock is an ``flock``: the kernel releases it when its process dies, even by SIGKILL.

        Raises:
            StoreError: another run holds the lock (after waiting ``wait`` seconds).
        """
        lock = self.path.with_name(f".{self.path.name}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
                        raise StoreError(
                            f"another stac2cube run is writing {self.name} ({holder}); "
                            "try again when it has finished"
                        ) from None
                    time.sleep(0.2)
            os.ftruncate(fd, 0)
            stamp = f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
            os.pwrite(fd, stamp.encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def writing(self) -> Iterator[Any]:
        """A writable session of the cube for one run; commit it with :meth:`commit`.

        A new cube is written in a hidden sibling directory (``.NAME.partial-PID``) and renamed
        into place when the block ends after its commit, so a failed first build leaves
        nothing (its directory is removed). An existing cube is written in one session of its
        ``main`` branch: until the commit, readers (and a crash) see the previous snapshot.
        Staging directories of killed runs are removed first. Hold :meth:`lock` around it.
        """
        new = self.state is None
        self._remove_stale_staging()
        self._repo = None
        self._work = self._staging_path() if new else None
        try:
            session = self.writable_session(create=new)
            created = session.snapshot_id
            yield session
            # asked of the repository, not of this handle's state (which a task may have
            # committed through a copy of the handle)
            committed = self.repository().lookup_branch("main") != created
        except BaseException:
            if self._work is not None:
                _remove_tree(self._work)
                self._state, self._snapshot = None, None
            raise
        finally:
            work, self._work, self._repo = self._work, None, None
        if work is not None:
            if committed:
                os.replace(work, self.path)
            else:  # nothing was committed: nothing to put in place
                _remove_tree(work)

    def writable_session(self, *, create: bool = False):
        """A writable session of ``main`` (of the staging repository inside :meth:`writing`)."""
        return self.repository(create=create).writable_session("main")

    def commit(
        self,
        session,
        message: str,
        *,
        record: dict[str, Any],
        ledger: list[dict[str, Any]],
        version: str,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store request and ledger in ``session``, commit once; the handle's state becomes
        what was committed (no re-read). Returns the snapshot id."""
        write_metadata(session, request=record, ledger=ledger, version=version)
        snapshot = session.commit(
            message, metadata={"stac2cube_version": version, **(metadata or {})}
        )
        self._state = CubeState(request=_json(record), ledger=_json(ledger), version=version)
        self._snapshot = snapshot
        return snapshot

    def _staging_path(self) -> Path:
        """Where a new cube is built before it is moved into place in one rename."""
        return self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")

    def _remove_stale_staging(self) -> None:
        """Remove staging directories of first builds whose process is gone (killed runs)."""
        for stale in self.path.parent.glob(f".{self.path.name}.partial-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------------

    def open_dataset(
        self, group: str | None = None, *, snapshot: str | None = None, decode: bool = True
    ) -> xr.Dataset:
        """A group of the cube as a lazy ``xarray.Dataset``.

        Args:
            group: None for the main group (bands, indices), or a side group such as
                ``composites/month``.
            snapshot: an icechunk snapshot id to read instead of the latest commit.
            decode: apply CF decoding (scale/offset, NaN for nodata); False gives stored
                integers.
        """
        if not self.exists:
            raise StoreError(f"no cube at {self.name}")
        store = self._readonly(snapshot).store
        if group is None:
            return xr.open_zarr(store, consolidated=False, mask_and_scale=decode, chunks={})
        try:
            return xr.open_zarr(
                store, group=group, consolidated=False, mask_and_scale=decode, chunks={}
            )
        except (FileNotFoundError, KeyError) as exc:
            raise GroupNotFoundError(f"cube {self.name} has no group {group!r}") from exc

    def groups(self, snapshot: str | None = None) -> list[str]:
        """The side groups of the cube (paths such as ``composites/month``), sorted."""
        import zarr

        root = zarr.open_group(self._readonly(snapshot).store, mode="r")
        return sorted(
            path
            for path, member in root.members(max_depth=None)
            if isinstance(member, zarr.Group) and not any(True for _ in member.groups())
        )

    def info(self) -> dict[str, Any]:
        """Summary of the cube: grid, bands, time range, scenes per time step (the cached
        state, and the dataset of the snapshot it was read at)."""
        state = self.require()
        snapshot = self.snapshot
        ds = self.open_dataset(snapshot=snapshot)
        grid = state.grid
        return {
            "store": self.name,
            "snapshot": snapshot,
            "mission": state.request.get("mission"),
            "catalog": state.request.get("catalog_url"),
            "collection": state.request.get("collection"),
            "crs": grid.crs,
            "resolution": grid.resolution,
            "bounds": list(grid.bounds),
            "shape": {"time": int(ds.sizes.get("time", 0)), "y": grid.height, "x": grid.width},
            "bands": list(state.request.get("bands", [])),
            "indices": list(state.request.get("indices") or []),
            "composites": list(state.request.get("composites") or []),
            "time_range": [state.times[0], state.times[-1]] if state.times else None,
            "time_steps": [
                {
                    "time": s["time"],
                    "scenes": len(s["items"]),
                    "rules": sorted({i["rule"] for i in s["items"]}),
                    **({"broken_assets": s["broken_assets"]} if s.get("broken_assets") else {}),
                }
                for s in state.ledger
            ],
            "stac2cube_version": state.version,
        }

    # -- versions -----------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """The cube's commits, newest first: snapshot id, time, message and what each added."""
        out = []
        for snap in self.repository().ancestry(branch="main"):
            meta = dict(snap.metadata or {})
            out.append(
                {
                    "snapshot": snap.id,
                    "written_at": snap.written_at.isoformat(),
                    "message": snap.message,
                    "added_time_steps": meta.get("added_time_steps"),
                    "replaced_time_steps": meta.get("replaced_time_steps"),
                    "scenes": meta.get("scenes"),
                    "stac2cube_version": meta.get("stac2cube_version"),
                }
            )
        return out

    def rollback(self, snapshot: str) -> str:
        """Point the cube back at ``snapshot``; the abandoned head stays reachable as a tag.

        Returns:
            The name of the tag that keeps the previous head (``before-rollback-<time>``).
        """
        repo = self.repository()
        if snapshot not in {s["snapshot"] for s in self.history()}:
            raise StoreError(f"snapshot {snapshot} is not in the history of {self.name}")
        head = repo.lookup_branch("main")
        tag = f"before-rollback-{time.strftime('%Y%m%dT%H%M%S')}-{head[:6]}"
        repo.create_tag(tag, head)
        repo.reset_branch("main", snapshot)
        self._state = _UNREAD
        return tag


def as_cube(store: str | Path | Cube) -> Cube:
    """``store`` itself when it is a :class:`Cube`, else a new handle of that path."""
    return store if isinstance(store, Cube) else Cube(store)


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _remove_tree(path: Path, tries: int = 20) -> None:
    """Remove ``path``; retry while writer threads of a failed computation still finish."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.1)
        if not path.exists():
            return
