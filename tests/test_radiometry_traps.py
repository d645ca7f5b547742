"""Radiometry traps: saturated Sentinel-2 pixels, a wrong Earth Search offset flag, and cloud
masking asked of a mission that has no cloud layer.

Expected pixel values come from the DN read back from the COG files with rasterio and the
documented formulas (:mod:`helpers`), never from stac2cube's own radiometry code.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from helpers import dn_on_grid

from stac2cube import get_stac_layers, open_cube
from stac2cube.errors import InvalidRequestError
from stac2cube.pixels import to_physical
from stac2cube.radiometry import sentinel2_radiometry
from stac2cube.request import make_request
from stac2cube.store import read_state
from stac2cube.testing.synthetic import (
    TILE_A,
    SceneSpec,
    make_collection,
    write_catalog,
    write_cog,
)

README = Path(__file__).resolve().parents[1] / "README.md"
#: ESA's SATURATED special value of Sentinel-2 L1C/L2A bands
SATURATED = 65535
#: A pixel block written as saturated in the B04 COGs below (native 10 m rows/cols).
SAT_ROWS, SAT_COLS = slice(10, 20), slice(20, 30)


def template(name: str) -> dict:
    text = resources.files("stac2cube.testing").joinpath("templates", name).read_text()
    return copy.deepcopy(json.loads(text)["item"])


def legacy_item(when: str, flag: bool | None, baseline: str = "04.00") -> dict:
    """The real Earth Search legacy item, re-dated, with ``flag`` (None: no flag at all)."""
    item = template("item_earth-search__sentinel-2-l2a.json")
    props = item["properties"]
    props["datetime"] = f"{when}T10:00:00Z"
    props["s2:processing_baseline"] = baseline
    for key in ("s2:product_uri", "s2:granule_id", "s2:datastrip_id", "s2:datatake_id"):
        props.pop(key)
    props.pop("earthsearch:boa_offset_applied")
    if flag is not None:
        props["earthsearch:boa_offset_applied"] = flag
    return item


# --- item 6: saturated pixels -------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        template("item_earth-search__sentinel-2-c1-l2a.json"),  # PB 05.10, offset in the DN
        legacy_item("2021-06-01", None, baseline="03.01"),  # no offset
    ],
    ids=["baseline-05.10", "baseline-03.01"],
)
def test_saturated_dn_is_nodata(item):
    raw = xr.DataArray(
        np.array([[0, 1500, SATURATED - 1, SATURATED]], "uint16"), dims=("item", "x")
    )
    rad = sentinel2_radiometry(item)
    got = to_physical(raw, [rad]).values[0]
    offset = -1000 if float(item["properties"]["s2:processing_baseline"]) >= 4 else 0
    want = [np.nan, (1500 + offset) / 1e4, (SATURATED - 1 + offset) / 1e4, np.nan]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_readme_states_the_real_ceiling_of_the_reflectance_encoding():
    # CF decoding of the smallest and largest uint16 the encoding stores (0 is the fill value)
    attrs = {"scale_factor": 1e-4, "add_offset": -0.1, "_FillValue": np.uint16(0)}
    stored = xr.Dataset({"r": ("x", np.array([1, SATURATED], "uint16"), attrs)})
    lo, hi = xr.decode_cf(stored).r.values.astype("float64")
    text = README.read_text()
    assert f"{hi:.4f}" == "6.4535" and f"{hi:.4f}" in text
    assert f"{lo:.4f}" in text
    assert "6.5434" not in text


# --- item 7: the Earth Search legacy offset flag ------------------------------------------------


@pytest.mark.parametrize(
    ("when", "flag", "offset_dn", "contradiction"),
    [
        # Element84 subtracts the offset from every scene its pipeline made since March 2022;
        # a false (or missing) flag then contradicts the pipeline (earth-search issues 66, 71)
        ("2025-03-02", False, 0, True),
        ("2022-10-23", None, 0, True),
        ("2023-06-01", True, 0, False),
        # scenes of 2022-01-25 .. 2022-02-28 were made before the fix: the flag decides
        ("2022-02-01", False, -1000, False),
        ("2022-02-01", True, 0, False),
    ],
)
def test_legacy_offset_cross_checks_the_flag(when, flag, offset_dn, contradiction):
    rad = sentinel2_radiometry(legacy_item(when, flag))
    assert rad.offset_dn == offset_dn
    flagged = [w for w in rad.warnings if "boa_offset_applied" in w and "2022-03-01" in w]
    assert bool(flagged) == contradiction, rad.warnings


def test_flag_on_a_collection_1_item_is_a_contradiction_and_the_collection_wins():
    item = template("item_earth-search__sentinel-2-c1-l2a.json")
    item["properties"]["earthsearch:boa_offset_applied"] = True
    rad = sentinel2_radiometry(item)
    assert rad.offset_dn == -1000
    assert any("sentinel-2-c1-l2a" in w and "boa_offset_applied" in w for w in rad.warnings)


# --- items 6 and 7 end to end -------------------------------------------------------------------


def _at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T10:30:21").replace(tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def traps_catalog(stac_api, tmp_path_factory):
    """Tile A scenes in their own collections: Earth Search legacy ones (one whose flag is
    false although its COGs lost the offset) and a Collection-1 one; the pre-04.00 and the
    Collection-1 scenes have a block of saturated B04 pixels."""

    def scene(when, seed, style, coll, **kw):
        return SceneSpec(
            tile=TILE_A[0],
            epsg=TILE_A[1],
            origin=TILE_A[2],
            datetime=_at(when),
            size=60,
            seed=seed,
            style=style,
            collection=coll,
            **kw,
        )

    legacy, c1 = "traps-legacy", "traps-c1"
    scenes = [
        scene("2021-12-01", 31, "earth-search-legacy", legacy, baseline="03.01"),
        scene(
            "2022-02-01",
            32,
            "earth-search-legacy",
            legacy,
            baseline="04.00",
            boa_offset_applied=False,
        ),  # before the pipeline fix: flag right, offset in DN
        scene(
            "2022-06-10",
            33,
            "earth-search-legacy",
            legacy,
            baseline="04.00",
            boa_offset_applied=False,
            offset_in_dn=False,
        ),  # flag wrong: offset removed
        scene("2024-03-05", 34, "earth-search-c1", c1, baseline="05.10"),
    ]
    cat = write_catalog(tmp_path_factory.mktemp("traps"), scenes, bands=["B04", "SCL"])
    for item in cat.items:
        if item["properties"]["datetime"].startswith(("2021-12-01", "2024-03-05")):
            path = item["assets"]["red"]["href"].removeprefix("file://")
            with rasterio.open(path) as src:
                dn = src.read(1)
            dn[SAT_ROWS, SAT_COLS] = SATURATED
            write_cog(Path(path), dn, TILE_A[1], list(src.transform)[:6])
    stac_api.load_collections(
        [
            make_collection("earth-search-legacy", legacy, cat.items[:3]),
            make_collection("earth-search-c1", c1, cat.items[3:]),
        ]
    )
    stac_api.load_items(cat.items)
    return cat


def _bbox() -> list[float]:
    from pyproj import Transformer

    tr = Transformer.from_crs(f"EPSG:{TILE_A[1]}", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 20, y1 - 580)
    e, n = tr.transform(x0 + 580, y1 - 20)
    return [w, s, e, n]


def _build(stac_url, store, collection, start, end):
    get_stac_layers(
        mission="sentinel-2-l2a",
        bbox=_bbox(),
        start=start,
        end=end,
        catalog=stac_url,
        collection=collection,
        bands=["B04"],
        crs="EPSG:32632",
        store=str(store),
    )
    return open_cube(store).load(), read_state(store).ledger


def _expected(catalog, ds, day, offset_dn):
    item = next(i for i in catalog.items if i["properties"]["datetime"].startswith(day))
    dn, _ = dn_on_grid(item["assets"]["red"]["href"], ds.x.values, ds.y.values, TILE_A[1])
    out = (dn.astype("float64") + offset_dn) / 1e4
    return np.where((dn == 0) | (dn == SATURATED), np.nan, out), dn


@pytest.mark.integration
def test_cube_saturated_pixels_nodata_and_wrong_flag_overridden(stac_url, traps_catalog, tmp_path):
    ds, ledger = _build(
        stac_url, tmp_path / "l.icechunk", "traps-legacy", "2021-11-01", "2022-07-01"
    )
    assert ds.sizes["time"] == 3
    for day, offset_dn in (("2021-12-01", 0), ("2022-02-01", -1000), ("2022-06-10", 0)):
        want, dn = _expected(traps_catalog, ds, day, offset_dn)
        got = ds.B04.sel(time=day).values[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=day)
        if day == "2021-12-01":
            assert (dn == SATURATED).sum() > 50 and np.isnan(got[dn == SATURATED]).all()
    by_day = {e["time"][:10]: e for e in ledger}
    assert by_day["2022-02-01"]["contradictions"] == []
    [note] = by_day["2022-06-10"]["contradictions"]
    assert "earthsearch:boa_offset_applied" in note
    rule = str(ds.radiometry_rule.sel(time="2022-06-10").values[0])
    assert rule == by_day["2022-06-10"]["items"][0]["rule"] != "s2-offset-1000"

    ds, _ = _build(stac_url, tmp_path / "c.icechunk", "traps-c1", "2024-03-01", "2024-03-31")
    want, dn = _expected(traps_catalog, ds, "2024-03-05", -1000)
    got = ds.B04.values[0]
    assert (dn == SATURATED).sum() > 50
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# --- item 10: cloud masking only where a cloud layer exists -------------------------------------

UNREACHABLE = "http://127.0.0.1:9/stac"  # a search would fail with a catalog error
NO_QA = ("sentinel-2-l1c", "sentinel-1-rtc", "cop-dem-glo-30")


def _refusal(mission: str) -> str:
    return f"mask_clouds needs a cloud classification band (SCL or QA_PIXEL); {mission} has none"


@pytest.mark.parametrize("mission", NO_QA)
def test_mask_clouds_refused_in_request_validation(mission):
    from stac2cube.radiometry import ProcessingOptions

    with pytest.raises(InvalidRequestError) as err:
        make_request(
            mission=mission,
            bbox=[11.5, 48.1, 11.52, 48.11],
            start="2024-01-01",
            end="2024-01-31",
            catalog=UNREACHABLE,
            collection=mission,
            options=ProcessingOptions(mask_clouds=True),
        )
    text = str(err.value)
    assert _refusal(mission) in text and "\n" not in text
    assert "sentinel-2-l2a (SCL)" in text and "landsat-c2-l2 (QA_PIXEL)" in text


@pytest.mark.integration
@pytest.mark.parametrize("call", ["plain", "fn"])
def test_mask_clouds_refused_by_the_flow_before_any_search(call, tmp_path):
    flow = get_stac_layers if call == "plain" else get_stac_layers.fn
    store = tmp_path / "s1.icechunk"
    with pytest.raises(InvalidRequestError, match=re.escape(_refusal("sentinel-1-rtc"))):
        flow(
            mission="sentinel-1-rtc",
            bbox=[11.5, 48.1, 11.52, 48.11],
            start="2024-01-01",
            end="2024-01-31",
            catalog=UNREACHABLE,
            collection="sentinel-1-rtc",
            mask_clouds=True,
            store=str(store),
        )
    assert not store.exists()


@pytest.mark.integration
def test_mask_clouds_refused_by_the_cli(tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**__import__("os").environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    store = tmp_path / "dem.icechunk"
    proc = subprocess.run(
        [sys.executable, "-m", "stac2cube.cli", "build", "--mission", "cop-dem-glo-30",
         "--bbox", "11.5", "48.1", "11.52", "48.11", "--start", "2024-01-01",
         "--catalog", UNREACHABLE, "--collection", "cop-dem-glo-30", "--mask-clouds",
         "--store", str(store)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and _refusal("cop-dem-glo-30") in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not store.exists()
