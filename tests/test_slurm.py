"""A real single-node SLURM (munge + slurmctld + slurmd) and Dask workers as SLURM jobs.

Locally these tests skip where SLURM is not installed (or not root); with ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from stac2cube.blocks import DaskCluster
from stac2cube.flows.runner import pixel_client, task_runner_for
from stac2cube.testing.slurm import LocalSlurm, slurm_missing, start_local_slurm

pytestmark = pytest.mark.slow

TESTS_DIR = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def slurm():
    """One SLURM for the module, stopped (jobs cancelled, daemons gone) afterwards."""
    missing = slurm_missing()
    require(missing is None, f"no local SLURM: {missing}")
    cluster = start_local_slurm(cpus=4)
    print(f"\nSLURM started in {cluster.start_seconds:.2f} s")
    # jobs inherit the environment: let the Dask workers import this module's functions
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, saved) if p)
    try:
        with cluster.activated():
            yield cluster
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        cluster.stop()


def _wait_for(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} not written within {timeout} s")


def _wait_no_jobs(slurm: LocalSlurm, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while slurm.job_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not slurm.job_ids(), slurm.run("squeue").stdout


def test_batch_job_runs_and_auto_runner_picks_slurm_inside_it(slurm, tmp_path):
    """A job runs as soon as submitted, and inside it ``runner=auto`` resolves to slurm."""
    out = tmp_path / "job.out"
    code = "from stac2cube.flows.runner import resolve_runner; print(resolve_runner('auto'))"
    sub = slurm.run(
        "sbatch",
        "--parsable",
        "-o",
        str(out),
        "--wrap",
        f'echo $SLURM_JOB_ID $SLURM_CLUSTER_NAME; {sys.executable} -c "{code}"',
    )
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    text = _wait_for(out)
    deadline = time.monotonic() + 60
    while "slurm" not in text.splitlines()[-1] and time.monotonic() < deadline:
        time.sleep(0.2)
        text = out.read_text()
    assert text.splitlines() == [f"{job_id} localcluster", "slurm"]
    assert resolve_outside() == "threads"
    _wait_no_jobs(slurm)


def resolve_outside() -> str:
    from stac2cube.flows.runner import resolve_runner

    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    return resolve_runner("auto", env)


def _job_of_block(block: np.ndarray) -> np.ndarray:
    """The SLURM job computing this block ("none" outside SLURM)."""
    return np.array([os.environ.get("SLURM_JOB_ID", "none")], dtype=object)


@task
def sum_on_cluster(n: int) -> dict:
    """A dask array sum inside ``pixel_client``; where the task and its blocks ran."""
    import dask.array as da

    arr = da.arange(n, chunks=max(n // 8, 1))
    with pixel_client():
        total = int(arr.sum().compute())
        jobs = set(arr.map_blocks(_job_of_block, dtype=object, chunks=(1,)).compute())
    return {"sum": total, "block_jobs": jobs, "task_job": os.environ.get("SLURM_JOB_ID")}


@flow
def slurm_sums(n: int) -> tuple[dict, dict]:
    return sum_on_cluster(n), sum_on_cluster.submit(n).result()


def test_flow_on_the_slurm_runner(slurm, tmp_path):
    """Tasks and their pixel work run in SLURM jobs; the jobs report to the flow's Prefect
    API (no worker starts a server of its own) and are cancelled when the flow ends."""
    block = DaskCluster(
        kind="slurm",
        partition=slurm.partition,
        cores=1,
        memory="1GB",
        walltime="00:10:00",
        scheduler_host="127.0.0.1",
        log_directory=str(tmp_path),
        local_directory=str(tmp_path / "scratch"),
    )
    runner = task_runner_for("slurm", block)
    t0 = time.monotonic()
    state = slurm_sums.with_options(task_runner=runner)(2000, return_state=True)
    seconds = time.monotonic() - t0
    print(f"\nflow on the SLURM runner: {seconds:.1f} s")
    direct, submitted = state.result()

    expected = int(np.arange(2000).sum())
    assert direct["sum"] == submitted["sum"] == expected
    # the directly called task ran in the flow process, not in a job ...
    assert direct["task_job"] is None
    # ... but its pixels were computed by the SLURM worker, as were the submitted task's
    (job,) = direct["block_jobs"]
    assert job.isdigit()
    assert submitted["task_job"] == job
    assert submitted["block_jobs"] == {job}
    worker_log = _wait_for(tmp_path / f"stac2cube-dask-{job}.err")
    assert "Starting temporary server" not in worker_log

    runs = _final_task_runs(state.state_details.flow_run_id, expected=2)
    assert len(runs) == 2
    assert all(r.state.is_completed() for r in runs)
    _wait_no_jobs(slurm)


def _final_task_runs(flow_run_id, expected: int, timeout: float = 60.0):
    """The flow run's task runs once ``expected`` of them are recorded, each in a final state.

    Task runs and their states reach the API as events that the server records
    asynchronously, so a read right after the flow returns may find none yet, or RUNNING.
    """
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = len(runs) >= expected and all(r.state.is_final() for r in runs)
            if done or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


EMBEDDED_SCRIPT = """
import json, os, sys, time

import dask.array as da
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

from stac2cube.blocks import DaskCluster
from stac2cube.flows.runner import pixel_client, shared_prefect_api, task_runner_for


@task
def on_worker():
    with pixel_client():
        total = int(da.arange(100, chunks=10).sum().compute())
    return {"sum": total, "job": os.environ.get("SLURM_JOB_ID"),
            "api": os.environ.get("PREFECT_API_URL")}


@flow
def embedded():
    return on_worker.submit().result()


if __name__ == "__main__":
    block = DaskCluster(kind="slurm", partition=sys.argv[1], cores=1, memory="1GB",
                        walltime="00:10:00", scheduler_host="127.0.0.1", log_directory=sys.argv[2])
    before = PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
    with shared_prefect_api() as url:
        heartbeat = PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
        state = embedded.with_options(task_runner=task_runner_for("slurm", block))(
            return_state=True)
        # task-run states reach the API as events, recorded asynchronously: wait for the last one
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while True:
                runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
                done = runs and all(r.state.is_final() for r in runs)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    print("RESULT", json.dumps({"url": url, "result": state.result(), "heartbeat": heartbeat,
                                "heartbeat_before": before,
                                "heartbeat_after": PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value(),
                                "task_runs": [r.state.type.value for r in runs]}))
"""


def test_embedded_mode_workers_share_the_flow_api(slurm, tmp_path):
    """No Prefect server configured (the CLI's default): inside ``shared_prefect_api`` the SLURM
    workers report to the flow process's embedded API instead of each starting their own."""
    script = tmp_path / "embedded.py"
    script.write_text(EMBEDDED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    logs = tmp_path / "logs"
    out = subprocess.run(
        [sys.executable, str(script), slurm.partition, str(logs)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    assert report["url"].startswith("http://127.0.0.1:")
    assert report["result"]["sum"] == 4950
    assert report["result"]["job"].isdigit()
    assert report["result"]["api"] == report["url"]
    assert report["task_runs"] == ["COMPLETED"]
    # heartbeats are off for the temporary server's runs only
    assert report["heartbeat"] is None
    assert report["heartbeat_before"] == report["heartbeat_after"] is not None
    worker_log = _wait_for(logs / f"stac2cube-dask-{report['result']['job']}.err")
    assert "Starting temporary server" not in worker_log
    _wait_no_jobs(slurm)


def test_stop_leaves_nothing_behind(tmp_path):
    """A separate SLURM with a running job: stop() cancels it and every process is gone."""
    require(slurm_missing() is None, f"no local SLURM: {slurm_missing()}")
    other = start_local_slurm(cpus=1, mem_mb=1000)
    daemons = [p.pid for p in other._procs.values()]
    out = tmp_path / "sleep.out"
    sub = other.run("sbatch", "--parsable", "-o", str(out), "--wrap", "echo started; sleep 600")
    assert sub.returncode == 0, sub.stderr
    _wait_for(out)
    conf = str(other.conf)
    assert _processes_with_conf(conf), "the job's processes should be visible"
    other.stop()
    other.stop()  # idempotent
    assert not other.base_dir.exists()
    assert not [p for p in daemons if Path(f"/proc/{p}").exists() and not _zombie(p)]
    assert not _processes_with_conf(conf)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _processes_with_conf(conf: str) -> list[int]:
    marker = f"SLURM_CONF={conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in env and any(v.startswith(b"SLURM_JOB_ID=") for v in env):
            found.append(int(entry.name))
    return found


def test_missing_slurm_is_reported(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("stac2cube.testing.slurm._search_path", lambda: "/nonexistent")
    assert "slurmctld" in (slurm_missing() or "")
    with pytest.raises(Exception, match="not found"):
        start_local_slurm()


def test_sbatch_outside_activation_needs_slurm_conf(slurm):
    """Clients find this cluster only through SLURM_CONF (nothing is written to /etc).

    Without SLURM_CONF a client reads the system's ``/etc/slurm/slurm.conf``: where there is
    none it fails, where the machine has a SLURM of its own it must reach that one, not ours.
    """
    system_conf = Path("/etc/slurm/slurm.conf")
    assert not (system_conf.exists() and str(slurm.base_dir) in system_conf.read_text())
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    out = subprocess.run(
        ["scontrol", "show", "config"],
        env={**env, "PATH": slurm.env()["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 or str(slurm.conf) not in out.stdout
    ours = subprocess.run(
        ["scontrol", "show", "config"], env={**env, **slurm.env()}, capture_output=True, text=True
    )
    assert ours.returncode == 0 and str(slurm.conf) in ours.stdout


@pytest.mark.integration
def test_slurm_job_rebuilds_a_cube_from_its_settings_file(slurm, stac_url, tmp_path):
    """The settings JSON beside a cube is all a batch job script needs."""
    import shutil

    from prefect.settings import PREFECT_API_URL

    from stac2cube import get_stac_layers, open_cube
    from stac2cube.settings import sidecar_path
    from stac2cube.testing.synthetic import demo_bbox

    store = tmp_path / "job.icechunk"
    get_stac_layers(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01", end="2024-01-12",
        catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04"], store=str(store),
    )  # fmt: skip
    want = open_cube(store).load()
    shutil.rmtree(store)
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"export PREFECT_API_URL={PREFECT_API_URL.value()}\n"
        f"{sys.executable} -m stac2cube.cli build --runner local "
        f"--settings {sidecar_path(store, '.settings.json')}\n"
    )
    sub = slurm.run("sbatch", "--parsable", "-o", str(out), str(script))
    assert sub.returncode == 0, sub.stderr
    _wait_no_jobs(slurm, timeout=300)
    text = out.read_text()
    assert "+2 time steps" in text, text
    got = open_cube(store).load()
    assert list(got.time.values) == list(want.time.values)
    np.testing.assert_array_equal(got.B04.values, want.B04.values)
