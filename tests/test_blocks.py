"""The Prefect Blocks: Prefect's standard block checks, registration, secrets, cluster settings."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from prefect import flow, get_run_logger
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import ValidationError

from stac2cube.blocks import CubeStore, DaskCluster, StacCatalog

BLOCKS = [StacCatalog, CubeStore, DaskCluster]
SECRET = "s3cr3t-" + uuid.uuid4().hex


def _prefect_logo_urls() -> set[str]:
    """The logo URLs of Prefect's own blocks and process worker (checked by Prefect's tests)."""
    import prefect.blocks.notifications
    import prefect.blocks.system
    import prefect.blocks.webhook
    import prefect.filesystems
    from prefect.workers.process import ProcessWorker

    del prefect  # only imported to register the subclasses
    urls = {str(ProcessWorker._logo_url)}
    todo = list(Block.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("prefect.") and cls._logo_url:
            urls.add(str(cls._logo_url))
    return urls


def _downloadable(url: str) -> bool:
    try:
        with urlopen(url, timeout=5):
            return True
    except (URLError, OSError):
        return False


class TestStandardSuite(BlockStandardTestSuite):
    """Prefect's ``BlockStandardTestSuite`` for every block of ``stac2cube.blocks``."""

    @pytest.fixture(params=BLOCKS, ids=lambda b: b.__name__)
    def block(self, request) -> type[Block]:
        return request.param

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """The suite's own check downloads the logo; offline (this machine, CI) the logo must
        be one of the logos Prefect ships for its own blocks, which Prefect's suite checks."""
        if _downloadable(str(block._logo_url)):
            super().test_has_a_valid_image(block)
        else:
            assert str(block._logo_url) in _prefect_logo_urls()


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_slugs_are_stable(block):
    assert block.get_block_type_slug() in {"stac-catalog", "cube-store", "dask-cluster"}


def test_prefect_block_register_registers_all_three():
    """``prefect block register -m stac2cube.blocks`` against the session's Prefect API."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect_cli = Path(sys.executable).with_name("prefect")
    out = subprocess.run(
        [str(prefect_cli), "block", "register", "-m", "stac2cube.blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    with get_client(sync_client=True) as client:
        for block in BLOCKS:
            block_type = client.read_block_type_by_slug(block.get_block_type_slug())
            assert block_type.name == block.get_block_type_name()
            schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
            assert set(schema.fields["properties"]) >= set(block.model_fields)


# -- StacCatalog ----------------------------------------------------------------------------


def test_known_catalog_fills_its_url():
    catalog = StacCatalog(kind="planetary-computer")
    assert catalog.url == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert catalog.catalog_arg() == "planetary-computer"
    assert catalog.spec().sign_urls


def test_custom_catalog_needs_an_http_url():
    assert StacCatalog(kind="custom", url="http://127.0.0.1:8082/").catalog_arg() == (
        "http://127.0.0.1:8082"
    )
    with pytest.raises(ValidationError, match="needs its url"):
        StacCatalog(kind="custom")
    with pytest.raises(ValidationError, match="unknown catalog"):
        StacCatalog(kind="custom", url="ftp://example.com")
    with pytest.raises(ValidationError):
        StacCatalog(kind="google-earth-engine")


def test_key_goes_only_into_request_headers():
    assert StacCatalog().request_headers() == {}
    assert StacCatalog().secret_key() is None
    pc = StacCatalog(kind="planetary-computer", api_key=SECRET)
    assert pc.secret_key() == SECRET
    assert pc.request_headers() == {"Ocp-Apim-Subscription-Key": SECRET}
    custom = StacCatalog(kind="custom", url="https://stac.example.com", api_key=SECRET)
    assert custom.request_headers() == {"Authorization": f"Bearer {SECRET}"}


def test_secret_never_in_repr_str_or_dumps():
    catalog = StacCatalog(kind="planetary-computer", api_key=SECRET)
    texts = [
        repr(catalog),
        str(catalog),
        str(catalog.model_dump()),
        catalog.model_dump_json(),
        str(catalog.model_dump(mode="json")),
        str(dict(catalog)),
        str(catalog.model_dump(mode="json", context={"include_secrets": False})),
    ]
    for text in texts:
        assert SECRET not in text
    assert "**********" in catalog.model_dump_json()


def test_secret_never_in_run_logs_and_hidden_by_the_api():
    """Logged from a flow, the block shows masked; saved, the API returns it masked unless
    secrets are asked for; loaded back, it still works."""
    name = f"pc-{uuid.uuid4().hex[:8]}"
    StacCatalog(kind="planetary-computer", api_key=SECRET).save(name)

    @flow(log_prints=True)
    def uses_catalog(block_name: str) -> str:
        catalog = StacCatalog.load(block_name)
        get_run_logger().info("searching %r with %s", catalog, catalog.model_dump())
        print(catalog)
        return catalog.catalog_arg()

    state = uses_catalog(name, return_state=True)
    assert state.result() == "planetary-computer"
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id={"any_": [state.state_details.flow_run_id]}))
        assert any("searching" in log.message for log in logs)
        assert any("StacCatalog(" in log.message for log in logs if "searching" not in log.message)
        assert not any(SECRET in log.message for log in logs)
        hidden = client.read_block_document_by_name(name, "stac-catalog", include_secrets=False)
        assert SECRET not in str(hidden.data)
        shown = client.read_block_document_by_name(name, "stac-catalog", include_secrets=True)
        assert shown.data["api_key"] == SECRET
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
        assert SECRET not in str(runs[0].parameters)
    loaded = StacCatalog.load(name)
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == SECRET


# -- CubeStore ------------------------------------------------------------------------------


def test_cube_store_path(tmp_path):
    assert CubeStore(path="file:///data/a.icechunk").path == "/data/a.icechunk"
    assert CubeStore(path="~/a.icechunk").path == str(Path.home() / "a.icechunk")
    with pytest.raises(ValidationError, match="file system paths"):
        CubeStore(path="s3://bucket/a.icechunk")
    with pytest.raises(ValidationError, match="empty"):
        CubeStore(path=" ")
    store = CubeStore(path=str(tmp_path / "none.icechunk"))
    assert not store.exists()


def test_cube_store_round_trip_through_the_api():
    name = f"cube-{uuid.uuid4().hex[:8]}"
    CubeStore(path="/data/cubes/munich.icechunk").save(name)
    assert CubeStore.load(name).path == "/data/cubes/munich.icechunk"


# -- DaskCluster ----------------------------------------------------------------------------


def test_local_cluster_kwargs():
    block = DaskCluster(n_workers=2, threads_per_worker=3)
    assert block.cluster_class() == "distributed.LocalCluster"
    assert block.cluster_kwargs() == {
        "n_workers": 2,
        "threads_per_worker": 3,
        "processes": False,
        "dashboard_address": ":0",
    }
    assert block.adapt_kwargs() is None


def test_slurm_kwargs_make_the_job_script(tmp_path):
    """dask-jobqueue turns the block's settings into the ``#SBATCH`` lines a user expects."""
    from dask_jobqueue import SLURMCluster

    block = DaskCluster(
        kind="slurm",
        partition="hpda2_compute",
        account="pn39sa",
        cores=8,
        memory="30GB",
        processes=2,
        walltime="02:30:00",
        job_extra_directives=["--qos=normal", "--cluster=hpda2"],
        job_script_prologue=["module load slurm_setup"],
        scheduler_host="127.0.0.1",
        log_directory=str(tmp_path),
        min_jobs=0,
        max_jobs=4,
    )
    kwargs = block.cluster_kwargs()
    assert kwargs["python"] == sys.executable
    assert kwargs["scheduler_options"] == {"dashboard_address": ":0", "host": "127.0.0.1"}
    assert block.adapt_kwargs() == {"minimum_jobs": 0, "maximum_jobs": 4}
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p hpda2_compute",
        "#SBATCH -A pn39sa",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=28G",
        "#SBATCH -t 02:30:00",
        "#SBATCH --qos=normal",
        "#SBATCH --cluster=hpda2",
        f"#SBATCH -o {tmp_path}/stac2cube-dask-%J.out",
        "module load slurm_setup",
        "--nworkers 2",
        "--nthreads 4",
    ):
        assert line in script, f"{line!r} not in\n{script}"
    assert sys.executable in script


def test_cluster_settings_are_validated():
    with pytest.raises(ValidationError, match="walltime"):
        DaskCluster(walltime="2 hours")
    with pytest.raises(ValidationError, match="memory"):
        DaskCluster(memory="lots")
    with pytest.raises(ValidationError, match="max_jobs"):
        DaskCluster(min_jobs=3, max_jobs=2)
    with pytest.raises(ValidationError, match="processes"):
        DaskCluster(cores=2, processes=4)
    with pytest.raises(ValidationError):
        DaskCluster(kind="kubernetes")
    assert DaskCluster(walltime="1-00:00:00").walltime == "1-00:00:00"
