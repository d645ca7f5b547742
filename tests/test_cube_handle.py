"""The cube handle (:class:`stac2cube.cube.Cube`) on real icechunk stores built by the flow on
the local STAC API: one path resolution and one state read (plus the re-read under the lock)
per run, groups, staging of a first build, the lock, pickling."""

from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from stac2cube import get_stac_layers
from stac2cube.cube import Cube, GroupNotFoundError
from stac2cube.errors import EmptySearchError, StoreError
from stac2cube.testing.synthetic import demo_bbox

pytestmark = pytest.mark.integration


def build(stac_url, store, **kw):
    args = dict(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end="2024-01-15",
        catalog=stac_url,
        collection="sentinel-2-c1-l2a",
        bands=["B04", "B08", "SCL"],
        store=str(store),
    )
    args.update(kw)
    return get_stac_layers(**args)


@pytest.fixture()
def counted(monkeypatch):
    """Counts of the handles made, store paths resolved, state reads and repository opens
    during a build (wrappers around the real functions: behaviour unchanged)."""
    import stac2cube.store

    counts = {"handles": 0, "resolved": 0, "state_reads": 0, "repo_opens": 0, "read_state": 0}

    def counting(name, real):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        return wrapper

    real_init, real_resolve = Cube.__init__, Path.resolve

    def init(self, path):
        counts["handles"] += 1
        real_init(self, path)

    def resolve(self, *args, **kwargs):
        if ".icechunk" in str(self):
            counts["resolved"] += 1
        return real_resolve(self, *args, **kwargs)

    monkeypatch.setattr(Cube, "__init__", init)
    monkeypatch.setattr(Path, "resolve", resolve)
    monkeypatch.setattr(Cube, "_read", counting("state_reads", Cube._read))
    monkeypatch.setattr(Cube, "_open_repo", counting("repo_opens", Cube._open_repo))
    monkeypatch.setattr(
        stac2cube.store, "read_state", counting("read_state", stac2cube.store.read_state)
    )

    def reset():
        for k in counts:
            counts[k] = 0
        return counts

    return reset


def test_one_build_resolves_the_path_once_and_reads_the_state_once_plus_under_the_lock(
    stac_url, tmp_path, counted
):
    """A first build, an extension and a run with nothing new, each with the statistics CSV,
    the quicklook and the report: one handle, one path resolution, two state reads (planning,
    and again under the lock); the sidecar files and the report use the state the run holds."""
    store = tmp_path / "counted.icechunk"
    for end, added in (("2024-01-15", True), ("2024-01-31", True), ("2024-01-31", False)):
        counts = counted()
        summary = build(stac_url, store, end=end, statistics=True, quicklook="png")
        assert (summary["snapshot"] is not None) == added
        assert counts["handles"] == 1 and counts["resolved"] == 1
        assert counts["state_reads"] == 2 and counts["read_state"] == 0
        assert counts["repo_opens"] <= 3  # planning, after the commit's rename / under the lock
    assert Cube(store).state.ledger == Cube(store).read_state(Cube(store).head()).ledger


def test_a_relative_store_stays_where_the_run_began(stac_url, tmp_path, monkeypatch):
    """The handle keeps the absolute path: a chdir after it is made changes nothing."""
    monkeypatch.chdir(tmp_path)
    build(stac_url, "rel.icechunk")
    cube = Cube("rel.icechunk")
    assert cube.path == (tmp_path / "rel.icechunk").resolve() and cube.name == "rel.icechunk"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cube.exists and not Cube("rel.icechunk").exists
    assert cube.open_dataset().sizes["time"] == len(cube.state.ledger) > 0
    assert cube.info()["store"] == "rel.icechunk"


def test_open_dataset_opens_the_main_group_and_side_groups(stac_url, tmp_path):
    from stac2cube import open_cube
    from stac2cube.composites import open_composites

    store = tmp_path / "groups.icechunk"
    build(stac_url, store, end="2024-01-15")
    build(stac_url, store, end="2024-01-31", composites=["median:month", "mean:all"])
    cube = Cube(store)
    assert cube.groups() == ["composites/all", "composites/month"]
    xr.testing.assert_identical(cube.open_dataset(), open_cube(store))
    month = cube.open_dataset(group="composites/month")
    xr.testing.assert_identical(month, open_composites(store, "month"))
    assert "B04_median" in month and month.sizes["period"] == 1
    raw = cube.open_dataset(decode=False)
    assert raw.B04.dtype == np.uint16 and cube.open_dataset().B04.dtype.kind == "f"
    with pytest.raises(GroupNotFoundError, match="has no group 'composites/year'"):
        cube.open_dataset(group="composites/year")
    with pytest.raises(StoreError, match="has no year composites"):
        open_composites(store, "year")
    # the first build's snapshot: fewer steps, no composites yet
    first = cube.history()[-2]["snapshot"]
    before = cube.read_state(first).ledger
    assert cube.groups(first) == [] and 0 < len(before) < len(cube.ledger)
    assert before == cube.ledger[: len(before)]
    assert cube.open_dataset(snapshot=first).sizes["time"] == len(before)


def test_a_failed_first_build_removes_its_staging_directory(stac_url, tmp_path, monkeypatch):
    """The first build is written in a hidden sibling directory; when it fails (here: every
    step filtered out, after the staging repository was made) nothing is left."""
    seen = []
    real = Cube.writing

    @contextmanager
    def spying(self):
        with real(self) as session:
            seen.append(self._staging_path())
            assert seen[-1].is_dir() and not self.path.exists()
            yield session

    monkeypatch.setattr(Cube, "writing", spying)
    store = tmp_path / "none.icechunk"
    with pytest.raises(EmptySearchError, match="no time step passed the filters"):
        build(stac_url, store, start=None, end=None, dates=["2024-01-15"], max_scene_cloud=10)
    assert seen and seen[0].name == f".none.icechunk.partial-{os.getpid()}"
    assert not seen[0].exists() and not store.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".none.icechunk.lock"]  # as every run


def test_the_handle_writes_commits_and_caches_what_it_committed(stac_url, tmp_path):
    """writing() + commit() on a new store: renamed into place, state cached without a read."""
    source = tmp_path / "src.icechunk"
    build(stac_url, source)
    ds = Cube(source).open_dataset().load()
    record = Cube(source).state.request

    cube = Cube(tmp_path / "copy.icechunk")
    assert cube.state is None and cube.ledger == []
    with cube.lock(), cube.writing() as session:
        ds.to_zarr(session.store, consolidated=False, mode="w-")
        snapshot = cube.commit(session, "copy", record=record, ledger=[], version="test")
    assert cube.path.is_dir() and not list(tmp_path.glob(".copy.icechunk.partial-*"))
    assert cube.snapshot == snapshot == cube.head() == Cube(cube.path).snapshot
    assert cube.state == Cube(cube.path).state  # what it holds is what a fresh read gives
    assert cube.history()[0]["message"] == "copy"

    failing = Cube(tmp_path / "fails.icechunk")
    with pytest.raises(RuntimeError, match="boom"), failing.lock(), failing.writing() as session:
        ds.to_zarr(session.store, consolidated=False, mode="w-")
        raise RuntimeError("boom")
    assert not failing.path.exists() and not list(tmp_path.glob(".fails.icechunk.partial-*"))
    assert failing.state is None


def test_lock_and_pickling(stac_url, tmp_path):
    store = tmp_path / "locked.icechunk"
    build(stac_url, store)
    cube = Cube(str(store))
    state = cube.state
    cube.open_dataset()  # opens (and caches) the repository
    copy = pickle.loads(pickle.dumps(cube))
    assert (copy.name, copy.path, copy.state, copy.snapshot) == (
        cube.name,
        cube.path,
        state,
        cube.snapshot,
    )
    assert copy._repo is None
    with cube.lock(), pytest.raises(StoreError) as err, copy.lock():
        pass
    assert str(err.value).startswith(f"another stac2cube run is writing {store} (pid ")
    with copy.lock():  # released
        pass
