"""Every mission on every catalog that offers it, built from a real local STAC API.

Three module-private STAC APIs (stac-fastapi-pgstac on 127.0.0.1) serve synthetic catalogs in the
style of Earth Search, Planetary Computer and terrabyte, under the real collection ids. Each test
runs the pure pipeline a flow runs: ``search_items`` -> ``deduplicate`` / ``group_by_solar_day``
(``static_steps`` for the DEM) -> ``load_raw`` -> ``build_dataset``, with the catalog's own
collection table (``CatalogSpec.with_url``), and checks every pixel against values computed in
:mod:`mission_helpers` from the files' raw values by the documented formulas.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from mission_helpers import expected_step

from stac2cube.catalogs import EARTH_SEARCH, PLANETARY_COMPUTER, TERRABYTE, CatalogSpec
from stac2cube.dataset import STATIC_TIME, build_dataset, static_steps
from stac2cube.load import load_raw
from stac2cube.radiometry import ProcessingOptions
from stac2cube.request import CubeRequest, make_request
from stac2cube.search import search_items
from stac2cube.steps import deduplicate, group_by_solar_day
from stac2cube.testing.synthetic import demo_bbox
from stac2cube.testing.synthetic_missions import (
    DEM_BBOX,
    MissionCatalog,
    standard_mission_scenes,
    write_mission_catalog,
)

pytestmark = pytest.mark.integration

SPECS: dict[str, CatalogSpec] = {
    "earth-search": EARTH_SEARCH,
    "planetary-computer": PLANETARY_COMPUTER,
    "terrabyte": TERRABYTE,
}


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    """``style -> (MissionCatalog, CatalogSpec at the local API's URL)``; one API per style."""
    from conftest import require

    from stac2cube.testing.pgstac import postgres_available, start_local_stac_api

    require(postgres_available(), "PostgreSQL 15 + PostGIS not installed (run scripts/setup.sh)")
    out, apis = {}, []
    try:
        for style, spec in SPECS.items():
            scenes, s2 = standard_mission_scenes(style)
            cat = write_mission_catalog(tmp_path_factory.mktemp(style), style, scenes, s2)
            api = start_local_stac_api(collections=cat.collections, items=cat.items)
            apis.append(api)
            out[style] = (cat, spec.with_url(api.url))
        yield out
    finally:
        for api in apis:
            api.stop()


@pytest.fixture()
def pc_key(monkeypatch):
    """A (dummy) Planetary Computer subscription key: the synthetic hrefs are local files."""
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "synthetic-test-key")


def request_on(
    spec: CatalogSpec, mission: str, *, collection=None, bbox=None, resolution=10.0, **kw
) -> CubeRequest:
    """A request on ``spec`` (a built-in catalog's conventions at a local URL)."""
    base = make_request(
        mission=mission,
        bbox=list(bbox or demo_bbox()),
        start=kw.pop("start", "2021-01-01"),
        end=kw.pop("end", "2024-12-31"),
        catalog=spec.url,
        collection="placeholder",
        resolution=resolution,
        **kw,
    )
    return dataclasses.replace(
        base, catalog=spec, collection=spec.collection_for(mission, collection)
    )


def run_pipeline(request: CubeRequest, *, options=None, signer=None):
    """search -> dedupe/group (or static) -> load -> preprocess, computed."""
    items = search_items(request)
    kept, _ = deduplicate(items)
    steps = static_steps(kept) if request.mission.static else group_by_solar_day(kept)
    flat = [i for s in steps for i in s.items]
    raw = load_raw(request, flat, options=options, signer=signer)
    ds, ledger = build_dataset(request, steps, raw, options=options)
    return ds.load(), ledger, steps


def item_ids(ds, t) -> list[str]:
    return str(ds.item_ids.sel(time=t).values).split(",")


def check_values(
    cat: MissionCatalog, request: CubeRequest, ds, bands, *, margin=0.05, min_safe=0.5, **kw
):
    """Every step and band equals the independently computed mosaic where that is exact."""
    epsg = request.grid.epsg
    for t in ds.time.values:
        ids = item_ids(ds, t)
        for band in bands:
            want, safe = expected_step(
                cat, request.mission.id, ids, band, ds.x.values, ds.y.values, epsg,
                margin=margin, **kw,
            )  # fmt: skip
            got = ds[band].sel(time=t).values.astype("float64")
            tol = {"lwir11": 1e-4, "elevation": 1e-4}.get(band, 2e-5)
            np.testing.assert_allclose(
                got[safe], want[safe], atol=tol, equal_nan=True, err_msg=f"{band} at {t}"
            )
            assert safe.mean() > min_safe, f"{band} at {t}: too few exactly predictable pixels"


def check_storage_round_trip(ds, tmp_path: Path) -> None:
    """Written with each variable's own encoding and read back, values survive to within the
    encoding's step (what the cube store will do once it honours ``var.encoding``)."""
    path = tmp_path / "roundtrip.zarr"
    ds.to_zarr(path, consolidated=False)
    back = xr.open_zarr(path, consolidated=False).load()
    for name, var in ds.data_vars.items():
        step = float(var.encoding.get("scale_factor", 0.0))
        a, b = var.values.astype("float64"), back[name].values.astype("float64")
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(b, a, atol=step / 2 + 1e-6, equal_nan=True, err_msg=name)


#: (catalog style, mission, collection override, bands, resolution, area, expected rules)
PAIRS = [
    ("earth-search", "sentinel-2-l2a", None, ["B02", "B04", "B11", "SCL"], 10, None,
     {"s2-offset-1000"}),
    ("earth-search", "sentinel-2-l2a", "sentinel-2-l2a", ["B04", "B11"], 10, None,
     {"s2-pre-04.00", "s2-offset-applied-in-cog"}),
    ("earth-search", "sentinel-2-l1c", None, ["B02", "B04", "B10", "B11"], 10, None,
     {"s2-pre-04.00", "s2-offset-1000"}),
    ("earth-search", "landsat-c2-l2", None, ["coastal", "red", "swir22", "lwir11", "qa_pixel"],
     15, None, {"landsat-c2-l2sp"}),
    ("earth-search", "cop-dem-glo-30", None, ["elevation"], 30, DEM_BBOX, {"cop-dem"}),
    ("planetary-computer", "sentinel-2-l2a", None, ["B02", "B04", "B11", "SCL"], 10, None,
     {"s2-pre-04.00", "s2-offset-1000"}),
    ("planetary-computer", "sentinel-1-rtc", None, ["vv", "vh"], 10, None, {"s1-gamma0-db"}),
    ("planetary-computer", "landsat-c2-l2", None, ["red", "swir16", "lwir11", "qa_pixel"], 15,
     None, {"landsat-c2-l2sp", "landsat-c2-l2sr"}),
    ("planetary-computer", "cop-dem-glo-30", None, ["elevation"], 30, DEM_BBOX, {"cop-dem"}),
    ("terrabyte", "sentinel-2-l2a", None, ["B02", "B04", "B8A", "SCL"], 10, None,
     {"s2-offset-1000"}),
    ("terrabyte", "sentinel-2-l1c", None, ["B04", "B10", "B12"], 10, None, {"s2-offset-1000"}),
    ("terrabyte", "sentinel-1-rtc", None, ["vv", "vh"], 10, None, {"s1-gamma0-db"}),
    ("terrabyte", "landsat-c2-l2", None, ["coastal", "red", "lwir11", "qa_pixel"], 15, None,
     {"landsat-c2-l2sp"}),
    ("terrabyte", "cop-dem-glo-30", None, ["elevation"], 30, DEM_BBOX, {"cop-dem"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("style", "mission", "collection", "bands", "resolution", "area", "rules"),
    PAIRS,
    ids=[f"{p[0]}:{p[1]}{':' + p[2] if p[2] else ''}" for p in PAIRS],
)
def test_every_mission_on_every_catalog_offering_it(
    catalogs, pc_key, tmp_path, style, mission, collection, bands, resolution, area, rules
):
    cat, spec = catalogs[style]
    request = request_on(
        spec, mission, collection=collection, bbox=area, bands=bands, resolution=resolution
    )
    ds, ledger, steps = run_pipeline(request)
    assert ds.sizes["time"] == len(steps) >= 1
    assert set(",".join(ds.radiometry_rule.values.tolist()).split(",")) == rules
    reprojected = mission == "cop-dem-glo-30"
    if reprojected:  # EPSG:4326 tiles warped to UTM: exact away from source pixel edges
        check_values(cat, request, ds, bands, margin=0.2, min_safe=0.25)
    else:
        check_values(cat, request, ds, bands)
    for entry in ledger:
        assert entry["catalog"] == style
        for rec in entry["items"]:
            assert rec["rule"] in rules and "scale" in rec and "offset" in rec
    check_storage_round_trip(ds, tmp_path)


def test_default_collections_are_the_catalogs_own(catalogs, pc_key):
    want = {
        ("earth-search", "sentinel-2-l2a"): "sentinel-2-c1-l2a",
        ("earth-search", "sentinel-2-l1c"): "sentinel-2-l1c",
        ("planetary-computer", "sentinel-1-rtc"): "sentinel-1-rtc",
        ("terrabyte", "sentinel-2-l1c"): "sentinel-2-c1-l1c",
        ("terrabyte", "sentinel-1-rtc"): "sentinel-1-nrb",
        ("terrabyte", "landsat-c2-l2"): "landsat-ot-c2-l2,landsat-etm-c2-l2,landsat-tm-c2-l2",
    }
    for (style, mission), coll in want.items():
        assert request_on(catalogs[style][1], mission).collection == coll


def test_sentinel2_series_across_baseline_04_is_continuous(catalogs):
    """Planetary Computer's sentinel-2-l2a is not harmonised: DN jump by +1000 at 2022-01-25.
    The same surface (one texture seed) imaged six times from 2021-11 to 2023-06 must give one
    reflectance in every step, equal to the truth the scenes were made of."""
    cat, spec = catalogs["planetary-computer"]
    request = request_on(spec, "sentinel-2-l2a", bands=["B04", "B11"])
    ds, ledger, _ = run_pipeline(request)
    assert ds.sizes["time"] == 6
    rules = ds.radiometry_rule.values.tolist()
    cut = np.datetime64("2022-01-25")
    assert all(
        r == ("s2-offset-1000" if t >= cut else "s2-pre-04.00")
        for r, t in zip(rules, ds.time.values, strict=True)
    )
    baselines = [e["items"][0]["processing_baseline"] for e in ledger]
    assert baselines == ["03.00", "03.01", "03.01", "04.00", "04.00", "05.09"]
    for band in ("B04", "B11"):
        series = ds[band].values
        np.testing.assert_allclose(series, np.broadcast_to(series[0], series.shape), atol=1e-6)
    # the raw DN really did jump by 1000 across the baseline change, yet the cube did not
    from mission_helpers import asset_href, raw_on_grid

    ids = [item_ids(ds, t)[0] for t in ds.time.values]
    r0, _, _ = raw_on_grid(asset_href(cat, ids[0], "B04"), ds.x.values, ds.y.values, 32632)
    r5, _, _ = raw_on_grid(asset_href(cat, ids[-1], "B04"), ds.x.values, ds.y.values, 32632)
    assert (r5.astype(int) - r0.astype(int) == 1000).all()


def test_earth_search_legacy_flag_and_offset_contradiction_is_recorded(catalogs):
    _cat, spec = catalogs["earth-search"]
    request = request_on(spec, "sentinel-2-l2a", collection="sentinel-2-l2a", bands=["B04"])
    ds, ledger, _ = run_pipeline(request)
    by_rule = {e["items"][0]["rule"]: e["items"][0] for e in ledger}
    applied = by_rule["s2-offset-applied-in-cog"]
    assert applied["offset"] == 0.0
    assert any("contradicts earthsearch:boa_offset_applied" in w for w in applied["warnings"])
    # continuous across the legacy baselines too (same texture seed both dates)
    np.testing.assert_allclose(ds.B04.values[0], ds.B04.values[1], atol=1e-6)


def test_landsat_cloud_masking_fills_from_the_next_scene(catalogs, tmp_path):
    cat, spec = catalogs["earth-search"]
    flags = ("dilated_cloud", "cirrus", "cloud", "cloud_shadow")
    options = ProcessingOptions(mask_clouds=True, qa_flags=flags)
    request = request_on(spec, "landsat-c2-l2", bands=["red", "lwir11"], resolution=15)
    plain, _, _ = run_pipeline(request)
    masked, _ledger, _ = run_pipeline(request, options=options)
    assert list(masked.data_vars) == ["red", "lwir11"]  # qa_pixel read for masking only
    check_values(cat, request, masked, ["red", "lwir11"], mask_flags=flags)
    day = masked.sel(time="2024-01-05").isel(time=0)
    ids = item_ids(masked, day.time.values)
    assert len(ids) == 2
    changed = ~np.isclose(day.red.values, plain.red.sel(time="2024-01-05").values[0])
    assert changed.sum() > 100  # clouds and shadows of the first scene now come from the second
    check_storage_round_trip(masked, tmp_path)


def test_landsat_qa_pixel_is_decoded_into_masks(catalogs):
    from stac2cube.testing.synthetic_missions import QA_CLOUD, QA_DILATED, QA_FILL, QA_SHADOW

    _cat, spec = catalogs["planetary-computer"]
    request = request_on(spec, "landsat-c2-l2", bands=["red", "qa_pixel"], resolution=15)
    ds, _ledger, _ = run_pipeline(request)
    qa = ds.qa_pixel.values
    for name, bit in (("qa_fill", 0), ("qa_dilated_cloud", 1), ("qa_cirrus", 2), ("qa_cloud", 3),
                      ("qa_cloud_shadow", 4), ("qa_snow", 5)):  # fmt: skip
        np.testing.assert_array_equal(ds[name].values, (qa >> bit) & 1, err_msg=name)
        assert ds[name].dtype == np.uint8 and ds[name].encoding["dtype"] == "uint8"
    values = set(np.unique(qa[0]).tolist())
    assert {QA_CLOUD, QA_DILATED, QA_SHADOW} <= values and QA_FILL not in values
    assert ds.qa_cloud.values[0].sum() > 0 and ds.qa_cloud_shadow.values[0].sum() > 0
    assert ds.qa_pixel.attrs["nodata"] == 1 and "cloud_shadow" in ds.qa_pixel.attrs["flag_meanings"]


def test_landsat_l2sr_has_no_temperature_and_says_so(catalogs):
    _cat, spec = catalogs["planetary-computer"]
    request = request_on(spec, "landsat-c2-l2", bands=["red", "lwir11"], resolution=15)
    ds, ledger, _ = run_pipeline(request)
    l2sr = ds.sel(time="2024-01-21").isel(time=0)
    assert str(l2sr.radiometry_rule.values) == "landsat-c2-l2sr"
    assert np.isnan(l2sr.lwir11.values).all() and np.isfinite(l2sr.red.values).all()
    entry = next(e for e in ledger if e["time"].startswith("2024-01-21"))
    assert entry["items"][0]["missing_bands"] == ["lwir11"]
    assert entry["items"][0]["band_scaling"]["lwir11"] == [0.00341802, 149.0]


def test_landsat_4_7_items_have_no_coastal_band_and_their_lwir_is_lwir11(catalogs):
    _cat, spec = catalogs["terrabyte"]
    request = request_on(spec, "landsat-c2-l2", bands=["coastal", "lwir11"], resolution=15)
    ds, ledger, _ = run_pipeline(request)
    l7 = ds.sel(time="2024-01-13").isel(time=0)
    assert np.isnan(l7.coastal.values).all() and np.isfinite(l7.lwir11.values).all()
    assert next(e for e in ledger if e["time"].startswith("2024-01-13"))["items"][0][
        "missing_bands"
    ] == ["coastal"]
    assert {e["items"][0]["collection"] for e in ledger} == {
        "landsat-ot-c2-l2",
        "landsat-etm-c2-l2",
    }


def test_sentinel2_scl_masking_with_default_and_chosen_classes(catalogs):
    cat, spec = catalogs["terrabyte"]
    request = request_on(spec, "sentinel-2-l2a", bands=["B04", "SCL"])
    plain, _, _ = run_pipeline(request)
    default = ProcessingOptions(mask_clouds=True)
    assert default.scl_classes == (1, 3, 8, 9, 10)
    masked, _, _ = run_pipeline(request, options=default)
    check_values(cat, request, masked, ["B04"], scl_classes=default.scl_classes)
    only_shadow = ProcessingOptions(mask_clouds=True, scl_classes=(3,))
    shadow, _, _ = run_pipeline(request, options=only_shadow)
    check_values(cat, request, shadow, ["B04"], scl_classes=(3,))
    # clouds (9) of the first tile are filled from the second tile where it covers them
    scl = plain.SCL.values[0]
    cloudy = scl == 9
    assert cloudy.sum() > 100
    assert not np.allclose(masked.B04.values[0][cloudy], plain.B04.values[0][cloudy])
    np.testing.assert_allclose(shadow.B04.values[0][cloudy], plain.B04.values[0][cloudy])
    # the SCL layer tells which scene provided the pixel: no cloud left where it was filled
    assert (masked.SCL.values[0][cloudy & np.isfinite(masked.B04.values[0])] != 9).all()


def test_sentinel1_linear_on_request_and_db_by_default(catalogs, pc_key, tmp_path):
    cat, spec = catalogs["planetary-computer"]
    request = request_on(spec, "sentinel-1-rtc", bands=["vv"])
    db, _, _ = run_pipeline(request)
    linear, ledger, _ = run_pipeline(request, options=ProcessingOptions(sar_scale="linear"))
    assert db.vv.attrs["units"] == "dB" and linear.vv.attrs["units"] == "1"
    assert set(linear.radiometry_rule.values.tolist()) == {"s1-gamma0-linear"}
    check_values(cat, request, linear, ["vv"], sar_scale="linear")
    both = np.isfinite(db.vv.values)
    np.testing.assert_allclose(db.vv.values[both], 10 * np.log10(linear.vv.values[both]), atol=1e-4)
    # gamma0 == 0 (the middle row of each scene) is valid linear but has no dB
    zero = linear.vv.values == 0
    assert zero.any() and np.isnan(db.vv.values[zero]).all()
    assert ledger[0]["items"][0]["nodata"] == -32768
    assert linear.vv.encoding["dtype"] == "float32" and db.vv.encoding["dtype"] == "int16"
    check_storage_round_trip(linear, tmp_path)


def test_dem_is_one_static_layer_mosaicked_from_latitude_dependent_tiles(catalogs):
    cat, spec = catalogs["earth-search"]
    request = request_on(
        spec, "cop-dem-glo-30", bbox=DEM_BBOX, resolution=30, start="2024-01-01", end="2024-01-31"
    )
    assert request.mission.static
    ds, ledger, steps = run_pipeline(request)  # no date filter: the tiles are dated 2021-04-22
    assert ds.sizes["time"] == 1 and ds.time.values[0] == np.datetime64(STATIC_TIME)
    assert ledger[0]["time"] == "1970-01-01T00:00:00"
    ids = item_ids(ds, ds.time.values[0])
    assert ids == sorted(ids) and len(ids) == 2  # both tiles, in one step
    widths = {cat.item(i)["properties"]["proj:transform"][0] for i in ids}
    assert len(widths) == 2  # 1" south of 50 N, 1.5" north of it
    assert np.isfinite(ds.elevation.values).all()
    assert ds.elevation.attrs["static"] == 1 and ds.elevation.attrs["units"] == "m"
    # steps grouped by solar day (as a flow that forgets static_steps would pass) still give
    # the one static step
    solar = group_by_solar_day(steps[0].items)
    again, _ = build_dataset(request, solar, load_raw(request, [i for s in solar for i in s.items]))
    assert again.time.values.tolist() == ds.time.values.tolist()
    assert int(again.n_scenes.values[0]) == 2


def test_items_without_projection_metadata_still_load(tmp_path, catalogs):
    """Some catalogs serve items without proj:*; the load places assets by the item bbox and
    GDAL reads the real georeferencing."""
    from stac2cube.testing.pgstac import start_local_stac_api
    from stac2cube.testing.synthetic_missions import LANDSAT_ORIGIN, MissionScene

    scene = MissionScene(
        "landsat-c2-l2",
        "terrabyte",
        dt.datetime(2024, 2, 6, 10, 5, tzinfo=dt.UTC),
        32632,
        LANDSAT_ORIGIN,
        size=100,
        pixel=(30.0, 30.0),
        seed=35,
        tile="193026",
        strip_projection=True,
    )
    cat = write_mission_catalog(tmp_path / "noproj", "terrabyte", [scene])
    assert not any(k.startswith("proj:") for k in cat.items[0]["properties"])
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        request = request_on(TERRABYTE.with_url(api.url), "landsat-c2-l2", bands=["red"],
                             resolution=15)  # fmt: skip
        ds, _, _ = run_pipeline(request)
    check_values(cat, request, ds, ["red"])


def test_planetary_computer_hrefs_are_signed_when_read_not_when_searched(catalogs, tmp_path):
    """Items whose hrefs are in Azure Blob Storage (as Planetary Computer serves them) are
    signed by the reader when it opens the asset. A signer that maps the blob URL back to the
    local file (and records each call) stands in for planetary_computer.sign."""
    import copy
    import json

    from stac2cube.testing.pgstac import start_local_stac_api

    cat, _ = catalogs["planetary-computer"]
    items = [copy.deepcopy(i) for i in cat.items if i["collection"] == "landsat-c2-l2"]
    local: dict[str, str] = {}
    for item in items:
        for key, asset in item["assets"].items():
            blob = f"https://landsateuwest.blob.core.windows.net/landsat-c2/{item['id']}/{key}.TIF"
            local[blob] = asset["href"]
            asset["href"] = blob
    calls: list[str] = []

    def signer(href: str) -> str:
        calls.append(href)
        return local[href.split("?")[0]]

    colls = [c for c in cat.collections if c["id"] == "landsat-c2-l2"]
    with start_local_stac_api(collections=colls, items=items) as api:
        request = request_on(PLANETARY_COMPUTER.with_url(api.url), "landsat-c2-l2",
                             bands=["red"], resolution=15)  # fmt: skip
        found = search_items(request)
        assert all("blob.core.windows.net" in i["assets"]["red"]["href"] for i in found)
        steps = group_by_solar_day(deduplicate(found)[0])
        raw = load_raw(request, [i for s in steps for i in s.items], signer=signer)
        assert calls == []  # nothing signed at search or graph-building time
        ds, _ = build_dataset(request, steps, raw)
        ds = ds.load()
    assert calls and all(c in local for c in calls)
    assert json.dumps(ds.attrs).count("blob.core") == 0
    ref, _, _ = run_pipeline(request_on(catalogs["planetary-computer"][1], "landsat-c2-l2",
                                        bands=["red"], resolution=15))  # fmt: skip
    np.testing.assert_allclose(ds.red.values, ref.red.values, equal_nan=True)


def test_search_parameters_per_mission(catalogs, pc_key):
    from stac2cube.search import search_parameters

    es, pc, tb = (catalogs[s][1] for s in SPECS)
    dem = search_parameters(request_on(es, "cop-dem-glo-30", max_cloud=20))
    assert "datetime" not in dem and "query" not in dem
    s1 = search_parameters(request_on(pc, "sentinel-1-rtc", max_cloud=20))
    assert "datetime" in s1 and "query" not in s1  # S1 items have no eo:cloud_cover
    ls = search_parameters(request_on(tb, "landsat-c2-l2", max_cloud=20))
    assert ls["collections"] == ["landsat-ot-c2-l2", "landsat-etm-c2-l2", "landsat-tm-c2-l2"]
    assert ls["query"] == {"eo:cloud_cover": {"lte": 20.0}}
    # max_cloud on S1 does not empty the search
    ds, _, _ = run_pipeline(request_on(pc, "sentinel-1-rtc", max_cloud=5, bands=["vh"]))
    assert ds.sizes["time"] == 2
