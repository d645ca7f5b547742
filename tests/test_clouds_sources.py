"""Cloud layers: L1C from a requester-pays S3 bucket (moto's S3 server on 127.0.0.1, read by
GDAL), and the one-line errors that leave the store untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import small_bbox
from test_clouds import build, cloud_catalog, expected_prob, layers  # noqa: F401 (fixture)

from stac2cube import get_cloud_layers, get_stac_layers
from stac2cube.clouds import CloudLayerError
from stac2cube.cube import Cube

pytestmark = pytest.mark.integration

RP_COLLECTION = "clouds-s2-l1c-rp"
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN",
            "AWS_WEB_IDENTITY_TOKEN_FILE")  # fmt: skip


@pytest.fixture(scope="module")
def local_s3(stac_api, cloud_catalog):  # noqa: F811
    """The L1C granules in the requester-pays bucket of a local S3 server, as a collection."""
    from stac2cube.testing.clouds import serve_requester_pays, start_local_s3
    from stac2cube.testing.synthetic_missions import make_mission_collection

    s3 = start_local_s3()
    items = serve_requester_pays(s3, cloud_catalog.l1c_items, RP_COLLECTION)
    stac_api.load_collections(
        [make_mission_collection("earth-search", RP_COLLECTION, "sentinel-2-l1c", items)]
    )
    stac_api.load_items(items)
    yield s3
    s3.stop()


@pytest.fixture(scope="module")
def one_step(stac_api, cloud_catalog, tmp_path_factory):  # noqa: F811
    """A cube of one step (2024-01-05: three L1C granules, baseline 05.10), no layers yet."""
    store = tmp_path_factory.mktemp("clouds-one-step") / "one.icechunk"
    build(stac_api.url, cloud_catalog, store, start="2024-01-05", end="2024-01-05")
    return store


def test_requester_pays_l1c_from_local_s3(
    one_step,
    cloud_catalog,  # noqa: F811
    local_s3,
    tmp_path,
    monkeypatch,
):
    store = tmp_path / "rp.icechunk"
    shutil.copytree(one_step, store)
    for key in AWS_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in local_s3.gdal_env().items():
        monkeypatch.setenv(key, value)
    summary = get_cloud_layers(str(store), collection=RP_COLLECTION, cloud_resolution=10)
    assert summary["computed_time_steps"] == 1
    got = layers(store)
    ids = str(got.l1c_item_ids.values[0]).split(",")
    assert len(ids) == 3 and all(i.endswith("_RP") for i in ids)
    local = [cloud_catalog.item(i.removesuffix("_RP")) for i in ids]  # the same files
    want = expected_prob(local, got.x.values, got.y.values)
    prob = got.cloud_prob.values[0]
    assert np.array_equal(np.isnan(prob), np.isnan(want))
    ok = np.isfinite(want)
    assert ok.sum() > 1000 and np.abs(prob[ok] - want[ok]).max() <= 0.005 + 1e-6


def test_missing_aws_credentials_is_one_line_and_store_untouched(
    one_step, local_s3, tmp_path, monkeypatch
):
    store = tmp_path / "nocreds.icechunk"
    shutil.copytree(one_step, store)
    head = Cube(store).head()
    for key in AWS_KEYS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(CloudLayerError, match=r"requester-pays S3 bucket.*sentinel-s2-l1c"):
        get_cloud_layers(str(store), collection=RP_COLLECTION)
    assert Cube(store).head() == head


WRAPPER = "import sys; from stac2cube.cli import main; sys.exit(main(sys.argv[1:]))"


def run_cli(*args: str, env=None):
    return subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True,
                          text=True, timeout=300, env=env or dict(os.environ))  # fmt: skip


def one_error_line(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def l1c_cube(stac_api, cloud_catalog, tmp_path_factory):  # noqa: F811
    """A cube that is not Sentinel-2 L2A: Level-1C bands."""
    store = tmp_path_factory.mktemp("l1c-cube") / "l1c.icechunk"
    get_stac_layers(
        mission="sentinel-2-l1c", bbox=small_bbox(), start="2024-01-10", end="2024-01-10",
        catalog=stac_api.url, collection=cloud_catalog.l1c_collection, bands=["B04"],
        store=str(store),
    )  # fmt: skip
    return store


def test_bad_input_one_line_errors_store_untouched(one_step, l1c_cube, tmp_path):
    store = tmp_path / "bad.icechunk"
    shutil.copytree(one_step, store)
    head = Cube(store).head()
    one_error_line(
        run_cli("clouds", "--store", str(store), "--thresholds", "40", "120"),
        "threshold 120 is outside 0-100",
    )
    line = one_error_line(
        run_cli("clouds", "--store", str(store), "--catalog", "planetary-computer"),
        "planetary-computer has no Sentinel-2 L1C",
    )
    for alternative in ("earth-search", "terrabyte", "--mask-clouds", "csmask"):
        assert alternative in line
    one_error_line(
        run_cli("clouds", "--store", str(store), "--collection", "no-such-l1c"),
        "no collection 'no-such-l1c'",
    )
    assert Cube(store).head() == head
    l1c_head = Cube(l1c_cube).head()
    one_error_line(run_cli("clouds", "--store", str(l1c_cube)), "sentinel-2-l1c cube",
                   "Sentinel-2 L2A")  # fmt: skip
    assert Cube(l1c_cube).head() == l1c_head
    with pytest.raises(CloudLayerError, match="outside 0-100"):
        get_cloud_layers(str(store), thresholds=[-5])
    assert Cube(store).head() == head
