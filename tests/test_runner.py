"""Task-runner selection and where pixel work runs (local Dask, a scheduler address); run reports.

The SLURM runner is exercised against a real SLURM in ``test_slurm.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect_dask import DaskTaskRunner

from stac2cube.blocks import DaskCluster
from stac2cube.errors import InvalidRequestError
from stac2cube.flows.report import (
    ProgressArtifact,
    artifact_key,
    percent_done,
    publish_build_report,
    redact_url,
    report_markdown,
    time_step_rows,
)
from stac2cube.flows.runner import (
    AutoDaskTaskRunner,
    pixel_client,
    resolve_runner,
    task_runner_for,
)

# -- resolve_runner / task_runner_for -------------------------------------------------------


@pytest.mark.parametrize(
    ("runner", "environ", "expected"),
    [
        ("auto", {}, "threads"),
        ("auto", {"SLURM_JOB_ID": "4711"}, "slurm"),
        ("auto", {"SLURM_JOB_ID": ""}, "threads"),
        ("local", {"SLURM_JOB_ID": "4711"}, "local"),
        ("threads", {"SLURM_JOB_ID": "4711"}, "threads"),
        ("slurm", {}, "slurm"),
        (" slurm ", {}, "slurm"),
        ("tcp://127.0.0.1:8786", {}, "tcp://127.0.0.1:8786"),
        ("tls://scheduler.hpc:8786", {}, "tls://scheduler.hpc:8786"),
    ],
)
def test_resolve_runner(runner, environ, expected):
    assert resolve_runner(runner, environ) == expected


def test_resolve_runner_auto_reads_os_environ(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert resolve_runner("auto") == "slurm"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert resolve_runner("auto") == "threads"


@pytest.mark.parametrize(
    "runner", ["", "kubernetes", "tcp://", "tcp://host", "http://127.0.0.1:8786", "tcp://h:x"]
)
def test_resolve_runner_rejects(runner):
    with pytest.raises(InvalidRequestError, match="unknown runner"):
        resolve_runner(runner, {})


def test_task_runner_for_each_kind():
    local = task_runner_for("local", DaskCluster(n_workers=2, threads_per_worker=1))
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_class == "distributed.LocalCluster"
    assert local.cluster_kwargs == {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": False,
        "dashboard_address": ":0",
    }
    assert not local.adapt_kwargs

    block = DaskCluster(kind="local", partition="debug", cores=2, memory="2GB", max_jobs=3)
    slurm = task_runner_for("auto", block, environ={"SLURM_JOB_ID": "1"})
    assert slurm.cluster_class == "dask_jobqueue.SLURMCluster"
    assert slurm.cluster_kwargs["queue"] == "debug"
    assert slurm.cluster_kwargs["cores"] == 2
    assert slurm.adapt_kwargs == {"minimum_jobs": 1, "maximum_jobs": 3}

    remote = task_runner_for("tcp://10.0.0.5:8786")
    assert remote.address == "tcp://10.0.0.5:8786"
    assert remote.cluster_class is None

    from prefect.task_runners import ThreadPoolTaskRunner

    default = task_runner_for("auto", environ={})  # no cluster: Prefect's threads, dask's
    assert isinstance(default, ThreadPoolTaskRunner)
    named = task_runner_for("auto", DaskCluster(n_workers=2), environ={})  # a block: its cluster
    assert named.cluster_class == "distributed.LocalCluster"
    assert named.cluster_kwargs["n_workers"] == 2


# -- where pixel work runs -----------------------------------------------------------------


def _worker_of_block(block: np.ndarray) -> np.ndarray:
    """Address of the Dask worker computing this block, or "no-worker"."""
    from distributed import get_worker

    try:
        where = get_worker().address
    except ValueError:
        where = "no-worker"
    return np.array([where], dtype=object)


@task
def pixel_sum(n: int) -> dict:
    """A dask array sum inside ``pixel_client``, and where its blocks were computed."""
    import dask.array as da

    arr = da.arange(n, chunks=max(n // 8, 1))
    with pixel_client() as client:
        total = int(arr.sum().compute())
        workers = set(arr.map_blocks(_worker_of_block, dtype=object, chunks=(1,)).compute())
    n_workers = len(client.scheduler_info()["workers"]) if client is not None else 0
    return {"sum": total, "workers": workers, "client": client is not None, "n_workers": n_workers}


@flow
def sums(n: int) -> tuple[dict, dict]:
    return pixel_sum(n), pixel_sum.submit(n).result()


def test_local_runner_computes_on_its_workers():
    """Submitted or called directly, the task's dask blocks run on the runner's workers; a
    single-threaded worker does not deadlock on the task that waits for its own pixels."""
    runner = task_runner_for("local", DaskCluster(n_workers=1, threads_per_worker=1))
    direct, submitted = sums.with_options(task_runner=runner)(1000)
    for result in (direct, submitted):
        assert result["sum"] == int(np.arange(1000).sum())
        assert result["client"]
        assert len(result["workers"]) == 1
        assert next(iter(result["workers"])).startswith("inproc://")


def test_threads_runner_computes_in_this_process_without_a_cluster():
    """``threads``: Prefect's thread pool, no Dask cluster; the pixels are computed by dask's
    threaded scheduler in the flow's process (no distributed worker)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = task_runner_for("threads")
    assert isinstance(runner, ThreadPoolTaskRunner)
    direct, submitted = sums.with_options(task_runner=runner)(1000)
    for result in (direct, submitted):
        assert result["sum"] == int(np.arange(1000).sum())
        assert not result["client"]
        assert result["workers"] == {"no-worker"}


def test_address_runner_uses_the_running_scheduler():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        runner = task_runner_for(cluster.scheduler_address)
        direct, submitted = sums.with_options(task_runner=runner)(4000)
        workers = set(cluster.scheduler_info["workers"])
    for result in (direct, submitted):
        assert result["sum"] == int(np.arange(4000).sum())
        assert result["workers"] <= workers


def test_auto_runner_is_chosen_when_the_run_starts(monkeypatch):
    """One flow definition; each run takes the runner and cluster block the environment names."""
    import uuid

    from distributed import LocalCluster

    @flow(task_runner=AutoDaskTaskRunner())
    def auto_sums(n: int) -> tuple[dict, dict]:
        return pixel_sum(n), pixel_sum.submit(n).result()

    name = f"two-workers-{uuid.uuid4().hex[:6]}"
    DaskCluster(n_workers=2, threads_per_worker=1).save(name)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("STAC2CUBE_DASK_CLUSTER", name)
    for result in auto_sums(800):  # auto + a named block -> local, with its two workers
        assert result["sum"] == int(np.arange(800).sum())
        assert result["n_workers"] == 2
        assert all(w.startswith("inproc://") for w in result["workers"])

    monkeypatch.delenv("STAC2CUBE_DASK_CLUSTER")
    for result in auto_sums(800):  # auto, no block -> threads: no Dask client, no workers
        assert result == {"sum": int(np.arange(800).sum()), "workers": {"no-worker"},
                          "client": False, "n_workers": 0}  # fmt: skip

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        monkeypatch.setenv("STAC2CUBE_RUNNER", cluster.scheduler_address)
        for result in auto_sums(800):
            assert result["workers"] <= set(cluster.scheduler_info["workers"])
            assert result["n_workers"] == 1

    assert AutoDaskTaskRunner("slurm", environ={}).resolve().cluster_class == (
        "dask_jobqueue.SLURMCluster"
    )
    with pytest.raises(RuntimeError, match="resolved when a flow run starts"):
        AutoDaskTaskRunner().submit(pixel_sum, {})


def test_pixel_client_is_a_no_op_without_a_dask_runner():
    @flow
    def plain() -> dict:
        return pixel_sum(100)

    result = plain()
    assert result == {"sum": 4950, "workers": {"no-worker"}, "client": False, "n_workers": 0}
    with pixel_client() as client:  # no flow at all
        assert client is None


# -- run reports ----------------------------------------------------------------------------

SUMMARY = {
    "store": "/data/cubes/Munich 2024.icechunk",
    "snapshot": "WT8CYJGR833GRV0BPZ80",
    "added_time_steps": 2,
    "replaced_time_steps": 1,
    "time_steps": 3,
    "scenes": 4,
}
INFO = {
    "store": "/data/cubes/Munich 2024.icechunk",
    "mission": "sentinel-2-l2a",
    "catalog": "https://user:token@stac.example.com/api?key=abc",
    "collection": "sentinel-2-c1-l2a",
    "crs": "EPSG:32632",
    "resolution": 10.0,
    "bounds": [690240.0, 5338090.0, 691960.0, 5339700.0],
    "shape": {"time": 3, "y": 161, "x": 172},
    "bands": ["B04", "B08"],
    "time_range": ["2024-01-05T10:30:21", "2024-01-25T10:30:21"],
    "time_steps": [
        {"time": "2024-01-05T10:30:21", "scenes": 2, "rules": ["s2-offset-1000"]},
        {"time": "2024-01-10T10:30:21", "scenes": 1, "rules": ["s2-offset-1000"]},
        {
            "time": "2024-01-25T10:30:21",
            "scenes": 1,
            "rules": ["s2-offset-1000"],
            "cloud_fraction": 0.25,
        },
    ],
    "stac2cube_version": "0.1.0",
}


def test_report_markdown_names_changes_grid_and_steps():
    md = report_markdown(SUMMARY, INFO)
    assert "Committed snapshot `WT8CYJGR833GRV0BPZ80`" in md
    assert "| time steps added | 2 |" in md
    assert "| time steps replaced (reprocessed scenes) | 1 |" in md
    assert "| grid | EPSG:32632, 10 m, 172 x 161 px |" in md
    assert "| time range | 2024-01-05T10:30:21 .. 2024-01-25T10:30:21 |" in md
    assert "| 2024-01-25T10:30:21 | 1 | s2-offset-1000 | 25% |" in md
    assert "| 2024-01-05T10:30:21 | 2 | s2-offset-1000 | - |" in md
    # credentials in the catalog URL never reach the report
    assert "token" not in md and "abc" not in md
    assert "https://stac.example.com/api" in md


def test_report_nothing_new_and_no_cube():
    md = report_markdown({**SUMMARY, "snapshot": None, "added_time_steps": 0}, None)
    assert "**Nothing new**" in md
    assert "grid" not in md
    assert time_step_rows(None) == []


def test_report_helpers():
    assert artifact_key(SUMMARY["store"], "report") == "cube-munich-2024-report"
    assert artifact_key("cube.icechunk/", "time-steps") == "cube-cube-time-steps"
    assert redact_url("http://127.0.0.1:8082") == "http://127.0.0.1:8082"
    assert redact_url(None) is None
    assert [r["cloud_fraction"] for r in time_step_rows(INFO)] == [None, None, 0.25]


def test_progress_artifact_reaches_100_percent():
    assert percent_done(0, 0) == 100.0
    assert percent_done(9, 8) == 100.0
    assert percent_done(1, 3) == 33.3

    @flow
    def long_run() -> list[float]:
        progress = ProgressArtifact("/x/progress-demo.icechunk", total=4)
        return [progress.update(1), progress.update(4)]

    assert long_run() == [25.0, 100.0]
    artifact = _read_artifact("cube-progress-demo-progress")
    assert artifact.type == "progress"
    assert float(artifact.data) == 100.0


def _read_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


@pytest.mark.integration
def test_build_report_artifacts_from_a_real_cube(stac_url, store_path):
    """Build a cube from the local STAC API, publish its report in a flow, read it back."""
    from stac2cube import cube_info, get_stac_layers
    from stac2cube.testing.synthetic import demo_bbox

    summary = get_stac_layers(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end="2024-01-31",
        catalog=stac_url,
        collection="sentinel-2-c1-l2a",
        bands=["red", "green", "blue"],
        store=str(store_path),
    )

    @flow
    def report(summary: dict) -> dict:
        return publish_build_report(summary)

    state = report(summary, return_state=True)
    ids = state.result()
    info = cube_info(store_path)
    md = _read_artifact(artifact_key(str(store_path), "report"))
    assert md.id == ids["markdown"]
    assert md.type == "markdown"
    assert md.flow_run_id == state.state_details.flow_run_id
    assert f"Committed snapshot `{summary['snapshot']}`" in md.data
    assert f"| time steps in the cube | {len(info['time_steps'])} |" in md.data
    assert f"| bands | {', '.join(info['bands'])} |" in md.data
    table = _read_artifact(artifact_key(str(store_path), "time-steps"))
    assert table.type == "table"
    import json

    rows = json.loads(table.data)
    assert [r["time"] for r in rows] == [s["time"] for s in info["time_steps"]]
    assert [r["scenes"] for r in rows] == [s["scenes"] for s in info["time_steps"]]

    # the quicklook shows the newest time step: opaque exactly where it has data
    import base64
    import io

    from PIL import Image

    from stac2cube import open_cube

    image = _read_artifact(artifact_key(str(store_path), "quicklook"))
    # markdown with the picture inline (an image artifact prints its data: URL as text)
    assert image.type == "markdown" and image.id == ids["quicklook"]
    prefix = "data:image/png;base64,"
    data = image.data.split(prefix, 1)[1].split(")", 1)[0]
    png = Image.open(io.BytesIO(base64.b64decode(data)))
    newest = open_cube(store_path).isel(time=-1)
    assert png.mode == "RGBA" and png.size == (newest.sizes["x"], newest.sizes["y"])
    valid = np.isfinite(newest.B04.values) & np.isfinite(newest.B03.values)
    valid &= np.isfinite(newest.B02.values)
    assert valid.any() and not valid.all()  # the synthetic scenes have a nodata strip
    np.testing.assert_array_equal(np.asarray(png)[..., 3] == 255, valid)


@pytest.mark.integration
def test_a_cube_built_on_threads_equals_the_local_cluster_build(stac_url, tmp_path):
    """``--runner threads`` (no Dask cluster) and the default ``LocalCluster``: the same cube,
    value for value, every variable and coordinate."""
    from stac2cube import get_stac_layers, open_cube
    from stac2cube.testing.synthetic import demo_bbox

    args = dict(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01", end="2024-01-31",
        catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04", "B08", "SCL"],
        indices=["NDVI"], batch_size=2,
    )  # fmt: skip
    stores = {}
    for name in ("local", "threads"):
        stores[name] = tmp_path / f"{name}.icechunk"
        flow = get_stac_layers.with_options(task_runner=task_runner_for(name))
        flow(**args, store=str(stores[name]))
    got = open_cube(stores["threads"], decode=False).load()
    want = open_cube(stores["local"], decode=False).load()
    assert got.sizes["time"] == want.sizes["time"] >= 3
    assert set(got.variables) == set(want.variables)
    for name in want.variables:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
