"""Session fixtures: a synthetic catalog on disk, served by a real stac-fastapi-pgstac on a fresh
local PostgreSQL + PostGIS (127.0.0.1), and a real Prefect test harness.

Where PostgreSQL is missing the integration tests skip locally, but fail under CI (``CI=true``):
CI must never pass by skipping.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# subprocesses that call a flow start Prefect's temporary server themselves: its default 20 s to
# start is too short on a loaded 2-core CI machine (the CLI sets the same, stac2cube.cli)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stac2cube-prefect-home-"))

from helpers import IN_CI, require  # noqa: F401  (tests import them from conftest)


@pytest.fixture(scope="session")
def synthetic_catalog(tmp_path_factory):
    """The standard synthetic scenes written as COGs + items (see stac2cube.testing.synthetic)."""
    from stac2cube.testing.synthetic import standard_scenes, write_catalog

    return write_catalog(tmp_path_factory.mktemp("catalog"), standard_scenes())


@pytest.fixture(scope="session")
def stac_api(synthetic_catalog):
    """A real STAC API serving the synthetic catalog; yields the LocalStacApi."""
    from stac2cube.testing.pgstac import postgres_available, start_local_stac_api

    require(postgres_available(), "PostgreSQL 15 + PostGIS not installed (run scripts/setup.sh)")
    api = start_local_stac_api(
        collections=synthetic_catalog.collections, items=synthetic_catalog.items
    )
    yield api
    api.stop()


@pytest.fixture(scope="session")
def stac_url(stac_api) -> str:
    return stac_api.url


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """A real, temporary Prefect API for every flow run of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def store_path(tmp_path) -> Path:
    return tmp_path / "cube.icechunk"


@pytest.fixture(scope="session")
def season_api(stac_api, tmp_path_factory):
    """A collection with one small scene (600 m) in every month of 2019-2021 (tile A); each
    has its own texture, two of them a nodata strip on their east half."""
    import datetime as dt

    from stac2cube.testing.synthetic import TILE_A, SceneSpec, make_collection, write_catalog

    root = tmp_path_factory.mktemp("seasons")
    scenes = [
        SceneSpec(
            tile=TILE_A[0],
            epsg=TILE_A[1],
            origin=TILE_A[2],
            datetime=dt.datetime(year, month, 10, 10, 30, 21, tzinfo=dt.UTC),
            size=60,
            seed=(year - 2019) * 12 + month,
            nodata_cols=30 if (year, month) in ((2020, 7), (2021, 1)) else 0,
            collection="season-s2",
        )
        for year in (2019, 2020, 2021)
        for month in range(1, 13)
    ]
    cat = write_catalog(root, scenes, bands=["B02", "B03", "B04", "B08", "SCL"])
    stac_api.load_collections([make_collection("earth-search-c1", "season-s2", cat.items)])
    stac_api.load_items(cat.items)
    return cat
