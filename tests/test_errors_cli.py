"""Errors as a user sees them: one ``error:`` line, last on stderr, nothing started for bad input.

The command line runs as a real subprocess. Parameter errors are checked before anything
starts: the run is made without a Prefect API configured (so reaching a flow would start a
temporary server) and reports which heavy modules it imported; neither Prefect (server, flow
runs) nor Dask's ``distributed`` (clusters) may be imported. Failures inside a run (a corrupt
COG) print the one line by default and the details only with ``--debug``. The Python API gives
the same one-line errors from a plain call, a ``.fn()`` call and a deployment-style run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.testing.synthetic import TILE_A, SceneSpec, demo_bbox, write_catalog

# runs the command line as ``python -m stac2cube.cli`` does, then reports what it imported
WRAPPER = """
import json, sys
from stac2cube.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("prefect", "distributed") if m in sys.modules)
print("IMPORTED " + json.dumps(heavy))
sys.exit(code)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A private PREFECT_HOME and no Prefect API: a flow run would start a temporary server."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 300):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    proc.seconds = time.monotonic() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("IMPORTED ")), None)
    proc.imported = json.loads(line.removeprefix("IMPORTED ")) if line else None
    return proc


def assert_one_error_line(proc, *needles: str) -> str:
    """Exit 2, the ``error:`` line last on stderr (naming ``needles``), no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sum(x.startswith("error: ") for x in lines) == 1, proc.stderr[-3000:]
    return lines[-1]


def _base(store: Path) -> dict[str, list[str]]:
    return {
        "--mission": ["sentinel-2-l2a"],
        "--bbox": [str(v) for v in demo_bbox()],
        "--start": ["2024-01-01"],
        "--end": ["2024-01-31"],
        "--catalog": ["http://127.0.0.1:9"],  # never contacted: every case fails before
        "--collection": ["sentinel-2-c1-l2a"],
        "--store": [str(store)],
    }


def _argv(store: Path, change: dict[str, list[str] | None]) -> list[str]:
    opts = {**_base(store), **change}
    return [x for k, v in opts.items() if v is not None for x in (k, *v)]


# a held-out style matrix: each bad parameter alone, and the words its error line must contain
BAD_PARAMETERS = [
    ({"--bbox": ["11.6", "48.1", "11.5", "48.2"]}, ["west (11.6) must be less than east"]),
    ({"--bbox": ["11.5", "48.2", "11.6", "48.1"]}, ["south"]),
    ({"--bbox": ["200", "48.1", "201", "48.2"]}, ["longitude out of range"]),
    ({"--bbox": ["11.5", "48.1", "east", "48.2"]}, ["--bbox", "'east'"]),
    ({"--start": ["2024-13-01"]}, ["start", "2024-13-01"]),
    ({"--end": ["2024-02-30"]}, ["end", "2024-02-30"]),
    ({"--start": ["2024-02-01"], "--end": ["2024-01-01"]}, ["before start"]),
    ({"--start": None}, ["--start"]),
    ({"--dates": ["2024-01-40"], "--start": None, "--end": None}, ["dates", "2024-01-40"]),
    ({"--mission": ["sentinel-9"]}, ["unknown mission 'sentinel-9'"]),
    ({"--bands": ["B04", "B13"]}, ["unknown band 'B13'"]),
    ({"--crs": ["EPSG:99999"]}, ["99999"]),
    ({"--crs": ["not-a-crs"]}, ["not-a-crs"]),
    ({"--max-cloud": ["150"]}, ["max_cloud", "150"]),
    ({"--max-cloud": ["-1"]}, ["max_cloud", "-1"]),
    ({"--max-cloud": ["cloudy"]}, ["--max-cloud", "'cloudy'"]),
    ({"--max-scene-cloud": ["200"]}, ["max_scene_cloud"]),
    ({"--min-coverage": ["2"]}, ["min_coverage"]),
    ({"--resolution": ["0"]}, ["resolution must be a positive number"]),
    ({"--catalog": ["not-a-catalog"]}, ["unknown catalog 'not-a-catalog'"]),
    ({"--season": ["13-14"]}, ["season"]),
    ({"--indices": ["NOPE"]}, ["NOPE"]),
    ({"--composites": ["median:decade"]}, ["decade"]),
    ({"--batch-size": ["0"]}, ["batch_size"]),
    ({"--tile-mode": ["stacked"]}, ["--tile-mode", "'stacked'"]),
    ({"--runner": ["bogus"]}, ["unknown runner 'bogus'"]),
]


@pytest.mark.parametrize(
    ("change", "needles"), BAD_PARAMETERS, ids=[str(c) for c, _ in BAD_PARAMETERS]
)
def test_bad_parameter_fails_before_anything_starts(tmp_path, change, needles):
    store = tmp_path / "never.icechunk"
    proc = run_cli(_env(tmp_path), "build", *_argv(store, change))
    assert_one_error_line(proc, *needles)
    # nothing started: no Prefect (temporary server, flow run), no Dask (cluster)
    assert "temporary server" not in proc.stderr
    if proc.imported is not None:  # argparse errors exit inside main, before the report
        assert proc.imported == [], proc.imported
    assert proc.seconds < 10, proc.seconds  # ~1 s here; 8 s and more when a server started
    assert not store.exists()
    assert not list(tmp_path.glob(".never.icechunk*"))


def test_store_that_is_a_file_is_refused_by_every_command(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a cube\n")
    under = path / "cube.icechunk"
    env = _env(tmp_path)
    for argv in (
        ["build", *_argv(path, {})],
        ["build", *_argv(under, {})],
        ["update", "--store", str(path)],
        ["info", str(path)],
        ["history", str(path)],
        ["export", str(path), "--format", "zarr", "--out", str(tmp_path / "out.zarr")],
    ):
        proc = run_cli(env, *argv)
        line = assert_one_error_line(proc, str(path))
        assert "file" in line, line
        assert "panicked" not in proc.stderr and "PanicException" not in proc.stderr
        assert proc.imported in ([], None), (argv, proc.imported)
    assert path.read_text() == "not a cube\n"


def test_update_parameters_fail_before_anything_starts(tmp_path):
    env = _env(tmp_path)
    for argv, needle in (
        (["update", "--store", str(tmp_path / "none.icechunk")], "no cube at"),
        (["update", "--store", str(tmp_path / "x"), "--end", "2024-02-30"], "2024-02-30"),
        (["update", "--store", str(tmp_path / "x"), "--lookback-days", "-1"], "lookback"),
    ):
        proc = run_cli(env, *argv)
        assert_one_error_line(proc, needle)
        assert proc.imported == [], proc.imported
        assert "temporary server" not in proc.stderr


# -- failures inside a run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_assets(stac_api, tmp_path_factory):
    """A collection of three scenes on three days whose B04 COG is garbage, missing, truncated."""
    root = tmp_path_factory.mktemp("bad-assets")
    days = {"garbage": 3, "missing": 4, "truncated": 5}
    scenes = {
        kind: SceneSpec(
            TILE_A[0],
            TILE_A[1],
            TILE_A[2],
            dt.datetime(2023, 3, day, 10, 30, 21, tzinfo=dt.UTC),
            size=60,
            corrupt="B04" if kind == "garbage" else None,
            collection="bad-assets-s2",
        )
        for kind, day in days.items()
    }
    cat = write_catalog(root, list(scenes.values()), bands=["B04", "B08"])
    hrefs = {
        kind: next(
            i["assets"]["red"]["href"] for i in cat.items if i["id"] == scene.id
        ).removeprefix("file://")
        for kind, scene in scenes.items()
    }
    Path(hrefs["missing"]).unlink()
    data = Path(hrefs["truncated"]).read_bytes()
    Path(hrefs["truncated"]).write_bytes(data[: len(data) // 3])
    stac_api.load_collections(cat.collections)
    stac_api.load_items(cat.items)
    return {kind: (scenes[kind], hrefs[kind], f"2023-03-0{day}") for kind, day in days.items()}


# the reader's reason each unreadable COG must be reported with: the innermost error of the
# chain, rasterio's or (where it is kept: the threads runner) GDAL's own
REASONS = {
    "garbage": r"(RasterioIOError|CPLE_\w+): B04\.tif: TIFFReadDirectory",
    "missing": r"(RasterioIOError|CPLE_\w+): .*No such file or directory",
    "truncated": r"(RasterioIOError: Read failed|CPLE_\w+: .*Read error)",
}


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["garbage", "missing", "truncated"])
def test_unreadable_cog_prints_one_line_and_details_only_with_debug(
    stac_url, bad_assets, tmp_path, kind
):
    scene, href, day = bad_assets[kind]
    store = tmp_path / "bad.icechunk"
    argv = _argv(
        store,
        {
            "--catalog": [stac_url],
            "--collection": ["bad-assets-s2"],
            "--start": [day],
            "--end": [day],
            "--bands": ["B04", "B08"],
        },
    )
    env = _env(tmp_path)
    proc = run_cli(env, "build", *argv)
    line = assert_one_error_line(proc, f"cannot read item {scene.id} asset red (file://{href}): ")
    reason = line.split(f"(file://{href}): ", 1)[1]
    assert re.match(REASONS[kind], reason), line
    assert line.count(href) == 1 and len(line) < 600, line
    # nothing of Dask's worker logs, pickled exceptions, Prefect's failure reports
    assert not re.search(r"\|\s*distributed\.", proc.stderr), proc.stderr[-3000:]
    for noise in ("Compute Failed", "Failed to deserialize", "| ERROR", "Finished in state Failed"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert not store.exists() and not list(tmp_path.glob(".bad.icechunk.partial-*"))

    if kind == "garbage":  # the details, on request (one kind is enough: each run is slow)
        debug = run_cli(env, "--debug", "build", *argv)
        assert debug.returncode == 2
        assert [x for x in debug.stderr.splitlines() if x.strip()][-1] == line
        assert "Traceback" in debug.stderr and "rasterio" in debug.stderr


@pytest.mark.integration
def test_failure_inside_a_run_leaves_the_error_line_last(stac_url, tmp_path):
    """A catalog that does not answer fails inside the flow run: the temporary Prefect server
    is stopped before the error line is printed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tmp_path / "never.icechunk"
    proc = run_cli(
        _env(tmp_path), "build", *_argv(store, {"--catalog": [f"http://127.0.0.1:{port}"]})
    )
    assert_one_error_line(proc, "did not answer")
    assert not store.exists()


# -- the Python API ----------------------------------------------------------------------------

API_BAD = [
    ({"mission": "foo"}, "unknown mission 'foo'"),
    ({"start": "2024-13-01"}, "start must be a date YYYY-MM-DD, got '2024-13-01'"),
    ({"end": "31.01.2024"}, "end must be a date YYYY-MM-DD, got '31.01.2024'"),
    ({"bbox": [11.5, 48.1, "east", 48.2]}, "bbox must be four numbers"),
    ({"max_cloud": "cloudy"}, "max_cloud must be a number, got 'cloudy'"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"batch_size": "8x"}, "batch_size must be an integer, got '8x'"),
    ({"resampling": "lanczos"}, "unknown resampling 'lanczos'"),
    ({"clip": "yes"}, "clip must be true or false, got 'yes'"),
]


def _api_params(tmp_path: Path, change: dict) -> dict:
    return {
        "mission": "sentinel-2-l2a",
        "bbox": list(demo_bbox()),
        "start": "2024-01-01",
        "end": "2024-01-31",
        "catalog": "http://127.0.0.1:9",
        "collection": "sentinel-2-c1-l2a",
        "store": str(tmp_path / "api.icechunk"),
        **change,
    }


@pytest.mark.parametrize(("change", "message"), API_BAD, ids=[str(c) for c, _ in API_BAD])
def test_python_api_gives_the_one_line_error(tmp_path, change, message):
    from stac2cube import get_stac_layers

    params = _api_params(tmp_path, change)
    for call in (get_stac_layers, get_stac_layers.fn):
        with pytest.raises(InvalidRequestError) as err:
            call(**params)
        assert str(err.value).splitlines() == [str(err.value)], str(err.value)
        assert message in str(err.value)
    assert not (tmp_path / "api.icechunk").exists()


def _deployment_run(flow, parameters: dict):
    """Run ``flow`` as a worker runs a deployment's flow run: parameters as JSON from the API."""
    from prefect import get_client
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(flow, parameters=json.loads(json.dumps(parameters)))
    return run_flow(flow, flow_run=flow_run, return_type="state")


def test_deployment_style_run_gives_the_one_line_error(tmp_path):
    from stac2cube.flows.build import get_stac_layers
    from stac2cube.flows.update import update_cube

    for change, message in (API_BAD[0], API_BAD[1], API_BAD[3]):
        state = _deployment_run(get_stac_layers, _api_params(tmp_path, change))
        assert state.is_failed()
        exc = state.result(raise_on_failure=False)
        assert isinstance(exc, InvalidRequestError), repr(exc)
        assert message in str(exc) and len(str(exc).splitlines()) == 1, str(exc)
    state = _deployment_run(update_cube, {"store": str(tmp_path / "x"), "end": "2024-02-30"})
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, InvalidRequestError) and "2024-02-30" in str(exc), repr(exc)


def test_update_flow_gives_the_one_line_error(tmp_path):
    from stac2cube import update_cube

    for call in (update_cube, update_cube.fn):
        with pytest.raises(InvalidRequestError, match="end must be a date"):
            call(store=str(tmp_path / "x"), end="2024-02-30")
        with pytest.raises(StoreError, match="no cube at"):
            call(store=str(tmp_path / "x"))


def test_store_that_is_a_file_is_refused_by_the_api(tmp_path):
    from stac2cube import get_stac_layers, open_cube
    from stac2cube.store import read_state

    path = tmp_path / "notes.txt"
    path.write_text("not a cube\n")
    for call in (
        lambda: read_state(path),
        lambda: open_cube(path),
        lambda: get_stac_layers.fn(**_api_params(tmp_path, {"store": str(path)})),
        lambda: read_state(path / "sub.icechunk"),
    ):
        with pytest.raises(StoreError, match=r"file.*not a cube store"):
            call()
    assert path.read_text() == "not a cube\n"
