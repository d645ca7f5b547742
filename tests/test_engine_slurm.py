"""A cube built with SLURM jobs as Dask workers (a real single-node SLURM) equals the cube built
locally, stored value for value: the workers write the chunks they compute through copies of
the run's forked session, the flow merges their change sets and commits once.

Locally these tests skip where SLURM is not installed (or not root); with ``CI=true`` they fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

from stac2cube.blocks import DaskCluster
from stac2cube.flows.runner import task_runner_for
from stac2cube.testing.slurm import slurm_missing, start_local_slurm

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def slurm():
    missing = slurm_missing()
    require(missing is None, f"no local SLURM: {missing}")
    cluster = start_local_slurm(cpus=4)
    try:
        with cluster.activated():
            yield cluster
    finally:
        cluster.stop()


def test_slurm_build_equals_local_build(slurm, stac_url, tmp_path, monkeypatch):
    import stac2cube.store as store
    from stac2cube import get_stac_layers
    from stac2cube.testing.synthetic import demo_bbox

    def refuse(*args, **kwargs):
        raise AssertionError("a batch was computed into the flow process")

    args = dict(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01",
        end="2024-01-31", catalog=stac_url, collection="sentinel-2-c1-l2a",
        bands=["B04", "B08", "SCL"], indices=["NDVI"], batch_size=1,
    )  # fmt: skip
    get_stac_layers(**args, store=str(tmp_path / "local.icechunk"))
    block = DaskCluster(
        kind="slurm", partition=slurm.partition, cores=1, memory="1GB", walltime="00:10:00",
        scheduler_host="127.0.0.1", log_directory=str(tmp_path),
        local_directory=str(tmp_path / "scratch"),
    )  # fmt: skip
    monkeypatch.setattr(store, "_put_computed", refuse)  # the SLURM workers write
    on_slurm = get_stac_layers.with_options(task_runner=task_runner_for("slurm", block))
    summary = on_slurm(**args, store=str(tmp_path / "slurm.icechunk"))
    assert summary["added_time_steps"] >= 3  # several batches: appends through one fork
    assert len(store.history(tmp_path / "slurm.icechunk")) == 2  # one commit (+ the initial)
    got = store.open_cube(tmp_path / "slurm.icechunk", decode=False).load()
    want = store.open_cube(tmp_path / "local.icechunk", decode=False).load()
    assert set(got.variables) == set(want.variables)
    for name in want.variables:
        assert got[name].dtype == want[name].dtype, name
        if want[name].dtype.kind in "fiub":
            np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
        else:
            assert list(got[name].values.ravel()) == list(want[name].values.ravel()), name
