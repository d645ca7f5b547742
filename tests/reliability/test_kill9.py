"""kill -9 at random moments: the stac2cube CLI runs in a subprocess in its own process group
and the whole group gets SIGKILL after a seeded random delay spread over a clean run's duration
(imports, search, load, write, commit, the rename of a first build, the files beside the cube).

After every kill: the cube opens at a committed snapshot with the values of that commit (or
does not exist after a killed first build); the next run is not blocked by a lock or a staging
directory; and the last, uninterrupted run converges to the clean build, value for value.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BUILD, UPDATE_END, assert_same_values, same_values

pytestmark = [
    pytest.mark.integration,
    pytest.mark.reliability,
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # ~45 CLI runs: about 5 min on an idle 2-core machine
]

KILLS = 10  # per phase (first build, update): 20 kills in all
MAX_TRIALS = 20  # per phase (a run may finish before its kill comes)
SEED = 16


def cli_env(tmp_path: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the session's Prefect API
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    return env


def build_args(series, store: Path) -> list[str]:
    from helpers import small_bbox

    return [
        "build", "--mission", "sentinel-2-l2a", "--bbox", *map(str, small_bbox()),
        "--start", BUILD[0], "--end", BUILD[1], "--catalog", series.stac_url,
        "--collection", series.collection, "--bands", "B04", "B08", "--store", str(store),
        "--batch-size", "1", "--statistics",
    ]  # fmt: skip


def update_args(store: Path) -> list[str]:
    return ["update", "--store", str(store), "--end", UPDATE_END, "--batch-size", "1"]


def run(args: list[str], env: dict[str, str], kill_after: float | None = None):
    """Run the CLI; with ``kill_after``, SIGKILL its whole process group after that many
    seconds. Returns ``(returncode, output, seconds)``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stac2cube.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches every child
    )
    try:
        out, _ = proc.communicate(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, time.monotonic() - t0


def check_consistent(store: Path, allowed: list[Path]) -> str:
    """The store opens at a committed snapshot whose values are one of ``allowed`` cubes (or
    does not exist); returns which (``absent`` or the cube's name)."""
    from stac2cube.cube import Cube

    if not store.exists():
        return "absent"
    cube = Cube(store)
    head = cube.head()
    assert head in {h["snapshot"] for h in cube.history()}
    for ref in allowed:
        if same_values(store, ref):
            return ref.name
    raise AssertionError(f"{store} at {head} equals none of {[a.name for a in allowed]}")


def late_or_any(rng: random.Random, trial: int) -> float:
    """A kill moment as a share of a clean run: anywhere, and every third trial in its last
    quarter (commit, rename of a first build, the files beside the cube)."""
    return rng.uniform(0.75, 1.0) if trial % 3 == 2 else rng.uniform(0.05, 0.95)


def killed(outcomes: list[str]) -> int:
    return sum(o.split(":")[1] == "killed" for o in outcomes)


def leftovers(store: Path) -> list[Path]:
    return list(store.parent.glob(f".{store.name}.partial-*"))


def test_sigkill_at_random_moments_of_build_and_update(series, clean_cubes, tmp_path):
    built, updated = clean_cubes
    env = cli_env(tmp_path)
    rng = random.Random(SEED)

    # a clean run of each phase, to spread the kills over its duration
    probe = tmp_path / "probe.icechunk"
    code, out, t_build = run(build_args(series, probe), env)
    assert code == 0, out[-2000:]
    code, out, t_update = run(update_args(probe), env)
    assert code == 0, out[-2000:]
    print(f"clean CLI runs: build {t_build:.1f} s, update {t_update:.1f} s", flush=True)
    assert_same_values(probe, updated)

    outcomes: dict[str, list[str]] = {"build": [], "update": []}
    # phase 1: first builds, killed; the next trial reruns the build on the same store
    store = tmp_path / "k.icechunk"
    while killed(outcomes["build"]) < KILLS and len(outcomes["build"]) < MAX_TRIALS:
        delay = late_or_any(rng, len(outcomes["build"])) * t_build
        code, out, _ = run(build_args(series, store), env, kill_after=delay)
        state = check_consistent(store, [built])
        outcomes["build"].append(f"{delay:.1f}s:{'killed' if code == -9 else code}:{state}")
        print("build trial", outcomes["build"][-1], flush=True)
        assert code in (-9, 0), out[-2000:]
        if state != "absent":  # committed before the kill: go on with a new first build
            store = tmp_path / f"k{len(outcomes['build'])}.icechunk"
    code, out, _ = run(build_args(series, store), env)
    assert code == 0, out[-2000:]
    assert_same_values(store, built)
    assert leftovers(store) == []

    # phase 2: updates of a built cube, killed; reruns on the same store
    store = tmp_path / "u.icechunk"
    assert run(build_args(series, store), env)[0] == 0
    while killed(outcomes["update"]) < KILLS and len(outcomes["update"]) < MAX_TRIALS:
        delay = late_or_any(rng, len(outcomes["update"])) * t_update
        code, out, _ = run(update_args(store), env, kill_after=delay)
        state = check_consistent(store, [built, updated])
        outcomes["update"].append(f"{delay:.1f}s:{'killed' if code == -9 else code}:{state}")
        print("update trial", outcomes["update"][-1], flush=True)
        assert code in (-9, 0), out[-2000:]
        if state == updated.name:  # committed: start again from a built cube
            store = tmp_path / f"u{len(outcomes['update'])}.icechunk"
            assert run(build_args(series, store), env)[0] == 0
    code, out, _ = run(update_args(store), env)
    assert code == 0, out[-2000:]
    assert_same_values(store, updated)
    kills = killed(outcomes["build"]) + killed(outcomes["update"])
    print(f"clean run: build {t_build:.1f}s, update {t_update:.1f}s; kills {kills}; {outcomes}")
    assert kills >= 20, outcomes
