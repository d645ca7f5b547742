"""Flaky catalogs and flaky COG servers, for real: every request of a build goes through a
fault-injecting proxy on loopback (``stac2cube.testing.faults``), in front of the real STAC API
and of an HTTP server of the COGs.

* With ~20 % transient faults (429 with and without Retry-After, 500/502/503, resets, stalls,
  bodies cut off) a build and an update give a cube equal, value for value, to the clean build.
* A permanent fault fails the run within a bounded number of tries, naming the catalog or the
  item and asset; a new store is then not created. Retries are logged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest
from conftest import UPDATE_END, assert_same_values

from stac2cube.testing.faults import FAULTS, FaultPlan

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

#: read time-out for these tests: a stalled response is given up after 2 s
TIMEOUT_S = "2"
#: how long a stalled response stalls (longer than the time-out)
STALL_S = 4.0
#: total faults injected per class across the transient trials (for the closing figures)
INJECTED: Counter = Counter()


@pytest.fixture()
def fast_timeouts(monkeypatch):
    monkeypatch.setenv("STAC2CUBE_HTTP_TIMEOUT", TIMEOUT_S)


@pytest.fixture(autouse=True)
def no_faults_after(series, monkeypatch):
    # each run reads the COGs as a new process would: GDAL's in-process cache of the files
    # (kept across the runs of this pytest process) is off for the proxy's URLs
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", f"/vsicurl/{series.cog_proxy.url}")
    yield
    series.stac_proxy.set_plan(FaultPlan())
    series.cog_proxy.set_plan(FaultPlan())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transient_faults_build_and_update_equal_the_clean_cube(
    seed, series, clean_cubes, tmp_path, fast_timeouts, caplog
):
    from stac2cube import get_stac_layers, update_cube

    caplog.set_level(logging.WARNING)
    built, updated = clean_cubes
    store = tmp_path / "flaky.icechunk"
    for proxy, offset in ((series.stac_proxy, 0), (series.cog_proxy, 100)):
        proxy.clear()
        proxy.set_plan(FaultPlan(rate=0.2, seed=seed + offset, retry_after=1, stall_s=STALL_S))

    get_stac_layers(**series.params(store))
    assert_same_values(store, built)
    update_cube(store=str(store), end=UPDATE_END)
    assert_same_values(store, updated)

    faults = series.stac_proxy.faults() + series.cog_proxy.faults()
    INJECTED.update(faults)
    print(f"seed {seed}: faults injected {dict(faults)}")
    assert sum(faults.values()) >= 3, faults  # the plan really broke requests
    assert sum(series.stac_proxy.faults().values()) >= 1
    # every retry we make is logged (GDAL's own retries are logged by GDAL)
    retries = [r for r in caplog.records if "retry" in r.getMessage() or "try " in r.getMessage()]
    if series.stac_proxy.faults():
        assert any(r.name == "stac2cube.search" for r in retries), caplog.text[-2000:]


def test_every_fault_kind_is_survived_on_its_own(series, clean_cubes, tmp_path, fast_timeouts):
    """Each fault kind on the first two catalog requests and the first two COG requests."""
    from stac2cube import get_stac_layers

    built, _ = clean_cubes
    for kind in FAULTS:
        store = tmp_path / f"{kind}.icechunk"
        for proxy in (series.stac_proxy, series.cog_proxy):
            proxy.clear()
            proxy.set_plan(
                FaultPlan(on_requests={1: kind, 2: kind}, retry_after=1, stall_s=STALL_S)
            )
        get_stac_layers(**series.params(store))
        assert_same_values(store, built)
        got = series.stac_proxy.faults() + series.cog_proxy.faults()
        assert got[kind] == 4, (kind, got)
        INJECTED[kind] += got[kind]


def test_retry_after_is_honoured(series, tmp_path):
    """A 429 with ``Retry-After: 2`` on the catalog: the next try waits at least that long."""
    from stac2cube import get_stac_layers

    series.stac_proxy.clear()
    series.stac_proxy.set_plan(FaultPlan(on_requests={1: "429-retry"}, retry_after=2))
    get_stac_layers(**series.params(tmp_path / "ra.icechunk"))
    first, second = series.stac_proxy.log[:2]
    assert first.fault == "429-retry" and second.fault is None
    assert second.t - first.t >= 1.95  # the backoff alone would be 0 s before the first retry


def test_a_malformed_retry_after_falls_back_to_the_backoff(series, tmp_path):
    """``Retry-After: 0.5`` (not an integer) made urllib3 give up at once; now it is read."""
    from stac2cube import get_stac_layers

    series.stac_proxy.clear()
    series.stac_proxy.set_plan(FaultPlan(on_requests={1: "429-retry"}, retry_after=0.5))
    get_stac_layers(**series.params(tmp_path / "ra.icechunk"))
    assert [r.fault for r in series.stac_proxy.log[:2]] == ["429-retry", None]


@pytest.mark.parametrize("kind", ["503", "429", "reset"])
def test_permanent_catalog_fault_fails_naming_the_catalog(kind, series, tmp_path, fast_timeouts):
    from stac2cube import get_stac_layers
    from stac2cube.errors import CatalogError

    store = tmp_path / "down.icechunk"
    series.stac_proxy.clear()
    series.stac_proxy.set_plan(FaultPlan(always=kind, retry_after=1))
    t0 = time.monotonic()
    with pytest.raises(CatalogError) as err:
        get_stac_layers(**series.params(store))
    elapsed = time.monotonic() - t0
    message = str(err.value)
    assert series.stac_proxy.url in message and len(message.splitlines()) == 1, message
    if kind != "reset":
        assert f"HTTP {kind}" in message, message
    # bounded: 1 try + 4 retries of the first request (connection errors: 2 retries)
    assert 3 <= len(series.stac_proxy.log) <= 5, series.stac_proxy.log
    assert elapsed >= 0.5 + 1  # with backoff, not in a burst
    assert elapsed < 120, elapsed  # a bound, not a benchmark: 0.5+1+2+4 s of backoff
    assert not store.exists()


@pytest.mark.parametrize("kind", ["503", "truncate", "reset"])
def test_permanent_asset_fault_fails_naming_item_and_asset(kind, series, tmp_path, fast_timeouts):
    from stac2cube import get_stac_layers
    from stac2cube.errors import ReadError

    item = series.items[1]  # the second day of the build
    store = tmp_path / "broken.icechunk"
    series.cog_proxy.clear()
    series.cog_proxy.set_plan(FaultPlan(always=kind, match=f"/{item['id']}/B08"))
    with pytest.raises(ReadError) as err:
        get_stac_layers(**series.params(store))
    message = str(err.value)
    assert f"item {item['id']} asset nir" in message and len(message.splitlines()) == 1, message
    # bounded: GDAL's 1 + 4 tries per open, our 3 tries (not of an HTTP status), and the
    # asset opened by at most two readers
    tries = [r for r in series.cog_proxy.log if r.fault]
    assert 1 <= len(tries) <= (10 if kind == "503" else 30), tries
    assert not store.exists()
    assert not list(tmp_path.glob(".broken.icechunk.partial-*"))


def test_missing_asset_fails_instead_of_turning_into_nodata(series, stac_api, tmp_path):
    """HTTP 404 (stackstac's default turns it into nodata silently): the run fails naming it."""
    import copy

    from stac2cube import get_stac_layers
    from stac2cube.errors import ReadError
    from stac2cube.testing.synthetic import make_collection

    item = copy.deepcopy(series.items[0])
    coll = f"{series.collection}-404"
    item["collection"] = coll
    item["assets"]["red"]["href"] = f"{series.files.url}/no/such/file.tif"
    stac_api.load_collections([make_collection("earth-search-c1", coll, [item])])
    stac_api.load_items([item])
    store = tmp_path / "gone.icechunk"
    with pytest.raises(ReadError, match=f"item {item['id']} asset red"):
        get_stac_layers(**series.params(store, http=False, collection=coll))
    assert not store.exists()


def test_zz_report_faults_injected():
    """Prints the faults injected by the transient trials of this module (for the report)."""
    print(f"faults injected in total: {dict(INJECTED)}")
