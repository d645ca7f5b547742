"""Corrupt or missing assets, by choice (``errors_as_nodata``, :mod:`stac2cube.broken`).

Real COGs (the synthetic catalog's) on the session's STAC API, file:// and over HTTP:

* by default a truncated COG fails the run with one line naming the item and asset, and the
  cube stays at its snapshot;
* with the opt-in a truncated COG (file://) or a missing one (HTTP 404) is read as nodata: the
  cube opens, that asset's pixels are NaN in its step, every other band and step equals the
  clean build value for value, and the step's ledger entry lists exactly that asset;
* an update while the asset is still broken changes nothing; once it is repaired, an update
  rewrites the step, equal to the clean build, its list cleared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import cube_values

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

DAYS = ["2024-04-01", "2024-04-06"]
BANDS = ["B04", "B08"]
END = "2024-04-08"


class Broken:
    """Two small scenes of tile A in their own collections (file:// and HTTP) and the clean
    cube of both."""

    def __init__(self, stac_api, root: Path):
        from stac2cube import get_stac_layers
        from stac2cube.testing.faults import FileServer, http_catalog
        from stac2cube.testing.synthetic import TILE_A, SceneSpec, make_collection, write_catalog

        tag = uuid.uuid4().hex[:8]
        self.collection, self.http_collection = f"broken-{tag}", f"broken-http-{tag}"
        scenes = [
            SceneSpec(
                TILE_A[0],
                TILE_A[1],
                TILE_A[2],
                dt.datetime.fromisoformat(f"{day}T10:30:21").replace(tzinfo=dt.UTC),
                size=60,
                seed=90 + k,
                collection=self.collection,
            )
            for k, day in enumerate(DAYS)
        ]
        cat = write_catalog(root / "cogs", scenes, bands=BANDS)
        self.items = cat.items
        self.files = FileServer(root / "cogs").start()
        http_items = http_catalog(cat.items, root / "cogs", self.files.url, self.http_collection)
        self.http_items = http_items
        stac_api.load_collections(
            [
                make_collection("earth-search-c1", self.collection, cat.items),
                make_collection("earth-search-c1", self.http_collection, http_items),
            ]
        )
        stac_api.load_items([*cat.items, *http_items])
        self.stac_url = stac_api.url
        self.clean = root / "clean.icechunk"
        get_stac_layers(**self.params(self.clean))

    def params(self, store: Path, *, http: bool = False, **kw):
        from helpers import small_bbox

        return {
            "mission": "sentinel-2-l2a",
            "bbox": small_bbox(),
            "start": DAYS[0],
            "end": END,
            "catalog": self.stac_url,
            "collection": self.http_collection if http else self.collection,
            "bands": BANDS,
            "store": str(store),
            **kw,
        }

    def path(self, k: int, asset: str = "nir") -> Path:
        """The COG of asset ``asset`` of scene ``k``."""
        return Path(self.items[k]["assets"][asset]["href"].removeprefix("file://"))


@pytest.fixture(scope="module")
def broken(stac_api, tmp_path_factory):
    series = Broken(stac_api, tmp_path_factory.mktemp("broken-assets"))
    yield series
    series.files.stop()


@pytest.fixture()
def fresh_http_reads(broken, monkeypatch):
    # GDAL's in-process cache of the served files would hide a repaired (or removed) file
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", f"/vsicurl/{broken.files.url}")


@contextlib.contextmanager
def truncated(path: Path):
    """``path`` cut to a third of its bytes for the block (a download cut off half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    try:
        yield
    finally:
        path.write_bytes(data)


@contextlib.contextmanager
def removed(path: Path):
    """``path`` gone for the block (its HTTP URL answers 404)."""
    hidden = path.with_name(f".{path.name}.away")
    path.rename(hidden)
    try:
        yield
    finally:
        hidden.rename(path)


def ledger(store: Path) -> list[dict]:
    from stac2cube.cube import Cube

    return Cube(str(store)).ledger


def head(store: Path) -> str:
    from stac2cube.cube import Cube

    return Cube(str(store)).head()


def assert_nodata_only_there(store: Path, clean: Path, step: int, band: str) -> None:
    """``band`` of ``step`` is NaN everywhere (fill 0 stored); every other value equals
    ``clean``'s."""
    from stac2cube import open_cube

    got, want = cube_values(store), cube_values(clean)
    assert list(got.time.values) == list(want.time.values)
    assert list(got.item_ids.values) == list(want.item_ids.values)
    for name in BANDS:
        a, b = got[name].values, want[name].values
        if name == band:
            assert (a[step] == 0).all(), name  # the fill value, stored
            assert (b[step] != 0).any(), name  # (the clean step has data there)
            a, b = np.delete(a, step, axis=0), np.delete(b, step, axis=0)
        np.testing.assert_array_equal(a, b, err_msg=name)
    decoded = open_cube(str(store))[band].isel(time=step).values
    assert np.isnan(decoded).all()


def assert_same_values(a: Path, b: Path) -> None:
    da, db = cube_values(a), cube_values(b)
    assert list(da.time.values) == list(db.time.values)
    for band in BANDS:
        np.testing.assert_array_equal(da[band].values, db[band].values, err_msg=band)


def test_default_fails_naming_item_and_asset_and_leaves_the_cube(broken, tmp_path):
    from stac2cube import get_stac_layers, update_cube
    from stac2cube.errors import ReadError

    store = tmp_path / "strict.icechunk"
    get_stac_layers(**broken.params(store, end=DAYS[0]))
    before, values = head(store), cube_values(store)
    item = broken.items[1]
    with truncated(broken.path(1)), pytest.raises(ReadError) as err:
        update_cube(store=str(store), end=END)
    message = str(err.value)
    assert f"item {item['id']} asset nir" in message and len(message.splitlines()) == 1, message
    assert head(store) == before
    assert cube_values(store).identical(values)  # (unreferenced chunks are left to gc)
    assert not any(e.get("broken_assets") for e in ledger(store))


def test_truncated_cog_is_nodata_listed_and_filled_in_by_a_later_update(broken, tmp_path, caplog):
    import logging

    from stac2cube import get_stac_layers, update_cube
    from stac2cube.cube import Cube
    from stac2cube.flows.report import report_markdown
    from stac2cube.settings import read_settings, sidecar_path

    store = tmp_path / "lenient.icechunk"
    item = broken.items[1]
    caplog.set_level(logging.WARNING)
    with truncated(broken.path(1)):
        summary = get_stac_layers(**broken.params(store, errors_as_nodata=True))
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"item {item['id']} asset nir" in m and "nodata" in m for m in warned)
        assert_nodata_only_there(store, broken.clean, step=1, band="B08")
        entries = ledger(store)
        assert "broken_assets" not in entries[0]
        (listed,) = entries[1]["broken_assets"]
        assert (listed["item"], listed["asset"]) == (item["id"], "nir")
        # the reader's words: rasterio's "Read failed" or, unwrapped, GDAL's "Read error"
        assert re.search(r"Read (failed|error)", listed["reason"]), listed
        assert summary["broken_assets"] == entries[1]["broken_assets"]
        assert f"item {item['id']} asset nir" in report_markdown(summary)  # the run report
        assert Cube(str(store)).info()["time_steps"][1]["broken_assets"] == [listed]
        # kept for the cube's updates: in its record and its settings file
        settings = read_settings(sidecar_path(str(store), ".settings.json"))
        assert settings["errors_as_nodata"] is True

        # still broken: an update changes nothing (no rewrite churn)
        before = head(store)
        again = update_cube(store=str(store), end=END)
        assert again["snapshot"] is None and head(store) == before
        assert ledger(store) == entries

    # repaired: the update rewrites that step, equal to the clean build, its list cleared
    fixed = update_cube(store=str(store), end=END)
    assert fixed["replaced_time_steps"] == 1 and fixed["added_time_steps"] == 0, fixed
    assert_same_values(store, broken.clean)
    assert not any(e.get("broken_assets") for e in ledger(store))
    assert "broken_assets" not in fixed


def test_missing_asset_over_http_is_nodata_and_filled_in(broken, tmp_path, fresh_http_reads):
    """HTTP 404: read as nodata, listed with the status; back on the server, filled in."""
    from stac2cube import get_stac_layers, update_cube

    store = tmp_path / "http.icechunk"
    item = broken.http_items[0]
    with removed(broken.path(0, "red")):
        get_stac_layers(**broken.params(store, http=True, errors_as_nodata=True))
        assert_nodata_only_there(store, broken.clean, step=0, band="B04")
        (listed,) = ledger(store)[0]["broken_assets"]
        assert (listed["item"], listed["asset"]) == (item["id"], "red")
        assert "404" in listed["reason"], listed
        assert "broken_assets" not in ledger(store)[1]
    fixed = update_cube(store=str(store), end=END)
    assert fixed["replaced_time_steps"] == 1, fixed
    assert_same_values(store, broken.clean)
    assert not any(e.get("broken_assets") for e in ledger(store))


def test_the_cli_takes_the_switch_on_build_and_update():
    from stac2cube.cli_parser import build_parser

    parser = build_parser()
    assert parser.parse_args(["update", "--store", "c", "--errors-as-nodata"]).errors_as_nodata
    assert not parser.parse_args(["update", "--store", "c"]).errors_as_nodata
    args = parser.parse_args(["build", "--mission", "sentinel-2-l2a", "--errors-as-nodata"])
    assert args.errors_as_nodata


# -- the pieces, without a flow -----------------------------------------------------------------


def _steps_and_ledger(root: Path):
    from stac2cube.plan import stamp_ledger
    from stac2cube.steps import group_by_solar_day
    from stac2cube.testing.synthetic import TILE_A, SceneSpec, write_catalog

    scenes = [
        SceneSpec(
            TILE_A[0],
            TILE_A[1],
            TILE_A[2],
            dt.datetime.fromisoformat(f"{day}T10:30:21+00:00"),
            size=60,
            seed=k,
        )
        for k, day in enumerate(DAYS)
    ]
    cat = write_catalog(root, scenes, bands=BANDS)
    steps = group_by_solar_day(cat.items)
    ledger = [
        {
            "time": s.time.isoformat(),
            "solar_day": s.key,
            "items": [{"id": i["id"]} for i in s.items],
        }
        for s in steps
    ]
    stamp_ledger(ledger, steps)
    return cat, steps, ledger


def test_plan_replaces_only_listed_steps_whose_asset_reads_again(tmp_path):
    from stac2cube.broken import refill_keys
    from stac2cube.plan import plan_changes

    _, steps, ledger = _steps_and_ledger(tmp_path)
    ledger[1]["broken_assets"] = [{"item": steps[1].item_ids[0], "asset": "nir", "reason": "x"}]
    assert plan_changes(steps, ledger).unchanged == 2
    plan = plan_changes(steps, ledger, refill={steps[1].key})
    assert [s.key for s in plan.replace] == [steps[1].key] and not plan.add
    assert plan.replaced_times == {steps[1].time.isoformat(): ledger[1]["time"]}  # same time
    assert plan_changes(steps, ledger, refill={steps[0].key}).unchanged == 2  # nothing listed
    readable, broken = (lambda item, asset: None), (lambda item, asset: "still broken")
    assert refill_keys(steps, ledger, readable) == {steps[1].key}
    assert refill_keys(steps, ledger, broken) == set()


def test_a_step_with_a_broken_asset_is_not_recorded_as_filtered_out(tmp_path):
    from stac2cube.broken import holds_broken

    _, steps, _ = _steps_and_ledger(tmp_path)
    broken = {(steps[1].item_ids[0], "nir"): "x"}
    assert holds_broken(steps[1], broken) and not holds_broken(steps[0], broken)


def test_asset_problem_reads_over_the_cube_grid(tmp_path):
    from helpers import small_bbox

    from stac2cube.broken import asset_problem
    from stac2cube.request import make_request

    cat, _, _ = _steps_and_ledger(tmp_path)
    item = cat.items[1]
    request = make_request(
        mission="sentinel-2-l2a",
        bbox=small_bbox(),
        start=DAYS[0],
        end=END,
        bands=BANDS,
        catalog="http://127.0.0.1:9/",
        collection="c",
    )
    path = Path(item["assets"]["nir"]["href"].removeprefix("file://"))
    assert asset_problem(request, item, "nir") is None
    with truncated(path):
        reason = asset_problem(request, item, "nir")
        assert "read" in reason.lower() and len(reason.splitlines()) == 1, reason
        assert asset_problem(request, item, "red") is None  # the other band reads
    with removed(path):
        assert "No such file" in asset_problem(request, item, "nir")
    assert asset_problem(request, item, "thumbnail") is None  # no band of the cube uses it
