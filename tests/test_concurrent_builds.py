"""Two runs on one cube: the store lock covers the whole write, the files beside the cube
included, and a first build never finishes on top of a cube another run created meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tree_digest

from stac2cube import get_stac_layers
from stac2cube.errors import StoreError
from stac2cube.testing.synthetic import demo_bbox

pytestmark = pytest.mark.integration


def params(url: str, store: Path, **kw) -> dict:
    return {
        "mission": "sentinel-2-l2a",
        "bbox": list(demo_bbox()),
        "start": "2024-01-01",
        "end": "2024-01-12",
        "catalog": url,
        "collection": "sentinel-2-c1-l2a",
        "bands": ["B04"],
        "store": str(store),
        **kw,
    }


def beside(store: Path) -> dict[str, tuple[bytes, int]]:
    """The files beside the cube (settings, statistics, quicklook): bytes and mtime."""
    stem = store.name.removesuffix(".icechunk")
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in store.parent.iterdir()
        if p.is_file() and p.name.startswith(f"{stem}.")
    }


def leftovers(store: Path) -> list[Path]:
    return list(store.parent.glob(f".{store.name}.partial-*"))


def test_first_build_stops_when_another_run_created_the_cube(stac_url, tmp_path):
    """The second of two first builds, planned before the first one committed, fails with the
    one-line busy error before reading a pixel, and leaves no staging directory."""
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    from stac2cube.flows.build import execute_build, prepare_build
    from stac2cube.parameters import resolve_requests

    store = tmp_path / "race.icechunk"
    ((request, target),) = resolve_requests(params(stac_url, store)).values()
    # the two stages of the build flow, called one by one (their tasks log outside a flow run)
    with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        second = prepare_build(request, target)  # planned while there is no cube yet
        assert second.state is None and not second.plan.empty

        get_stac_layers(**params(stac_url, store))  # the first run commits meanwhile
        digest, files = tree_digest(store), beside(store)

        with pytest.raises(StoreError, match="another stac2cube run is writing") as err:
            execute_build(second)
    assert str(err.value).splitlines() == [str(err.value)]
    assert tree_digest(store) == digest
    assert beside(store) == files
    assert leftovers(store) == []


RUN = """
import json, sys
from stac2cube import get_stac_layers
from stac2cube.errors import Stac2CubeError
try:
    out = get_stac_layers(**json.loads(sys.argv[1]))
    print("RESULT " + json.dumps({"ok": True, "added": out["added_time_steps"]}))
except Stac2CubeError as exc:
    print("RESULT " + json.dumps({"ok": False, "error": str(exc)}))
"""


def test_two_first_builds_at_once(stac_url, tmp_path):
    """Two processes build the same new cube at the same time: one creates it; the other either
    fails with the one-line busy error or, starting late, finds nothing new. Never a raw
    OSError, never a staging directory left behind."""
    from prefect.settings import PREFECT_API_URL

    from stac2cube import open_cube

    store = tmp_path / "both.icechunk"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    arg = json.dumps(params(stac_url, store))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, arg], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        assert proc.returncode == 0 and line, out[-3000:]
        results.append(json.loads(line.removeprefix("RESULT ")))
    created = [r for r in results if r["ok"] and r["added"] > 0]
    assert len(created) == 1, results
    for r in results:
        if r is not created[0]:
            assert r == {"ok": True, "added": 0} or (
                not r["ok"] and "another stac2cube run is writing" in r["error"]
            ), results
    assert open_cube(store).sizes["time"] == created[0]["added"]
    assert leftovers(store) == []


def test_files_beside_the_cube_are_written_under_the_lock(stac_url, tmp_path):
    """While another run holds the lock, a run with nothing new to add does not rewrite the
    settings or statistics files either: it fails with the busy error, everything unchanged."""
    store = tmp_path / "side.icechunk"
    get_stac_layers(**params(stac_url, store, statistics=True))
    files = beside(store)
    assert {"side.settings.json", "side.stats.csv"} <= set(files)
    digest = tree_digest(store)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom stac2cube.store import store_lock\n"
            f"with store_lock({str(store)!r}):\n    print('locked', flush=True)\n    time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match="another stac2cube run is writing"):
            get_stac_layers(**params(stac_url, store, statistics=True))
        assert beside(store) == files
        assert tree_digest(store) == digest
    finally:
        holder.kill()
        holder.wait()
    summary = get_stac_layers(**params(stac_url, store, statistics=True))  # lock free again
    assert summary["added_time_steps"] == 0 and summary["statistics"].endswith("side.stats.csv")
