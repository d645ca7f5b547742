"""``stac2cube gc``: expires old snapshots and deletes what no branch or tag reaches, the chunks
of a run killed (SIGKILL) before its commit and its staging directory included; never touches
the head of ``main`` or a tag."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import UPDATE_END, assert_same_values, cube_values

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

#: writes uncommitted chunks into the cube (a new array of the main branch), then SIGKILLs itself
KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, zarr
    from stac2cube.cube import Cube
    session = Cube(sys.argv[1]).writable_session()
    arr = zarr.create_array(session.store, name="junk", shape=(256, 256), chunks=(32, 32),
                            dtype="float64", compressors=None)
    arr[:] = np.random.default_rng(0).random((256, 256))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def files(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def gc(store, *args) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "stac2cube.cli", "gc", str(store), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_gc_removes_killed_leftovers_and_old_snapshots_never_head_or_tags(
    series, clean_cubes, tmp_path
):
    from stac2cube import get_stac_layers, update_cube
    from stac2cube.cube import Cube

    built, updated = clean_cubes
    store = tmp_path / "gc.icechunk"
    get_stac_layers(**series.params(store, http=False))
    cube = Cube(store)
    first = cube.head()
    cube.repository().create_tag("keep-me", first)
    update_cube(store=str(store), end=UPDATE_END)
    head = Cube(store).head()
    history = [h["snapshot"] for h in Cube(store).history()]
    assert len(history) == 3  # update, build, the repository's first snapshot

    # leftovers: chunks of a writer killed before its commit, a dead first build's staging
    committed = files(store)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    orphans = files(store) - committed
    assert len(orphans) >= 64, len(orphans)  # 64 chunks of 32 x 32 (8 kB: not inlined)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    staging = tmp_path / f".gc.icechunk.partial-{dead}"
    (staging / "chunks").mkdir(parents=True)
    (staging / "chunks" / "x").write_bytes(b"0" * 1000)

    # keep 30 days: no snapshot expires, the leftovers go
    result = gc(store)
    assert result["expired_snapshots"] == 0 and result["head"] == head
    assert result["chunks_deleted"] >= 64 and result["staging_removed"] == 1
    assert result["bytes_after"] < result["bytes_before"]
    assert not staging.exists()
    assert files(store) & orphans == set()
    assert [h["snapshot"] for h in Cube(store).history()] == history
    assert_same_values(store, updated)

    # keep 0 days: only the head (and what the tag holds) stays
    result = gc(store, "--keep-days", "0")
    assert result["head"] == head and result["tags"] == ["keep-me"]
    assert result["expired_snapshots"] >= 1
    cube = Cube(store)
    assert cube.head() == head
    assert cube.repository().lookup_tag("keep-me") == first
    assert_same_values(store, updated)
    at_tag = cube.open_dataset(snapshot=first, decode=False).load()
    ref = cube_values(built)
    for band in ("B04", "B08"):
        np.testing.assert_array_equal(at_tag[band].values, ref[band].values)
    assert len(cube.history()) < len(history)

    # a second gc finds nothing; the cube still updates (nothing new) and builds on
    again = gc(store, "--keep-days", "0")
    assert again["chunks_deleted"] == 0 and again["bytes_deleted"] == 0
    assert update_cube(store=str(store), end=UPDATE_END)["added_time_steps"] == 0


def test_gc_text_output_and_refusals(series, tmp_path):
    from stac2cube import get_stac_layers
    from stac2cube.store import store_lock

    store = tmp_path / "t.icechunk"
    get_stac_layers(**series.params(store, http=False))
    out = subprocess.run([sys.executable, "-m", "stac2cube.cli", "gc", str(store)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "size:" in out.stdout and "before" in out.stdout and "after" in out.stdout

    missing = subprocess.run([sys.executable, "-m", "stac2cube.cli", "gc", str(tmp_path / "no")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].startswith("error: no cube at")

    with store_lock(store):  # a run is writing: gc stops with the busy error, nothing deleted
        before = files(store)
        busy = subprocess.run([sys.executable, "-m", "stac2cube.cli", "gc", str(store)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert busy.returncode != 0 and "another stac2cube run is writing" in busy.stderr
    assert files(store) == before
