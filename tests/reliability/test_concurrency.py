"""Concurrency: a reader during a write sees the last commit, never a half-written update; a
writer that got past the lock (a filesystem where ``flock`` is not cluster-wide) is stopped by
icechunk's conflict detection at its commit. Two writers with the lock: tests/test_concurrent_builds.py
and tests/test_updates.py::test_second_writer_fails_clearly_while_the_first_holds_the_lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import UPDATE_END, assert_same_values, cube_values

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_reader_during_an_update_sees_the_last_commit(series, clean_cubes, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from stac2cube import get_stac_layers, open_cube

    built, updated = clean_cubes
    store = tmp_path / "read.icechunk"
    get_stac_layers(**series.params(store, http=False))
    ref = {"built": cube_values(built), "updated": cube_values(updated)}
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stac2cube.cli", "update", "--store", str(store),
         "--end", UPDATE_END, "--batch-size", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen = []
    while True:
        running = proc.poll() is None
        ds = open_cube(str(store), decode=False).load()
        match = [
            name
            for name, r in ref.items()
            if list(ds.time.values) == list(r.time.values)
            and all(np.array_equal(ds[b].values, r[b].values) for b in ("B04", "B08"))
        ]
        assert match, f"a reader saw a cube that is no commit: {ds.time.values}"
        seen.append((running, match[0]))
        if not running:
            break
        time.sleep(0.1)
    assert proc.returncode == 0, proc.stdout.read()[-2000:]
    assert any(running and m == "built" for running, m in seen)  # read while it was writing
    assert seen[-1][1] == "updated"
    print(f"reads during the update: {len(seen) - 1}, states seen: {sorted({m for _, m in seen})}")


def test_a_writer_past_the_lock_is_stopped_by_icechunk_at_its_commit(series, clean_cubes, tmp_path):
    """As on a filesystem without a cluster-wide ``flock``: a session opened before another run
    commits cannot commit over it (``ConflictError``); the cube keeps the other run's commit."""
    import icechunk
    import zarr

    from stac2cube import get_stac_layers, update_cube
    from stac2cube.cube import Cube

    _, updated = clean_cubes
    store = tmp_path / "race.icechunk"
    get_stac_layers(**series.params(store, http=False))
    stale = Cube(store).writable_session()  # the other node's run, started before the update
    update_cube(store=str(store), end=UPDATE_END)  # this node's run commits first
    head = Cube(store).head()
    arr = zarr.open_array(stale.store, path="B04")
    arr[0] = np.zeros(arr.shape[1:], dtype=arr.dtype)
    with pytest.raises(icechunk.ConflictError):
        stale.commit("the other node's run")
    assert Cube(store).head() == head
    assert_same_values(store, updated)
