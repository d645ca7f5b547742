"""Each cube describes itself as a STAC Collection beside it (issue 17 item 9).

pystac validates the core Collection against the STAC 1.1.0 schemas it ships (offline). The
datacube and projection extension schemas are fetched from stac-extensions.github.io, which
this machine (and CI) cannot reach: their rules are checked here field by field instead
(datacube v2.2.0: dimension and variable objects; projection v2.0.0: code, shape, transform,
bbox), and every value against the cube itself, read independently.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pystac
import pytest
from pystac.validation import validate_dict

from stac2cube.collection import DATACUBE_EXTENSION, PROJECTION_EXTENSION
from stac2cube.settings import sidecar_path

pytestmark = pytest.mark.integration

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _build(stac_url, store, end):
    from stac2cube import get_stac_layers
    from stac2cube.testing.synthetic import demo_bbox

    return get_stac_layers(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end=end,
        catalog=stac_url,
        collection="sentinel-2-c1-l2a",
        bands=["red", "nir", "SCL"],
        indices=["NDVI"],
        store=str(store),
    )


@pytest.fixture(scope="module")
def cube(stac_url, tmp_path_factory):
    store = tmp_path_factory.mktemp("collection") / "field.icechunk"
    summary = _build(stac_url, store, "2024-01-15")
    return store, summary


def _read(store) -> dict:
    return json.loads(sidecar_path(store, ".collection.json").read_text())


def check_datacube_v2(doc: dict) -> None:
    """The rules of the datacube extension v2.2.0 schema for a Collection."""
    assert DATACUBE_EXTENSION in doc["stac_extensions"]
    dims, variables = doc["cube:dimensions"], doc["cube:variables"]
    assert isinstance(dims, dict) and dims
    for name, dim in dims.items():
        assert isinstance(dim["type"], str), name
        if dim["type"] == "spatial":
            assert dim["axis"] in ("x", "y"), name  # horizontal: type, axis, extent required
            assert len(dim["extent"]) == 2 and all(isinstance(v, float) for v in dim["extent"])
            assert dim.get("step") is None or isinstance(dim["step"], int | float)
            assert isinstance(dim.get("reference_system", 4326), int | str | dict)
        elif dim["type"] == "temporal":
            assert "axis" not in dim
            assert len(dim["extent"]) == 2
            assert all(v is None or isinstance(v, str) for v in dim["extent"])
            assert all(isinstance(v, str) for v in dim.get("values", [])), name
            assert dim.get("step") is None or isinstance(dim["step"], str)
        else:  # additional dimension: extent or values, no axis
            assert "axis" not in dim and ("extent" in dim or dim.get("values")), name
    for name, var in variables.items():
        assert var["type"] in ("data", "auxiliary"), name
        assert var["dimensions"] and set(var["dimensions"]) <= set(dims), name
        assert "unit" not in var or isinstance(var["unit"], str)
        assert "description" not in var or isinstance(var["description"], str)


def check_projection_v2(asset: dict) -> None:
    """The projection extension v2.0.0 fields of an asset."""
    assert asset["proj:code"].startswith("EPSG:")
    assert len(asset["proj:shape"]) == 2 and all(isinstance(v, int) for v in asset["proj:shape"])
    assert len(asset["proj:transform"]) in (6, 9)
    assert len(asset["proj:bbox"]) == 4


def test_a_build_writes_a_valid_collection_beside_the_cube(cube):
    store, summary = cube
    path = sidecar_path(store, ".collection.json")
    assert summary["collection"] == str(path) and path.parent == store.parent
    doc = _read(store)
    # core STAC 1.1.0 Collection, validated by pystac against its bundled schemas (offline)
    assert validate_dict(doc, extensions=[])
    collection = pystac.Collection.from_dict(doc)
    assert collection.id == "field"
    check_datacube_v2(doc)
    check_projection_v2(doc["assets"]["data"])
    assert PROJECTION_EXTENSION in doc["stac_extensions"]
    # pystac's own extension classes read the fields
    from pystac.extensions.datacube import DatacubeExtension

    ext = DatacubeExtension.ext(collection)
    assert set(ext.dimensions) == {"x", "y", "time"}
    assert ext.variables["B04"].dimensions == ["time", "y", "x"]
    # the store asset resolves to the cube
    href = collection.assets["data"].href
    assert (path.parent / href).resolve() == store.resolve()


def test_collection_describes_the_cube_as_it_is(cube):
    from pyproj import CRS

    from stac2cube import open_cube

    store, _ = cube
    doc = _read(store)
    ds = open_cube(store)
    res = float(abs(ds.x.values[1] - ds.x.values[0]))
    epsg = CRS.from_wkt(ds.spatial_ref.attrs["crs_wkt"]).to_epsg()
    x0, y0 = float(ds.x.values[0]) - res / 2, float(ds.y.values[0]) + res / 2  # centres -> edges
    dims = doc["cube:dimensions"]
    assert dims["x"]["extent"] == pytest.approx([x0, x0 + res * ds.sizes["x"]])
    assert dims["y"]["extent"] == pytest.approx([y0 - res * ds.sizes["y"], y0])
    assert (dims["x"]["step"], dims["y"]["step"]) == (res, -res)
    assert dims["x"]["reference_system"] == epsg
    times = [np.datetime_as_string(t, unit="s") + "Z" for t in ds.time.values]
    assert dims["time"]["values"] == times
    assert dims["time"]["extent"] == [times[0], times[-1]]
    assert doc["extent"]["temporal"]["interval"] == [[times[0], times[-1]]]
    variables = doc["cube:variables"]
    assert (
        set(ds.data_vars) <= set(variables) == {*ds.data_vars, "valid_fraction", "cloud_fraction"}
    )
    for name, var in ds.data_vars.items():
        assert variables[name].get("unit") == var.attrs.get("units"), name
    assert variables["B04"]["unit"] == "1"
    asset = doc["assets"]["data"]
    assert asset["proj:code"] == f"EPSG:{epsg}"
    assert asset["proj:shape"] == [ds.sizes["y"], ds.sizes["x"]]
    assert asset["proj:transform"] == pytest.approx([res, 0, x0, 0, -res, y0])
    assert doc["summaries"]["proj:code"] == [f"EPSG:{epsg}"]


def test_links_lead_to_the_source_items_and_search(cube, stac_url):
    """Every derived_from item link answers with that item from the catalog; the via link's
    search, posted as given, finds every item of the cube."""
    from stac2cube import Cube

    store, _ = cube
    doc = _read(store)
    ledger_ids = {i["id"] for e in Cube(store).state.ledger for i in e["items"]}
    item_links = [
        ln for ln in doc["links"] if ln["rel"] == "derived_from" and "/items/" in ln["href"]
    ]
    assert {ln["title"] for ln in item_links} == ledger_ids
    for link in item_links:
        assert link["href"].startswith(stac_url.rstrip("/"))
        with _OPENER.open(link["href"], timeout=30) as r:
            assert json.load(r)["id"] == link["title"]
    (via,) = [ln for ln in doc["links"] if ln["rel"] == "via"]
    request = urllib.request.Request(
        via["href"],
        data=json.dumps({**via["body"], "limit": 1000}).encode(),
        headers={"Content-Type": "application/json"},
        method=via["method"],
    )
    with _OPENER.open(request, timeout=30) as r:
        found = {f["id"] for f in json.load(r)["features"]}
    assert ledger_ids <= found


def test_an_update_keeps_the_collection_current(cube, stac_url):
    from stac2cube import open_cube
    from stac2cube.flows.update import update_cube

    store, _ = cube
    before = _read(store)["cube:dimensions"]["time"]["values"]
    summary = update_cube(store=str(store), end="2024-01-31")
    assert summary["added_time_steps"] > 0
    after = _read(store)
    times = [np.datetime_as_string(t, unit="s") + "Z" for t in open_cube(store).time.values]
    assert after["cube:dimensions"]["time"]["values"] == times
    assert len(times) > len(before) and set(before) <= set(times)
    check_datacube_v2(after)
