"""Spectral indices: formulas checked against numpy on band values read from the COGs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import dn_on_grid, reflectance

from stac2cube import get_stac_layers, open_cube
from stac2cube.catalogs import PLANETARY_COMPUTER
from stac2cube.errors import InvalidRequestError
from stac2cube.indices import INDICES, compute_index, resolve_indices
from stac2cube.missions import get_mission
from stac2cube.request import make_request
from stac2cube.testing.synthetic import demo_bbox

S2 = get_mission("sentinel-2-l2a")
S1_INDICES = ["VV_VH", "VH_VV", "RVI"]
ES_KEY = {"B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B08": "nir",
          "B11": "swir16", "B12": "swir22"}  # fmt: skip

#: the documented formulas, written out independently of stac2cube.indices
FORMULAS = {
    "NDVI": lambda b: (b["B08"] - b["B04"]) / (b["B08"] + b["B04"]),
    "NDWI": lambda b: (b["B03"] - b["B08"]) / (b["B03"] + b["B08"]),
    "MNDWI": lambda b: (b["B03"] - b["B11"]) / (b["B03"] + b["B11"]),
    "NDMI": lambda b: (b["B08"] - b["B11"]) / (b["B08"] + b["B11"]),
    "NBR": lambda b: (b["B08"] - b["B12"]) / (b["B08"] + b["B12"]),
    "SAVI": lambda b: 1.5 * (b["B08"] - b["B04"]) / (b["B08"] + b["B04"] + 0.5),
    "EVI": lambda b: 2.5 * (b["B08"] - b["B04"]) / (b["B08"] + 6 * b["B04"] - 7.5 * b["B02"] + 1),
    "NDRE": lambda b: (b["B08"] - b["B05"]) / (b["B08"] + b["B05"]),
    "NDSI": lambda b: (b["B03"] - b["B11"]) / (b["B03"] + b["B11"]),
    "NDBI": lambda b: (b["B11"] - b["B08"]) / (b["B11"] + b["B08"]),
}


def test_unknown_and_unsupported_indices_fail_clearly():
    with pytest.raises(InvalidRequestError, match="unknown index 'NDXI'; known indices: NDVI"):
        resolve_indices(S2, ["NDXI"])
    with pytest.raises(InvalidRequestError, match=r"NDRE needs the rededge1 band.*landsat-c2-l2"):
        resolve_indices(get_mission("landsat-c2-l2"), ["ndre"])
    with pytest.raises(InvalidRequestError, match=r"NDVI needs the nir, red band.*sentinel-1-rtc"):
        resolve_indices(get_mission("sentinel-1-rtc"), ["NDVI"])
    with pytest.raises(InvalidRequestError, match="VV_VH needs the vv, vh"):
        resolve_indices(S2, ["VV/VH"])
    with pytest.raises(InvalidRequestError, match="indices for cop-dem-glo-30: none"):
        resolve_indices(get_mission("cop-dem-glo-30"), ["NDVI"])
    # and through the request, before anything is searched
    with pytest.raises(InvalidRequestError, match="unknown index"):
        make_request(mission="sentinel-2-l2a", bbox=demo_bbox(), start="2024-01-01",
                     indices=["NDVI", "foo"])  # fmt: skip


def test_sar_ratios_convert_db_to_linear():
    vv_db = xr.DataArray(np.array([[-10.0, -7.0], [np.nan, -20.0]], "float32"), dims=("y", "x"))
    vh_db = xr.DataArray(np.array([[-16.0, -15.0], [-17.0, -20.0]], "float32"), dims=("y", "x"))
    vv, vh = 10 ** (vv_db.values / 10), 10 ** (vh_db.values / 10)
    s1 = get_mission("sentinel-1-rtc")
    bands = {"vv": vv_db, "vh": vh_db}
    np.testing.assert_allclose(
        compute_index("VV_VH", s1, bands, sar_scale="db"), vv / vh, rtol=1e-5
    )
    np.testing.assert_allclose(
        compute_index("VH_VV", s1, bands, sar_scale="db"), vh / vv, rtol=1e-5
    )
    np.testing.assert_allclose(
        compute_index("RVI", s1, bands, sar_scale="db"), 4 * vh / (vv + vh), rtol=1e-5
    )
    linear = {"vv": xr.DataArray(vv, dims=("y", "x")), "vh": xr.DataArray(vh, dims=("y", "x"))}
    np.testing.assert_allclose(compute_index("RVI", s1, linear, sar_scale="linear"),
                               4 * vh / (vv + vh), rtol=1e-5)  # fmt: skip


def test_zero_denominator_is_nan():
    zero = xr.DataArray(np.zeros((1, 2), "float32"), dims=("y", "x"))
    out = compute_index("NDVI", S2, {"B08": zero, "B04": zero})
    assert np.isnan(out.values).all()


@pytest.mark.integration
def test_every_optical_index_matches_its_formula_on_the_cog_values(stac_url, synthetic_catalog,
                                                                   tmp_path):  # fmt: skip
    store = tmp_path / "idx.icechunk"
    get_stac_layers(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-09", end="2024-01-11",
        catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04"],
        indices=list(FORMULAS), store=str(store),
    )  # fmt: skip
    ds = open_cube(store).isel(time=0).load()
    assert set(ds.data_vars) == {"B04", *FORMULAS}  # index bands read, not stored
    (iid,) = str(ds.item_ids.values).split(",")
    item = next(i for i in synthetic_catalog.items if i["id"] == iid)
    bands, safe = {}, np.ones(ds.B04.shape, bool)
    for band, key in ES_KEY.items():
        dn, ok = dn_on_grid(item["assets"][key]["href"], ds.x.values, ds.y.values, 32632)
        bands[band] = reflectance(dn, -1000)
        safe &= ok
    assert safe.mean() > 0.5
    raw = open_cube(store, decode=False)
    for name, formula in FORMULAS.items():
        want = formula(bands)
        got = ds[name].values
        if INDICES[name].bounded:  # int16, scale 1e-4: exact to half a step
            assert raw[name].dtype == np.int16 and raw[name].attrs["scale_factor"] == 1e-4
            np.testing.assert_allclose(got[safe], want[safe], atol=5.1e-5, err_msg=name)
        else:
            assert raw[name].dtype == np.float32
            np.testing.assert_allclose(got[safe], want[safe], rtol=2e-5, atol=1e-6, err_msg=name)
        assert ds[name].attrs["formula"] == INDICES[name].formula
        assert ds[name].attrs["reference"]


def serve_pc_missions(tmp_path_factory):
    """Sentinel-1 RTC and Landsat scenes in the Planetary Computer style on a local STAC API:
    yields ``(MissionCatalog, CatalogSpec at its URL)``."""
    from conftest import require

    from stac2cube.testing.pgstac import postgres_available, start_local_stac_api
    from stac2cube.testing.synthetic_missions import (
        standard_mission_scenes,
        write_mission_catalog,
    )

    require(postgres_available(), "PostgreSQL 15 + PostGIS not installed (run scripts/setup.sh)")
    scenes, _ = standard_mission_scenes("planetary-computer")
    keep = [s for s in scenes if s.mission in ("sentinel-1-rtc", "landsat-c2-l2")]
    cat = write_mission_catalog(tmp_path_factory.mktemp("pc-missions"), "planetary-computer", keep)
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        yield cat, PLANETARY_COMPUTER.with_url(api.url)


@pytest.fixture(scope="module")
def pc_missions(tmp_path_factory):
    yield from serve_pc_missions(tmp_path_factory)


@pytest.mark.integration
@pytest.mark.parametrize("scale", ["db", "linear"])
def test_sar_ratios_in_a_sentinel1_build_match_the_linear_gamma0(pc_missions, monkeypatch, scale):
    from mission_helpers import expected_step
    from test_missions_build import request_on, run_pipeline

    from stac2cube.radiometry import ProcessingOptions

    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "synthetic-test-key")
    cat, spec = pc_missions
    options = ProcessingOptions(sar_scale=scale)
    request = request_on(spec, "sentinel-1-rtc", bands=["vv"], indices=S1_INDICES,
                         options=options)  # fmt: skip
    ds, _, _ = run_pipeline(request, options=options)
    assert list(ds.data_vars) == ["vv", *S1_INDICES]  # vh read for the ratios only
    assert ds.sizes["time"] == 2
    for t in ds.time.values:
        ids = str(ds.item_ids.sel(time=t).values).split(",")
        lin = {}
        for pol in ("vv", "vh"):
            lin[pol], safe = expected_step(cat, "sentinel-1-rtc", ids, pol, ds.x.values,
                                           ds.y.values, 32632, sar_scale="linear")  # fmt: skip
        vv, vh = lin["vv"], lin["vh"]
        if scale == "db":  # gamma0 0 has no dB: no ratio there either
            vv, vh = np.where(vv > 0, vv, np.nan), np.where(vh > 0, vh, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            want = {"VV_VH": vv / vh, "VH_VV": vh / vv, "RVI": 4 * vh / (vv + vh)}
        for name, values in want.items():
            values = np.where(np.isinf(values), np.nan, values)  # x / 0 -> NaN
            got = ds[name].sel(time=t).values
            np.testing.assert_allclose(got[safe], values[safe], rtol=1e-4, equal_nan=True,
                                       err_msg=f"{name} {scale} at {t}")  # fmt: skip
            assert np.isfinite(got[safe]).mean() > 0.5, name
            assert ds[name].encoding["dtype"] == "float32"
    if scale == "linear":  # the zero rows of the synthetic scenes: vh / vv is NaN, not inf
        zero = ds.vv.values == 0
        assert zero.any() and np.isnan(ds.VH_VV.values[zero]).all()


@pytest.mark.integration
def test_extending_with_other_indices_is_refused_and_leaves_the_cube(stac_url, tmp_path):
    from stac2cube.errors import GridMismatchError

    store = tmp_path / "ndvi.icechunk"
    args = dict(mission="sentinel-2-l2a", bbox=list(demo_bbox()), start="2024-01-01",
                catalog=stac_url, collection="sentinel-2-c1-l2a", bands=["B04"],
                store=str(store), statistics=False)  # fmt: skip
    get_stac_layers(end="2024-01-06", indices=["NDVI"], **args)
    from stac2cube import cube_info

    assert cube_info(store)["indices"] == ["NDVI"]
    before = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file())
    with pytest.raises(GridMismatchError, match=r"indices \[\] != cube's \['NDVI'\]"):
        get_stac_layers(end="2024-01-31", **args)
    with pytest.raises(GridMismatchError, match="tile_mode 'separate' != cube's 'mosaic'"):
        get_stac_layers(end="2024-01-31", indices=["NDVI"], tile_mode="separate", **args)
    after = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file())
    assert after == before
