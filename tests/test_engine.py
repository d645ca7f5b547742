"""The pixel engine: streamed writes (memory bounded by chunks), workers writing through forks
of the run's session, and the progress bar of a distributed run.

The scenes are synthetic COGs (tile A, 12 x 12 km at 10 m) served by the real local STAC API;
the cube grid is about 1180 x 1180 px, so every step spans 3 x 3 stored chunks.
"""

from __future__ import annotations

import datetime as dt
import io

import dask
import numpy as np
import pytest
import xarray as xr

pytestmark = pytest.mark.integration

COLLECTION = "engine-s2"
BANDS = ["B04", "B08", "SCL"]
DATES = [dt.datetime(2024, 3, d, 10, 30, 21, tzinfo=dt.UTC) for d in (3, 8, 13, 18)]


@pytest.fixture(scope="module")
def big_api(stac_api, tmp_path_factory):
    """Four dates of one 1200 x 1200 px scene (the second with a nodata strip, the third
    cloudy in the north), in their own collection."""
    from stac2cube.testing.synthetic import TILE_A, SceneSpec, make_collection, write_catalog

    scenes = [
        SceneSpec(
            tile=TILE_A[0], epsg=TILE_A[1], origin=TILE_A[2], datetime=when, size=1200,
            seed=40 + k, nodata_cols=300 if k == 1 else 0, cloud_rows=200 if k == 2 else 0,
            collection=COLLECTION,
        )
        for k, when in enumerate(DATES)
    ]  # fmt: skip
    cat = write_catalog(tmp_path_factory.mktemp("engine"), scenes, bands=["B04", "B08", "SCL"])
    stac_api.load_collections([make_collection("earth-search-c1", COLLECTION, cat.items)])
    stac_api.load_items(cat.items)
    return cat


def big_bbox() -> list[float]:
    from pyproj import Transformer

    from stac2cube.testing.synthetic import TILE_A

    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 100, y1 - 11900)
    e, n = tr.transform(x0 + 11900, y1 - 100)
    return [round(w, 5), round(s, 5), round(e, 5), round(n, 5)]


def batches(stac_url, size: int, *, integers: bool = True):
    """``(dataset, ...)`` of the build's time steps, ``size`` steps a batch (lazy)."""
    from stac2cube.dataset import build_dataset
    from stac2cube.load import load_raw
    from stac2cube.request import make_request
    from stac2cube.search import search_items
    from stac2cube.steps import deduplicate, group_by_solar_day

    request = make_request(
        mission="sentinel-2-l2a", bbox=big_bbox(), start="2024-03-01", end="2024-03-31",
        catalog=stac_url, collection=COLLECTION, bands=BANDS,
    )  # fmt: skip
    steps = group_by_solar_day(deduplicate(search_items(request))[0])
    assert len(steps) == len(DATES)
    out = []
    for k in range(0, len(steps), size):
        part = steps[k : k + size]
        raw = load_raw(request, [i for s in part for i in s.items])
        ds, _ = build_dataset(request, part, raw, integers=integers)
        out.append(ds)
    return out


def stored(path) -> xr.Dataset:
    from stac2cube.store import open_cube

    return open_cube(path, decode=False).load()


def assert_same_cube(got: xr.Dataset, want: xr.Dataset) -> None:
    assert set(got.variables) == set(want.variables)
    for name in want.variables:
        a, b = got[name], want[name]
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a.values, b.values, err_msg=name)  # NaN == NaN
        else:
            assert np.array_equal(a.values, b.values), name


def batch_write(path, parts) -> None:
    """The previous engine: each batch computed into memory, then written from this process."""
    from icechunk.xarray import to_icechunk

    from stac2cube.store import APPEND, encode_for_store, open_repo

    session = open_repo(path, create=True).writable_session("main")
    with dask.config.set(scheduler="threads"):
        for k, ds in enumerate(parts):
            data = ds.compute()
            if k == 0:
                to_icechunk(data, session, mode="w-", encoding=encode_for_store(data))
            else:
                to_icechunk(data, session, **APPEND)
    session.commit("batch")


def test_workers_write_streamed_steps_equal_to_the_batch_write(big_api, stac_url, tmp_path):
    """Worker processes write through copies of one fork of the run's session (three appends,
    per-step coordinates computed from the pixels included; reflectance as stored integers
    computed from the DN); the cube equals the one the previous engine wrote (float32 batches
    computed into memory, then encoded), stored value for value, and it is committed once."""
    from distributed import Client, LocalCluster

    from stac2cube.store import forked, history, open_repo, write_time_steps

    def split(ab):
        a, b = ab
        return [a.isel(time=[0]), a.isel(time=[1]), b]

    batch_write(tmp_path / "batch.icechunk", split(batches(stac_url, 2, integers=False)))
    parts = split(batches(stac_url, 2))  # the write path's form: stored integers where DN

    session = open_repo(tmp_path / "stream.icechunk", create=True).writable_session("main")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
        client.as_current(),
    ):
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        with forked(session) as fork:
            assert type(fork).__name__ == "ForkSession"
            for k, ds in enumerate(parts):
                write_time_steps(fork, ds, first=k == 0, batch_size=1)
    assert len(pids) == 2 and __import__("os").getpid() not in pids
    session.commit("streamed")
    assert len(history(tmp_path / "stream.icechunk")) == 2  # the repository's first + ours
    assert_same_cube(stored(tmp_path / "stream.icechunk"), stored(tmp_path / "batch.icechunk"))


class _Largest(dask.callbacks.Callback):
    """The largest array any task of a local dask computation produced."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.largest = max(self.largest, int(getattr(result, "nbytes", 0) or 0))


def test_memory_is_bounded_by_chunks_not_by_grid_or_batch(big_api, stac_url, tmp_path, monkeypatch):
    """One batch of four steps, far beyond the old engine's in-memory cap (set small here):
    written chunk by chunk, no task ever holds more than a few stored chunks, and nothing is
    computed into this process."""
    import stac2cube.store as store

    monkeypatch.setattr(store, "COMPUTE_BYTES", 2**20)  # the old cap: 1 MiB a computation

    def refuse(*args, **kwargs):
        raise AssertionError("a batch was computed into memory")

    monkeypatch.setattr(store, "_put_computed", refuse)
    (ds,) = batches(stac_url, 4)
    step = sum(v.size * 4 for v in ds.isel(time=0).data_vars.values())  # float32 bytes
    chunk = store.CHUNK * store.CHUNK * 4
    assert step * 4 > 32 * store.COMPUTE_BYTES and step > 9 * chunk
    session = store.open_repo(tmp_path / "c.icechunk", create=True).writable_session("main")
    with (
        dask.config.set(scheduler="threads"),
        _Largest() as probe,
        store.forked(session) as fork,
    ):
        store.write_time_steps(fork, ds, first=True, batch_size=4)
    session.commit("one batch")
    assert 0 < probe.largest <= 4 * chunk, probe.largest  # a chunk's items or bands, no more
    got = store.open_cube(tmp_path / "c.icechunk")
    assert got.sizes["time"] == 4 and got.sizes["x"] > 2 * store.CHUNK
    assert float(got.valid_fraction[1]) < 0.8 < float(got.valid_fraction[0])


def test_flow_build_on_a_cluster_workers_write_and_the_bar_reaches_100(
    big_api, stac_url, tmp_path, monkeypatch
):
    """A build by the flow on its (distributed) Dask cluster, batches of 3 over 4 steps: the
    workers write (no batch is computed into the flow process), the progress bar shows steps
    and bytes and ends at 100 %, and the cube equals the previous engine's."""
    import stac2cube.store as store
    from stac2cube import get_stac_layers
    from stac2cube._progress import TerminalProgress

    def refuse(*args, **kwargs):
        raise AssertionError("a batch was computed into the flow process")

    monkeypatch.setattr(store, "_put_computed", refuse)
    monkeypatch.setenv("STAC2CUBE_RUNNER", "local")  # a LocalCluster (the default is threads)
    out = io.StringIO()
    with TerminalProgress("pixels", stream=out, min_seconds=0):
        summary = get_stac_layers(
            mission="sentinel-2-l2a", bbox=big_bbox(), start="2024-03-01", end="2024-03-31",
            catalog=stac_url, collection=COLLECTION, bands=BANDS, store=str(tmp_path / "f.icechunk"),
            batch_size=3,
        )  # fmt: skip
    assert summary["added_time_steps"] == 4
    lines = out.getvalue().splitlines()
    assert lines, "no progress shown"
    assert lines[-1].startswith("pixels: 100% 4/4 steps"), lines
    assert lines[-1].endswith("MB"), lines
    assert any("left" in line for line in lines[:-1]), lines  # an ETA while it ran
    batch_write(tmp_path / "batch.icechunk", batches(stac_url, 3, integers=False))
    got, want = stored(tmp_path / "f.icechunk"), stored(tmp_path / "batch.icechunk")
    assert_same_cube(got[list(want.data_vars)], want[list(want.data_vars)])
    np.testing.assert_array_equal(got.valid_fraction.values, want.valid_fraction.values)
