"""Disk full, for real: the cube lives on a small tmpfs the test mounts (we run as root), filled
with a ballast file to leave only a little space, so a build or an update runs out of space
mid-write. The run fails with a one-line error, the previous commit opens intact, and once
space is freed the next run converges to the clean build.

Needs ``mount -t tmpfs`` (root or CAP_SYS_ADMIN): skipped locally without it, a failure in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import BUILD, UPDATE_END, assert_same_values, require

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

#: bytes left free before the run: none; enough for some chunks but not all (measured: an
#: update of this cube fails with 0, 8, 24 and 64 kB free)
FREE = [0, 24_576]


def can_mount(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                        capture_output=True).returncode == 0  # fmt: skip
    if ok:
        subprocess.run(["umount", str(where)], check=True)
    return ok


@contextlib.contextmanager
def small_fs(where: Path, size: str = "8m"):
    """A tmpfs of ``size`` mounted at ``where`` for the block."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Write a ballast file leaving ``leave`` bytes free on ``fs``."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    ballast = fs / "ballast"
    with ballast.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return ballast


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "stac2cube.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def env_for(tmp_path: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_HOME": str(tmp_path / "prefect-home")}  # fmt: skip


def build_args(series, store: Path) -> list[str]:
    from helpers import small_bbox

    return [
        "build", "--mission", "sentinel-2-l2a", "--bbox", *map(str, small_bbox()),
        "--start", BUILD[0], "--end", BUILD[1], "--catalog", series.stac_url,
        "--collection", series.collection, "--bands", "B04", "B08", "--store", str(store),
    ]  # fmt: skip


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and lines, proc.stdout[-1000:]
    assert lines[-1].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


def test_update_on_a_full_disk(series, clean_cubes, tmp_path):
    from stac2cube.cube import Cube

    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    require(can_mount(mnt), "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    built, updated = clean_cubes
    env = env_for(tmp_path)
    outcomes = []
    for leave in FREE:
        with small_fs(mnt) as fs:
            store = fs / "cube.icechunk"
            shutil.copytree(built, store)
            head = Cube(store).head()
            ballast = fill(fs, leave)
            proc = cli(env, "update", "--store", str(store), "--end", UPDATE_END)
            if proc.returncode == 0:  # it fitted after all
                outcomes.append((leave, "completed"))
                assert_same_values(store, updated)
                continue
            error = one_line_error(proc)
            outcomes.append((leave, error))
            assert error.startswith("error: no space left on the device"), error
            # the previous commit, intact
            assert Cube(store).head() == head
            assert_same_values(store, built)
            # space freed: the next run is not tripped by anything the failed one left
            ballast.unlink()
            proc = cli(env, "update", "--store", str(store), "--end", UPDATE_END)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert_same_values(store, updated)
            assert not list(fs.glob(".cube.icechunk.partial-*"))
    print(f"disk full, update: {outcomes}")
    assert sum(o != "completed" for _, o in outcomes) >= 2, outcomes


def test_first_build_on_a_full_disk_leaves_nothing(series, clean_cubes, tmp_path):
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    require(can_mount(mnt), "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    built, _ = clean_cubes
    env = env_for(tmp_path)
    with small_fs(mnt) as fs:
        store = fs / "new.icechunk"
        ballast = fill(fs, 16_384)
        proc = cli(env, *build_args(series, store))
        error = one_line_error(proc)
        assert error.startswith("error: no space left on the device"), error
        assert sorted(p.name for p in fs.iterdir()) in (
            ["ballast"],
            [".new.icechunk.lock", "ballast"],
        )
        ballast.unlink()
        proc = cli(env, *build_args(series, store))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert_same_values(store, built)
