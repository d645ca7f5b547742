"""The ``stac2cube`` command line, run as a real subprocess against the local STAC API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stac2cube.testing.synthetic import demo_bbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """Environment for CLI subprocesses: the session's Prefect API, a private PREFECT_HOME."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return env


def run(env, *args, timeout=300):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stac2cube.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    proc.seconds = time.monotonic() - t0
    return proc


def bbox_args():
    return ["--bbox", *[str(v) for v in demo_bbox()]]


def test_build_info_update_history_export(cli_env, stac_url, tmp_path):
    store = tmp_path / "cli.icechunk"
    base = [
        "--mission",
        "sentinel-2-l2a",
        *bbox_args(),
        "--catalog",
        stac_url,
        "--collection",
        "sentinel-2-c1-l2a",
        "--bands",
        "red",
        "nir08",
        "--store",
        str(store),
    ]
    p = run(cli_env, "build", *base, "--start", "2024-01-01", "--end", "2024-01-12")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "+2 time steps" in p.stdout

    info = json.loads(run(cli_env, "info", str(store), "--json").stdout)
    assert info["bands"] == ["B04", "B8A"] and info["crs"] == "EPSG:32632"
    assert [s["scenes"] for s in info["time_steps"]] == [2, 1]
    text = run(cli_env, "info", str(store)).stdout
    assert "EPSG:32632" in text and "s2-offset-1000" in text

    bad = run(cli_env, "update", "--store", str(store), "--lookback-days", "-1")
    assert bad.returncode == 2 and "--lookback-days must be >= 0" in bad.stderr
    bad = run(cli_env, "update", "--store", str(store), "--end", "2024-02-30")
    assert bad.returncode == 2 and "end must be a date" in bad.stderr
    p = run(cli_env, "update", "--store", str(store), "--end", "2024-01-31")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "+2 time steps" in p.stdout
    p = run(cli_env, "update", "--store", str(store), "--end", "2024-01-31")
    assert p.returncode == 0 and "nothing new" in p.stdout

    hist = json.loads(run(cli_env, "history", str(store), "--json").stdout)
    assert [h["added_time_steps"] for h in hist[:2]] == [2, 2]
    p = run(cli_env, "rollback", str(store), "--to", hist[1]["snapshot"])
    assert p.returncode == 0, p.stderr
    assert json.loads(run(cli_env, "info", str(store), "--json").stdout)["shape"]["time"] == 2

    p = run(cli_env, "export", str(store), "--format", "netcdf", "--out", str(tmp_path / "c.nc"))
    assert p.returncode == 0 and (tmp_path / "c.nc").stat().st_size > 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bbox", "11.6", "48.1", "11.5", "48.2"], "west (11.6) must be less than east (11.5)"),
        (["--bbox", "200", "48.1", "201", "48.2"], "longitude out of range"),
        (["--start", "2024-02-01", "--end", "2024-01-01"], "end date 2024-01-01 is before start"),
        (["--mission", "sentinel-9"], "unknown mission 'sentinel-9'"),
        (["--bands", "B04", "B13"], "unknown band 'B13'"),
        (["--resolution", "0"], "resolution must be a positive number"),
        (["--resolution", "-5"], "resolution must be a positive number"),
        (["--catalog", "not-a-catalog"], "unknown catalog 'not-a-catalog'"),
        (["--runner", "bogus"], "unknown runner 'bogus'"),
        (["--catalog", "UNREACHABLE"], "did not answer"),
        (["--start", "2019-01-01", "--end", "2019-01-31"], "no sentinel-2-c1-l2a scenes"),
    ],
)
def test_bad_input_one_line_error_nonzero_exit_no_store(cli_env, stac_url, tmp_path, args, message):
    store = tmp_path / "never.icechunk"
    opts = {
        "--mission": "sentinel-2-l2a",
        "--start": "2024-01-01",
        "--end": "2024-01-31",
        "--catalog": stac_url,
        "--collection": "sentinel-2-c1-l2a",
        "--store": str(store),
    }
    given = {a for a in args if a.startswith("--")}
    argv = []
    for key, value in opts.items():
        if key not in given:
            argv += [key, value]
    if "--bbox" not in args:
        argv += bbox_args()
    argv += [a.replace("UNREACHABLE", f"http://127.0.0.1:{_closed_port()}") for a in args]
    p = run(cli_env, "build", *argv, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert not store.exists()
    assert p.seconds < 60


def test_missing_store_for_update_and_info(cli_env, tmp_path):
    for argv in (
        ["update", "--store", str(tmp_path / "nope")],
        ["info", str(tmp_path / "nope")],
        ["history", str(tmp_path / "nope")],
    ):
        p = run(cli_env, *argv)
        assert p.returncode == 2 and "no cube at" in p.stderr.strip().splitlines()[-1]
    assert not Path(tmp_path / "nope").exists()
