"""The settings JSON beside a cube re-runs its build: from the CLI, and as flow parameters."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_cli import bbox_args, cli_env, run  # noqa: F401  (cli_env is a fixture)

from stac2cube import get_stac_layers, open_cube
from stac2cube.errors import InvalidRequestError
from stac2cube.settings import read_settings, sidecar_path
from stac2cube.testing.synthetic import demo_bbox

pytestmark = pytest.mark.integration


def test_settings_file_rebuilds_the_same_cube(cli_env, stac_url, tmp_path):  # noqa: F811
    store = tmp_path / "s.icechunk"
    args = [
        "build",
        "--mission", "sentinel-2-l2a", *bbox_args(),
        "--catalog", stac_url, "--collection", "sentinel-2-c1-l2a",
        "--bands", "red", "SCL",
        "--start", "2024-01-01", "--end", "2024-01-20",
        "--season", "1-1", "--max-cloud", "90",
        "--store", str(store),
    ]  # fmt: skip
    proc = run(cli_env, *args)
    assert proc.returncode == 0, proc.stderr
    path = sidecar_path(store, ".settings.json")
    assert path == tmp_path / "s.settings.json" and path.is_file()
    document = json.loads(path.read_text())
    params = document["parameters"]
    assert params["catalog"] == stac_url and params["bands"] == ["B04", "SCL"]
    assert params["season"] == "1" and params["max_cloud"] == 90
    assert params["start"] == "2024-01-01" and params["end"] == "2024-01-20"
    assert params["crs"] == "EPSG:32632" and params["resolution"] == 10.0
    first = open_cube(store).load()

    shutil.rmtree(store)
    proc = run(cli_env, "build", "--settings", str(path))
    assert proc.returncode == 0, proc.stderr
    again = open_cube(store).load()
    assert list(again.time.values) == list(first.time.values)
    np.testing.assert_array_equal(again.B04.values, first.B04.values)
    np.testing.assert_array_equal(again.SCL.values, first.SCL.values)

    # the same file, a later end: the cube grows by the steps after 2024-01-20 (January only)
    proc = run(cli_env, "build", "--settings", str(path), "--end", "2024-02-28")
    assert proc.returncode == 0, proc.stderr
    grown = open_cube(store)
    days = [str(t)[:10] for t in grown.time.values]
    assert days[: first.sizes["time"]] == [str(t)[:10] for t in first.time.values]
    assert "2024-01-25" in days and not any(d.startswith("2024-02") for d in days)
    assert json.loads(path.read_text())["parameters"]["end"] == "2024-02-28"


def test_settings_parameters_run_the_flow_directly(stac_url, tmp_path):
    store = tmp_path / "p.icechunk"
    get_stac_layers(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01",
        end="2024-01-12", catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04"],
        store=str(store), statistics=False,
    )  # fmt: skip
    params = read_settings(sidecar_path(store, ".settings.json"))
    assert params["statistics"] is False
    copy = tmp_path / "copy.icechunk"
    params["store"] = str(copy)
    summary = get_stac_layers(**params)
    assert summary["time_steps"] == open_cube(store).sizes["time"]
    np.testing.assert_array_equal(open_cube(copy).B04.values, open_cube(store).B04.values)


def test_bad_settings_files_fail_clearly(cli_env, tmp_path):  # noqa: F811
    with pytest.raises(InvalidRequestError, match="settings file not found"):
        read_settings(tmp_path / "none.json")
    bad = tmp_path / "bad.settings.json"
    bad.write_text(json.dumps({"parameters": {"mission": "sentinel-2-l2a", "colour": "red"}}))
    with pytest.raises(InvalidRequestError, match=r"unknown parameter\(s\) \['colour'\]"):
        read_settings(bad)
    (tmp_path / "junk.json").write_text("{not json")
    proc = run(cli_env, "build", "--settings", str(tmp_path / "junk.json"))
    assert proc.returncode == 2 and "is not JSON" in proc.stderr
    proc = run(cli_env, "build", "--mission", "sentinel-2-l2a", "--store", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert "--bbox or --aoi" in proc.stderr and "--start or --dates" in proc.stderr


def test_cube_from_settings_creates_then_extends(stac_url, tmp_path):
    from stac2cube.flows.update import cube_from_settings

    store = tmp_path / "n.icechunk"
    get_stac_layers(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01", end="2024-01-06",
        catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04"], store=str(store),
    )  # fmt: skip
    path = sidecar_path(store, ".settings.json")
    shutil.rmtree(store)
    created = cube_from_settings(str(path), end="2024-01-12")
    assert [str(t)[:10] for t in open_cube(store).time.values] == ["2024-01-05", "2024-01-10"]
    assert created["added_time_steps"] == 2
    extended = cube_from_settings(str(path), end="2024-01-31", lookback_days=0)
    assert extended["added_time_steps"] == 2  # 2024-01-15 and 2024-01-25
    assert [str(t)[:10] for t in open_cube(store).time.values] == [
        "2024-01-05", "2024-01-10", "2024-01-15", "2024-01-25",
    ]  # fmt: skip
