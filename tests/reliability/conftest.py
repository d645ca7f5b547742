"""Fixtures of the reliability suite: a small scene series on the session's STAC API, its COGs
served over HTTP, and fault-injecting proxies in front of both (``stac2cube.testing.faults``).

The series is four small Sentinel-2 scenes of tile A (600 m, bands B04 and B08) in its own
collection; the cube is the 400 m box of ``helpers.small_bbox`` at 10 m (40 x 40 px). A build
takes 2024-03-01..08 (two steps), an update extends it to 2024-03-20 (four steps).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from helpers import require  # noqa: F401  (this module shadows tests/conftest.py)

DAYS = ["2024-03-01", "2024-03-06", "2024-03-11", "2024-03-16"]
BANDS = ["B04", "B08"]
BUILD = ("2024-03-01", "2024-03-08")
UPDATE_END = "2024-03-20"


@dataclass
class Series:
    """The reliability series: where its files are and how to reach them."""

    root: Path
    collection: str  #: items with file:// hrefs
    http_collection: str  #: the same items, assets over HTTP through ``cog_proxy``
    items: list[dict[str, Any]]
    stac_url: str  #: the STAC API itself
    stac_proxy: Any  #: FaultProxy in front of the STAC API
    files: Any  #: FileServer of ``root``
    cog_proxy: Any  #: FaultProxy in front of ``files``

    def params(self, store: Path, *, http: bool = True, **kw) -> dict[str, Any]:
        from helpers import small_bbox

        return {
            "mission": "sentinel-2-l2a",
            "bbox": small_bbox(),
            "start": BUILD[0],
            "end": BUILD[1],
            "catalog": self.stac_proxy.url if http else self.stac_url,
            "collection": self.http_collection if http else self.collection,
            "bands": BANDS,
            "store": str(store),
            **kw,
        }


@pytest.fixture(scope="session")
def series(stac_api, tmp_path_factory):
    from stac2cube.testing.faults import FaultProxy, FileServer, http_catalog
    from stac2cube.testing.synthetic import TILE_A, SceneSpec, make_collection, write_catalog

    tag = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("reliability")
    collection, http_collection = f"rel-{tag}", f"rel-http-{tag}"
    scenes = [
        SceneSpec(
            tile=TILE_A[0],
            epsg=TILE_A[1],
            origin=TILE_A[2],
            datetime=dt.datetime.fromisoformat(f"{day}T10:30:21").replace(tzinfo=dt.UTC),
            size=60,
            seed=70 + k,
            collection=collection,
        )
        for k, day in enumerate(DAYS)
    ]
    cat = write_catalog(root, scenes, bands=BANDS)
    files = FileServer(root).start()
    cog_proxy = FaultProxy(files.url).start()
    stac_proxy = FaultProxy(stac_api.url).start()
    http_items = http_catalog(cat.items, root, cog_proxy.url, http_collection)
    stac_api.load_collections(
        [
            make_collection("earth-search-c1", collection, cat.items),
            make_collection("earth-search-c1", http_collection, http_items),
        ]
    )
    stac_api.load_items([*cat.items, *http_items])
    yield Series(
        root, collection, http_collection, cat.items, stac_api.url, stac_proxy, files, cog_proxy
    )
    for server in (stac_proxy, cog_proxy, files):
        server.stop()


@pytest.fixture(scope="session")
def clean_cubes(series, tmp_path_factory):
    """The clean build and the clean build + update (file:// assets, no proxy, no faults)."""
    from stac2cube import get_stac_layers, update_cube

    root = tmp_path_factory.mktemp("clean")
    built, updated = root / "built.icechunk", root / "updated.icechunk"
    get_stac_layers(**series.params(built, http=False))
    get_stac_layers(**series.params(updated, http=False))
    update_cube(store=str(updated), end=UPDATE_END)
    return built, updated


def cube_values(store: Path) -> xr.Dataset:
    """The cube's stored integers and per-step coordinates, loaded."""
    from stac2cube import open_cube

    return open_cube(str(store), decode=False).load()


def assert_same_values(a: Path, b: Path) -> None:
    """Value for value: every band, the time axis and the scenes of each step."""
    da, db = cube_values(a), cube_values(b)
    assert list(da.time.values) == list(db.time.values)
    assert list(da.item_ids.values) == list(db.item_ids.values)
    for band in BANDS:
        np.testing.assert_array_equal(da[band].values, db[band].values, err_msg=band)


def same_values(a: Path, b: Path) -> bool:
    try:
        assert_same_values(a, b)
    except AssertionError:
        return False
    return True
