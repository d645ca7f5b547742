"""Cubes that grow safely: extension, gap filling, reprocessing, crashes, locks, history, export.

A module-private STAC API serves a Jan-Mar 2024 time series of tile A, so tests can add items
(reprocessed granules) without disturbing other modules.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import xarray as xr
from helpers import tree_digest

from stac2cube import get_stac_layers, open_cube
from stac2cube.errors import GridMismatchError, StoreError
from stac2cube.store import head_snapshot, history, rollback, store_lock
from stac2cube.testing.synthetic import TILE_A, SceneSpec, demo_bbox, make_item, write_catalog

pytestmark = pytest.mark.integration

DAYS = [
    "2024-01-03",
    "2024-01-13",
    "2024-01-23",
    "2024-02-02",
    "2024-02-12",
    "2024-02-22",
    "2024-03-03",
    "2024-03-13",
]
BANDS = ["B04", "B8A"]


def scene(day: str, seed: int, **kw) -> SceneSpec:
    when = dt.datetime.fromisoformat(f"{day}T10:30:21").replace(tzinfo=dt.UTC)
    return SceneSpec(TILE_A[0], TILE_A[1], TILE_A[2], when, seed=seed, **kw)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    from conftest import require

    from stac2cube.testing.pgstac import postgres_available, start_local_stac_api

    require(postgres_available(), "PostgreSQL 15 + PostGIS not installed (run scripts/setup.sh)")

    root = tmp_path_factory.mktemp("series")
    cat = write_catalog(root, [scene(d, 20 + k) for k, d in enumerate(DAYS)], bands=BANDS)
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        yield api, root


def build(url, store, start, end, **kw):
    args = dict(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start=start,
        end=end,
        catalog=url,
        collection="sentinel-2-c1-l2a",
        bands=BANDS,
        store=str(store),
    )
    args.update(kw)
    return get_stac_layers(**args)


def assert_same_cube(a: xr.Dataset, b: xr.Dataset) -> None:
    assert list(a.time.values) == list(b.time.values)
    assert list(a.item_ids.values) == list(b.item_ids.values)
    for band in BANDS:
        np.testing.assert_array_equal(a[band].values, b[band].values)


def test_extend_equals_one_build_and_repeat_changes_nothing(series, tmp_path):
    api, _ = series
    ext, one = tmp_path / "ext.icechunk", tmp_path / "one.icechunk"
    build(api.url, ext, "2024-01-01", "2024-01-31")
    s = build(api.url, ext, "2024-02-01", "2024-02-29")
    assert (s["added_time_steps"], s["replaced_time_steps"], s["time_steps"]) == (3, 0, 6)
    build(api.url, one, "2024-01-01", "2024-02-29")
    assert_same_cube(open_cube(ext).load(), open_cube(one).load())
    # per-step coordinates keep long chunks however short the first build was
    for name in ("time", "item_ids", "n_scenes", "radiometry_rule"):
        assert open_cube(ext)[name].encoding["chunks"] == (4096,), name

    head, digest = head_snapshot(ext), tree_digest(ext)
    again = build(api.url, ext, "2024-02-01", "2024-02-29")
    assert again["snapshot"] is None and again["added_time_steps"] == 0
    assert head_snapshot(ext) == head and tree_digest(ext) == digest


def test_filling_a_gap_keeps_time_sorted(series, tmp_path):
    api, _ = series
    gap, one = tmp_path / "gap.icechunk", tmp_path / "one.icechunk"
    build(api.url, gap, "2024-03-01", "2024-03-31")
    build(api.url, gap, "2024-01-01", "2024-01-31")  # before everything
    s = build(api.url, gap, "2024-02-01", "2024-02-29")  # in the middle
    assert s["added_time_steps"] == 3
    ds = open_cube(gap).load()
    assert list(ds.time.values) == sorted(ds.time.values)
    build(api.url, one, "2024-01-01", "2024-03-31")
    assert_same_cube(ds, open_cube(one).load())
    info_times = [e["time"] for e in __import__("stac2cube.store").store.read_state(gap).ledger]
    assert info_times == sorted(info_times) and len(info_times) == 8


def test_reprocessed_scene_replaces_its_time_step(series, tmp_path):
    api, root = series
    store = tmp_path / "re.icechunk"
    build(api.url, store, "2024-01-01", "2024-01-31")
    before = open_cube(store).load()
    # the catalog reprocesses 2024-01-13 (same id, baseline 05.11, new pixels)
    new = scene(
        "2024-01-13", 99, baseline="05.11", generation_time=dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    )
    item = make_item(new, root / "reprocessed", BANDS)
    assert item["id"] == before.item_ids.values[1]
    api.load_items([item])
    try:
        s = build(api.url, store, "2024-01-01", "2024-01-31")
        assert (s["added_time_steps"], s["replaced_time_steps"]) == (0, 1)
        after = open_cube(store).load()
        assert list(after.time.values) == list(before.time.values)
        assert after.processing_baseline.values[1] == "05.11"
        href = item["assets"]["red"]["href"].removeprefix("file://")
        with rasterio.open(href) as src:
            row, col = src.index(float(after.x[3]), float(after.y[4]))
            dn = int(src.read(1)[row, col])
        assert float(after.B04.values[1, 4, 3]) == pytest.approx((dn - 1000) / 1e4, abs=1e-6)
        for k in (0, 2):  # the other steps are untouched
            np.testing.assert_array_equal(after.B04.values[k], before.B04.values[k])
        assert history(store)[0]["replaced_time_steps"] == 1
    finally:  # restore the original item for other tests
        api.load_items([make_item(scene("2024-01-13", 21), root / "restored", BANDS)])


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    from pathlib import Path

    store, chunks = Path(sys.argv[2]), Path(sys.argv[2]) / "chunks"
    before = sum(1 for _ in chunks.rglob("*"))

    def kill_when_extension_chunks_appear():
        # the extension has written chunks (uncommitted): die now, like a lost node
        while sum(1 for _ in chunks.rglob("*")) <= before:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_when_extension_chunks_appear, daemon=True).start()
    from stac2cube import get_stac_layers
    from stac2cube.testing.synthetic import demo_bbox
    get_stac_layers(mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-02-01",
                    end="2024-03-31", catalog=sys.argv[1], collection="sentinel-2-c1-l2a",
                    bands=["B04", "B8A"], store=sys.argv[2], batch_size=1)
    print("finished without being killed")
""")


def test_sigkill_mid_extension_leaves_last_commit_and_rerun_completes(series, tmp_path):
    api, _ = series
    store, one = tmp_path / "k.icechunk", tmp_path / "one.icechunk"
    build(api.url, store, "2024-01-01", "2024-01-31")
    head, jan = head_snapshot(store), open_cube(store).load()
    files_before = sum(1 for p in store.rglob("*") if p.is_file())
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "ph")}
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "kill.log"
    with log.open("w") as out:
        # own session: the embedded Prefect server it starts is killed with it afterwards
        proc = subprocess.Popen(
            [sys.executable, str(script), api.url, str(store)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, log.read_text()[-3000:]
    # it died after writing chunks of the extension, before committing them
    assert sum(1 for p in store.rglob("*") if p.is_file()) > files_before
    assert head_snapshot(store) == head
    assert_same_cube(open_cube(store).load(), jan)
    # the next run completes the work and equals a clean build
    build(api.url, store, "2024-02-01", "2024-03-31")
    build(api.url, one, "2024-01-01", "2024-03-31")
    assert_same_cube(open_cube(store).load(), open_cube(one).load())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"bands": ["B04"]}, "bands"),
        ({"bands": ["B8A", "B04"]}, "bands"),
        ({"resolution": 20}, "resolution"),
        ({"crs": "EPSG:32633"}, "crs EPSG:32633"),
        ({"bbox": [11.57, 48.17, 11.59, 48.19]}, "bounds"),
        ({"collection": "another-collection"}, "collection"),
    ],
)
def test_mismatch_fails_naming_the_difference_and_leaves_store_untouched(
    series, tmp_path, change, named
):
    api, _ = series
    store = tmp_path / "m.icechunk"
    build(api.url, store, "2024-01-01", "2024-01-31")
    digest = tree_digest(store)
    with pytest.raises(GridMismatchError) as err:
        build(api.url, store, "2024-02-01", "2024-02-29", **change)
    assert named in str(err.value)
    assert tree_digest(store) == digest


def test_second_writer_fails_clearly_while_the_first_holds_the_lock(series, tmp_path):
    api, _ = series
    store = tmp_path / "l.icechunk"
    build(api.url, store, "2024-01-01", "2024-01-31")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom stac2cube.store import store_lock\n"
            f"with store_lock({str(store)!r}):\n    print('locked', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        digest = tree_digest(store)
        with pytest.raises(StoreError, match="another stac2cube run is writing"):
            build(api.url, store, "2024-02-01", "2024-02-29")
        assert tree_digest(store) == digest
    finally:
        holder.kill()
        holder.wait()
    with store_lock(store):  # released by the kernel when its holder died
        pass


def test_history_snapshots_and_rollback(series, tmp_path):
    api, _ = series
    store = tmp_path / "h.icechunk"
    build(api.url, store, "2024-01-01", "2024-01-31")
    first = head_snapshot(store)
    build(api.url, store, "2024-02-01", "2024-02-29")
    commits = history(store)
    assert [c["added_time_steps"] for c in commits[:2]] == [3, 3]
    assert commits[1]["snapshot"] == first and commits[0]["stac2cube_version"]
    assert open_cube(store, snapshot=first).sizes["time"] == 3
    assert open_cube(store).sizes["time"] == 6
    with pytest.raises(StoreError, match="not in the history"):
        rollback(store, "NOSUCHSNAPSHOT000000")
    tag = rollback(store, first)
    assert open_cube(store).sizes["time"] == 3 and head_snapshot(store) == first
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    assert tag in repo.list_tags()
    # the cube keeps growing from the rolled-back state
    assert build(api.url, store, "2024-02-01", "2024-02-29")["added_time_steps"] == 3


def test_export_zarr_netcdf_and_cogs(series, tmp_path):
    from stac2cube.export import export_cube

    api, _ = series
    store = tmp_path / "x.icechunk"
    build(api.url, store, "2024-01-01", "2024-01-31")
    cube = open_cube(store).load()

    export_cube(store, "zarr", tmp_path / "plain.zarr")
    plain = xr.open_zarr(tmp_path / "plain.zarr").load()  # plain xarray, no icechunk
    assert_same_cube(plain, cube)

    export_cube(store, "netcdf", tmp_path / "cube.nc")
    with xr.open_dataset(tmp_path / "cube.nc") as nc:
        assert_same_cube(nc.load(), cube)

    files = export_cube(store, "cog", tmp_path / "cogs")
    assert len(files) == 2 * (3 + 1)
    t1 = np.datetime_as_string(cube.time.values[1], unit="s").replace("-", "").replace(":", "")
    with rasterio.open(tmp_path / "cogs" / "B04" / f"B04_{t1}.tif") as src:
        assert src.crs.to_epsg() == 32632 and src.is_tiled
        raw = src.read(1)
        got = np.where(raw == src.nodata, np.nan, raw * src.scales[0] + src.offsets[0])
    np.testing.assert_allclose(got, cube.B04.values[1], atol=1e-9, equal_nan=True)
    with rasterio.open(tmp_path / "cogs" / "B04.vrt") as vrt:
        assert vrt.count == 3
        np.testing.assert_array_equal(vrt.read(2), raw)

    from stac2cube.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="exists"):
        export_cube(store, "zarr", tmp_path / "plain.zarr")


def test_append_with_other_per_step_variables_is_refused(stac_url, tmp_path):
    """A cube from another version or request (other per-step variables) is never half-grown."""
    from stac2cube.store import open_repo, write_time_steps

    store = tmp_path / "v.icechunk"
    get_stac_layers(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01", end="2024-01-06",
        catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04"], store=str(store),
        statistics=False,
    )  # fmt: skip
    last = open_cube(store).isel(time=[-1]).load()
    later = last.assign_coords(time=last.time + np.timedelta64(1, "D"))
    session = open_repo(store).writable_session("main")
    extra = later.assign_coords(new_coord=("time", np.array([1.0], "float32")))
    with pytest.raises(GridMismatchError, match=r"they have \['new_coord'\] that the cube lacks"):
        write_time_steps(session, extra, first=False)
    fewer = later.drop_vars("sun_azimuth")
    with pytest.raises(GridMismatchError, match=r"the cube has \['sun_azimuth'\] that they lack"):
        write_time_steps(session, fewer, first=False)
    assert open_cube(store).sizes["time"] == 1
