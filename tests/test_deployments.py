"""``deployments/prefect.yaml``: entrypoints, typed parameter forms, the nightly schedule, and a
real round trip (deploy to a real ``prefect server``, trigger ``build-cube``, a worker runs it)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
PREFECT_CLI = str(Path(sys.executable).with_name("prefect"))
BERLIN = ZoneInfo("Europe/Berlin")


def deployments() -> dict[str, dict]:
    config = yaml.safe_load(PREFECT_YAML.read_text())
    return {d["name"]: d for d in config["deployments"]}


def load_entrypoint(entrypoint: str):
    return load_flow_from_entrypoint(entrypoint)


def properties(entrypoint: str) -> dict[str, dict]:
    return parameter_schema(load_entrypoint(entrypoint)).model_dump()["properties"]


def _types(prop: dict) -> list[dict]:
    """The alternatives of a property (``anyOf`` members, or the property's own type)."""
    keys = ("type", "format", "items", "enum")
    return prop.get("anyOf", [{k: prop[k] for k in keys if k in prop}])


# -- the file ---------------------------------------------------------------------------------


def test_two_deployments_on_the_stac2cube_pool():
    found = deployments()
    assert set(found) == {"build-cube", "nightly-update"}
    assert found["build-cube"]["entrypoint"] == "stac2cube.flows.build:get_stac_layers"
    assert found["nightly-update"]["entrypoint"] == "stac2cube.flows.update:update_cube"
    for d in found.values():
        assert d["work_pool"]["name"] == "stac2cube"
        assert d.get("description")
        assert not d.get("parameters", {}).get("store", "").endswith("cube.icechunk")


def test_no_pull_step_ties_a_deployment_to_the_checkout():
    """An explicit empty pull list: `prefect deploy` would otherwise add
    `set_working_directory: <checkout>` (issue 17 item 4); entrypoints are modules."""
    config = yaml.safe_load(PREFECT_YAML.read_text())
    assert config["pull"] == []
    for d in deployments().values():
        assert "pull" not in d
        module = d["entrypoint"].partition(":")[0]
        assert module.startswith("stac2cube.flows.") and not module.endswith(".py"), d


def test_schedule_names_its_time_zone_where_the_list_shows_it():
    nightly = deployments()["nightly-update"]
    assert "02:00 Europe/Berlin" in nightly["tags"]
    assert "Europe/Berlin" in nightly["description"]


def test_nightly_schedule_is_2am_berlin_across_daylight_saving():
    nightly = deployments()["nightly-update"]
    (schedule,) = nightly["schedules"]
    assert schedule == {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "active": True}
    assert "build-cube" not in [n for n, d in deployments().items() if d.get("schedules")]
    assert nightly["parameters"]["store"] == "{{ prefect.blocks.cube-store.nightly-cube.path }}"

    dates = _next_runs(schedule, dt.datetime(2025, 3, 28, 12, tzinfo=dt.UTC), 4)
    # Prefect maps the missing 02:00 of the spring-forward night to 01:00 CET
    assert [_berlin(d) for d in dates] == [
        "2025-03-29 02:00 CET",
        "2025-03-30 01:00 CET",
        "2025-03-31 02:00 CEST",
        "2025-04-01 02:00 CEST",
    ]
    dates = _next_runs(schedule, dt.datetime(2025, 10, 24, 12, tzinfo=dt.UTC), 3)
    # the repeated 02:00 of the fall-back night runs once
    assert [_berlin(d) for d in dates] == [
        "2025-10-25 02:00 CEST",
        "2025-10-26 02:00 CEST",
        "2025-10-27 02:00 CET",
    ]


def _next_runs(schedule: dict, start: dt.datetime, n: int) -> list[dt.datetime]:
    """The next ``n`` run times the Prefect server computes for ``schedule``."""
    from prefect.server.schemas.schedules import CronSchedule

    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    return list(asyncio.run(cron.get_dates(n=n, start=start)))


def _berlin(when: dt.datetime) -> str:
    return when.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M %Z")


def _is_spring_forward(day: dt.date) -> bool:
    """The last Sunday of March: 02:00-03:00 does not exist in Berlin."""
    return day.month == 3 and day.weekday() == 6 and (day + dt.timedelta(days=7)).month == 4


# -- typed forms ------------------------------------------------------------------------------


def test_entrypoints_import_as_installed_modules():
    build = load_entrypoint("stac2cube.flows.build:get_stac_layers")
    assert build.name == "get-stac-layers"
    assert build.fn.__module__ == "stac2cube.flows.build"  # not a second copy from a file path
    update = load_entrypoint("stac2cube.flows.update:update_cube")
    assert update.name == "update-cube"


def test_build_form_types_and_descriptions():
    props = properties("stac2cube.flows.build:get_stac_layers")
    for name, prop in props.items():
        assert prop.get("description"), f"build-cube parameter {name} has no description"
    assert props["resampling"]["enum"] == ["nearest", "bilinear", "cubic", "average"]
    for name in ("start", "end"):
        assert {"type": "string", "format": "date"} in _types(props[name])
    bbox = next(t for t in _types(props["bbox"]) if t.get("type") == "array")
    assert bbox["items"]["type"] == "number"
    assert (props["bbox"]["minItems"], props["bbox"]["maxItems"]) == (4, 4)
    assert props["resolution"]["type"] == "number"
    assert props["max_cloud"]["type"] == "number"
    assert props["batch_size"]["type"] == "integer"


def test_build_form_offers_mission_choices():
    """The UI renders a choice list from ``enum`` (a one-member Literal only gives ``const``)."""
    mission = properties("stac2cube.flows.build:get_stac_layers")["mission"]
    assert "sentinel-2-l2a" in mission.get("enum", []), mission


def test_build_form_suggests_catalogs_in_a_typed_field():
    """One string (a URL can be typed: issue 17 item 1); the known names are suggestions."""
    catalog = properties("stac2cube.flows.build:get_stac_layers")["catalog"]
    assert {"earth-search", "planetary-computer", "terrabyte", "auto"} <= set(catalog["examples"])
    assert _types(catalog) == [{"type": "string"}], "a STAC API URL must stay possible"


def test_update_form_types_and_descriptions():
    props = properties("stac2cube.flows.update:update_cube")
    for name, prop in props.items():
        assert prop.get("description"), f"nightly-update parameter {name} has no description"
    assert props["store"]["type"] == "string"
    assert {"type": "string", "format": "date"} in _types(props["end"])
    schema = parameter_schema(load_entrypoint("stac2cube.flows.update:update_cube"))
    assert schema.required == ["store"]


# -- a real Prefect server ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path):
    """``prefect server start`` on 127.0.0.1 with its own home and database; yields the env."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "30",
        "DO_NOT_TRACK": "1",
    }
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PREFECT_CLI, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            with (
                contextlib.suppress(OSError),
                opener.open(f"http://127.0.0.1:{port}/api/health", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "prefect server did not start in 120 s"
            time.sleep(0.3)
        yield env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)
        log.close()


def _cli(env: dict, *args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        [PREFECT_CLI, *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_deploy_trigger_and_run_on_a_real_server(stac_url, tmp_path):
    """Deploy both deployments, check what the server made of them, trigger build-cube through
    the API and let a process worker run it; the nightly schedule has runs at 02:00 Berlin."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from stac2cube import cube_info
    from stac2cube.testing.synthetic import demo_bbox

    home = Path(tempfile.mkdtemp(prefix="stac2cube-prefect-server-"))
    nightly_store = tmp_path / "nightly.icechunk"
    built_store = tmp_path / "ui.icechunk"
    try:
        with prefect_server(home) as env:
            _cli(env, "block", "register", "-m", "stac2cube.blocks")
            _cli(env, "work-pool", "create", "stac2cube", "--type", "process")
            with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
                from stac2cube.blocks import CubeStore

                CubeStore(path=str(nightly_store)).save("nightly-cube")
                _cli(env, "deploy", "--prefect-file", str(PREFECT_YAML), "--all", "--no-prompt")

                with get_client(sync_client=True) as client:
                    build = client.read_deployment_by_name("get-stac-layers/build-cube")
                    nightly = client.read_deployment_by_name("update-cube/nightly-update")
                    assert build.entrypoint == "stac2cube.flows.build:get_stac_layers"
                    assert not build.pull_steps and not nightly.pull_steps  # no checkout
                    assert build.parameter_openapi_schema["required"] == ["store"]
                    schema = build.parameter_openapi_schema["properties"]
                    assert schema["resampling"]["enum"][0] == "nearest"
                    assert all(p.get("description") for p in schema.values())
                    assert nightly.parameters == {"store": str(nightly_store)}
                    (sched,) = nightly.schedules
                    assert sched.schedule.cron == "0 2 * * *"
                    assert sched.schedule.timezone == "Europe/Berlin"

                    # the scheduler service fills in the next nightly runs
                    deadline = time.monotonic() + 120  # generous: CI machines are shared
                    runs = []
                    while time.monotonic() < deadline:
                        runs = client.read_flow_runs(
                            deployment_filter=DeploymentFilter(
                                id=DeploymentFilterId(any_=[nightly.id])
                            )
                        )
                        if len(runs) >= 3:
                            break
                        time.sleep(1)
                    assert len(runs) >= 3, "the scheduler made no nightly runs"
                    now = dt.datetime.now(dt.UTC)
                    for run in runs:
                        local = run.expected_start_time.astimezone(BERLIN)
                        assert run.state.is_scheduled()
                        assert run.expected_start_time > now
                        expected = 1 if _is_spring_forward(local.date()) else 2
                        assert (local.hour, local.minute) == (expected, 0), _berlin(local)
                        assert run.parameters == {"store": str(nightly_store)}

                params = {
                    "mission": "sentinel-2-l2a",
                    "bbox": list(demo_bbox()),
                    "start": "2024-01-01",
                    "end": "2024-01-31",
                    "catalog": stac_url,
                    "collection": "sentinel-2-c1-l2a",
                    "bands": ["red", "nir"],
                    "store": str(built_store),
                }
                run = run_deployment("get-stac-layers/build-cube", parameters=params, timeout=0)
                assert run.state.is_scheduled()
                _cli(
                    env,
                    "worker",
                    "start",
                    "--pool",
                    "stac2cube",
                    "--run-once",
                    "--limit",
                    "1",
                    timeout=300,
                )
                with get_client(sync_client=True) as client:
                    final = client.read_flow_run(run.id)
                assert final.state.is_completed(), (
                    f"{final.state}\n{(home / 'server.log').read_text()[-3000:]}"
                )
                info = cube_info(built_store)
                assert info["bands"] == ["B04", "B08"]
                assert len(info["time_steps"]) >= 1
                assert not nightly_store.exists()  # scheduled for 02:00, not run now
    finally:
        shutil.rmtree(home, ignore_errors=True)
