"""Mission specs, catalog tables, radiometry rules and URL signing (no STAC server needed).

Every real item recorded from Earth Search and Planetary Computer (``tests/data/stac``) is parsed
to the right bands and radiometry rule, and its metadata is enough to place it on a cube grid.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import start_sas_server

from stac2cube.catalogs import (
    EARTH_SEARCH,
    PLANETARY_COMPUTER,
    TERRABYTE,
    resolve_catalog,
    where_offered,
)
from stac2cube.errors import InvalidRequestError
from stac2cube.missions import MISSIONS, find_asset, get_mission
from stac2cube.radiometry import (
    DEFAULT_QA_MASK,
    DEFAULT_SCL_MASK,
    ProcessingOptions,
    Radiometry,
    decide_radiometry,
    landsat_radiometry,
    sentinel1_radiometry,
)
from stac2cube.request import make_request
from stac2cube.signing import (
    PlanetaryComputerSigner,
    SigningReader,
    make_signer,
    needs_signing,
    redact,
    subscription_key,
)

DATA = Path(__file__).parent / "data" / "stac"


def real_items() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DATA.glob("*.json")):
        for item in json.loads(path.read_text())["features"]:
            out.append((path.name, item))
    return out


REAL = real_items()

#: (file prefix, collection) -> (mission, {band: expected asset key or None}, rule)
EXPECTED = {
    ("earth-search", "sentinel-2-c1-l2a"): (
        "sentinel-2-l2a",
        {"B01": "coastal", "B04": "red", "B05": "rededge1", "B8A": "nir08", "SCL": "scl"},
        "s2-offset-1000",
    ),
    ("earth-search", "sentinel-2-l2a"): (
        "sentinel-2-l2a",
        {"B04": "red", "B08": "nir", "B12": "swir22", "SCL": "scl"},
        "s2-offset-applied-in-cog",
    ),
    ("earth-search", "sentinel-2-l1c"): (
        "sentinel-2-l1c",
        {"B04": "red", "B10": "cirrus", "B8A": "nir08", "B09": "nir09"},
        "s2-offset-1000",
    ),
    ("earth-search", "landsat-c2-l2"): (
        "landsat-c2-l2",
        {"coastal": "coastal", "red": "red", "lwir11": "lwir11", "qa_pixel": "qa_pixel"},
        "landsat-c2-l2sp",
    ),
    ("earth-search", "cop-dem-glo-30"): ("cop-dem-glo-30", {"elevation": "data"}, "cop-dem"),
    ("planetary-computer", "sentinel-2-l2a"): (
        "sentinel-2-l2a",
        # B8A's common_name is "rededge" on Planetary Computer: the key decides
        {"B04": "B04", "B8A": "B8A", "B05": "B05", "B09": "B09", "SCL": "SCL"},
        "s2-offset-1000",
    ),
    ("planetary-computer", "sentinel-1-rtc"): (
        "sentinel-1-rtc",
        {"vv": "vv", "vh": "vh", "hh": None, "hv": None},
        "s1-gamma0-db",
    ),
}


@pytest.mark.parametrize(("source", "item"), REAL, ids=[f"{s}:{i['id']}" for s, i in REAL])
def test_every_real_item_gets_its_bands_and_rule(source, item):
    from stac2cube.search import normalise_item

    item = normalise_item(copy.deepcopy(item))
    coll = item["collection"]
    catalog = source.split("_")[0]
    if coll == "sentinel-1-grd":  # Earth Search's only Sentinel-1: not terrain-corrected
        with pytest.raises(InvalidRequestError) as err:
            decide_radiometry("sentinel-1-rtc", item)
        assert "GRD amplitude" in str(err.value)
        assert "planetary-computer (sentinel-1-rtc" in str(err.value)
        assert "terrabyte (sentinel-1-nrb" in str(err.value)
        return
    if coll == "landsat-c2-l2" and catalog == "planetary-computer":
        sr = item["properties"]["landsat:correction"] == "L2SR"
        mission, bands = "landsat-c2-l2", {"red": "red", "qa_pixel": "qa_pixel"}
        bands["lwir11"] = None if sr else "lwir11"
        rule = "landsat-c2-l2sr" if sr else "landsat-c2-l2sp"
    else:
        mission, bands, rule = EXPECTED[(catalog, coll)]
    spec = get_mission(mission)
    for band, key in bands.items():
        assert find_asset(item, spec.band(band)) == key, band
    rad = decide_radiometry(mission, item)
    assert rad.rule == rule
    if mission.startswith("sentinel-2"):
        assert rad.baseline == item["properties"]["s2:processing_baseline"]
        assert rad.offset_dn == (-1000 if rule == "s2-offset-1000" else 0)
        legacy_warning = any("contradicts earthsearch" in w for w in rad.warnings)
        assert legacy_warning == (rule == "s2-offset-applied-in-cog")
    if mission == "landsat-c2-l2":
        assert rad.scaling("red") == (2.75e-05, -0.2)
        assert rad.scaling("lwir11") == (0.00341802, 149.0)
        assert rad.warnings == ()  # declared raster:bands agree with Collection 2
        assert ("lwir11" in rad.missing) == (rule == "landsat-c2-l2sr")
    if mission == "sentinel-1-rtc":
        assert rad.nodata == -32768 and rad.transform == "db"
        assert item["properties"]["proj:epsg"] == 32614  # from proj:code
        assert len(item["properties"]["proj:transform"]) == 6  # from the 3x3 form


@pytest.mark.parametrize("source", sorted({s for s, i in REAL if "grd" not in i["collection"]}))
def test_real_items_can_be_placed_on_a_cube_grid(source):
    """The loader builds its (lazy) stacks from the real metadata; nothing is read."""
    from stac2cube.load import load_raw
    from stac2cube.search import normalise_item

    items = [
        normalise_item(copy.deepcopy(i))
        for s, i in REAL
        if s == source and i["collection"] != "sentinel-1-grd"
    ]
    by_coll: dict[str, list[dict]] = {}
    for item in items:
        by_coll.setdefault(item["collection"], []).append(item)
    for coll, group in by_coll.items():
        mission = {
            "sentinel-2-c1-l2a": "sentinel-2-l2a",
            "sentinel-2-l2a": "sentinel-2-l2a",
            "sentinel-2-l1c": "sentinel-2-l1c",
        }.get(coll, coll)
        first = group[0]
        lon = (first["bbox"][0] + first["bbox"][2]) / 2
        lat = (first["bbox"][1] + first["bbox"][3]) / 2
        polar = abs(lat) > 80
        request = make_request(
            mission=mission,
            bbox=[lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01],
            start="2020-01-01",
            end="2025-12-31",
            catalog="http://127.0.0.1:1",
            collection=coll,
            resolution=30,
            crs="EPSG:3031" if polar else None,
        )
        raw = load_raw(request, [first])
        for stack in raw.values():
            assert stack.sizes["item"] == 1
            assert (stack.sizes["y"], stack.sizes["x"]) == request.grid.shape


# --- catalogs -----------------------------------------------------------------------------------


def test_pairs_not_offered_name_where_the_mission_is():
    with pytest.raises(InvalidRequestError) as err:
        PLANETARY_COMPUTER.collection_for("sentinel-2-l1c")
    msg = str(err.value)
    assert "not offered by catalog planetary-computer" in msg
    assert "earth-search (sentinel-2-l1c)" in msg and "terrabyte (sentinel-2-c1-l1c)" in msg
    with pytest.raises(InvalidRequestError) as err:
        EARTH_SEARCH.collection_for("sentinel-1-rtc")
    msg = str(err.value)
    assert "only sentinel-1-grd, which is not terrain-corrected" in msg
    assert "planetary-computer (sentinel-1-rtc: needs a Planetary Computer account" in msg
    assert "terrabyte (sentinel-1-nrb: sentinel-1-nrb is CEOS-ARD Normalised Radar" in msg
    with pytest.raises(InvalidRequestError, match="not offered by catalog earth-search"):
        make_request(
            mission="sentinel-1-rtc",
            bbox=[11.5, 48.1, 11.52, 48.11],
            start="2024-01-01",
            catalog="earth-search",
        )


def test_planetary_computer_rtc_without_credentials_names_the_alternative(monkeypatch):
    from planetary_computer.settings import Settings

    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    monkeypatch.setattr(Settings.get(), "subscription_key", None)
    with pytest.raises(InvalidRequestError) as err:
        make_request(
            mission="sentinel-1-rtc",
            bbox=[11.5, 48.1, 11.52, 48.11],
            start="2024-01-01",
            catalog="planetary-computer",
        )
    msg = str(err.value)
    assert "sentinel-1-rtc on planetary-computer needs a Planetary Computer account" in msg
    assert "PC_SDK_SUBSCRIPTION_KEY" in msg
    assert "without an account use: terrabyte (sentinel-1-nrb" in msg
    # the other Planetary Computer collections need no account
    assert PLANETARY_COMPUTER.collection_for("landsat-c2-l2") == "landsat-c2-l2"
    # a key from the environment, the settings, or given explicitly is enough
    PLANETARY_COMPUTER.check_access("sentinel-1-rtc", "sentinel-1-rtc", key="k")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "from-env")
    assert PLANETARY_COMPUTER.collection_for("sentinel-1-rtc") == "sentinel-1-rtc"


def test_collection_tables_and_custom_catalogs():
    assert EARTH_SEARCH.collection_for("sentinel-2-l2a") == "sentinel-2-c1-l2a"
    assert EARTH_SEARCH.collection_for("sentinel-2-l1c") == "sentinel-2-l1c"
    assert TERRABYTE.collection_for("sentinel-2-l1c") == "sentinel-2-c1-l1c"
    assert TERRABYTE.collection_for("landsat-c2-l2").split(",") == [
        "landsat-ot-c2-l2",
        "landsat-etm-c2-l2",
        "landsat-tm-c2-l2",
    ]
    for cat in (EARTH_SEARCH, PLANETARY_COMPUTER, TERRABYTE):
        assert cat.collection_for("cop-dem-glo-30") == "cop-dem-glo-30"
        assert cat.collection_for("landsat-c2-l2", "my-landsat") == "my-landsat"
    custom = resolve_catalog("https://stac.example.org/api")
    for mission in MISSIONS:  # a mirror serving the same collection ids
        assert custom.collection_for(mission) == mission
    assert where_offered("sentinel-1-rtc", exclude="terrabyte").startswith("planetary-computer")
    assert TERRABYTE.with_url("http://127.0.0.1:9/").url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("mission", "alias", "name"),
    [
        ("landsat-c2-l2", "SR_B4", "red"),
        ("landsat-c2-l2", "sr_b5", "nir08"),
        ("landsat-c2-l2", "ST_B10", "lwir11"),
        ("landsat-c2-l2", "ST_B6", "lwir11"),
        ("landsat-c2-l2", "QA_PIXEL", "qa_pixel"),
        ("sentinel-2-l1c", "cirrus", "B10"),
        ("sentinel-2-l1c", "red", "B04"),
        ("sentinel-1-rtc", "VV", "vv"),
        ("cop-dem-glo-30", "data", "elevation"),
        ("cop-dem-glo-30", "dem", "elevation"),
    ],
)
def test_band_names_and_aliases(mission, alias, name):
    assert get_mission(mission).band(alias).name == name


def test_unknown_band_errors_say_what_aliases_mean():
    with pytest.raises(InvalidRequestError, match="SR_B4 = red"):
        get_mission("landsat-c2-l2").band("SR_B9")
    with pytest.raises(InvalidRequestError, match="unknown band 'B10' for mission sentinel-2-l2a"):
        get_mission("sentinel-2-l2a").band("B10")


def test_find_asset_by_pattern_and_unique_common_name():
    s1, ls = get_mission("sentinel-1-rtc"), get_mission("landsat-c2-l2")
    nrb = {"assets": {"vv-g-lin": {}, "vh-g-lin": {}, "dm": {}, "vv-g-db": {}}}
    assert find_asset(nrb, s1.band("vv")) == "vv-g-lin"
    assert find_asset(nrb, s1.band("hh")) is None
    tm = {"assets": {"ST_B6_thermal": {"eo:bands": [{"name": "TM_B6", "common_name": "lwir"}]}}}
    assert find_asset(tm, ls.band("lwir11")) == "ST_B6_thermal"
    # a common name two assets share decides nothing
    both = {
        "assets": {
            "a": {"eo:bands": [{"name": "x", "common_name": "red"}]},
            "b": {"eo:bands": [{"name": "y", "common_name": "red"}]},
        }
    }
    assert find_asset(both, ls.band("red")) is None


# --- radiometry ---------------------------------------------------------------------------------


def _template(name: str) -> dict:
    from importlib import resources

    text = resources.files("stac2cube.testing").joinpath("templates", name).read_text()
    return json.loads(text)["item"]


def test_landsat_correction_evidence_and_declared_factor_contradictions():
    item = _template("item_earth-search__landsat-c2-l2.json")
    assert landsat_radiometry(item).rule == "landsat-c2-l2sp"
    no_prop = copy.deepcopy(item)
    del no_prop["properties"]["landsat:correction"]
    rad = landsat_radiometry(no_prop)
    assert rad.rule == "landsat-c2-l2sp" and any("taken from id" in w for w in rad.warnings)
    anonymous = copy.deepcopy(no_prop)
    anonymous["id"] = "scene-1"
    del anonymous["assets"]["lwir11"]
    rad = landsat_radiometry(anonymous)
    assert rad.rule == "landsat-c2-l2sr" and rad.missing == ("lwir11",)
    wrong = copy.deepcopy(item)
    wrong["assets"]["red"]["raster:bands"][0].update(scale=1e-4, offset=0)
    rad = landsat_radiometry(wrong)
    assert rad.scaling("red") == (2.75e-05, -0.2)
    assert any("used the Collection 2 factors" in w for w in rad.warnings)


def test_sentinel1_rules_nodata_and_grd_refusal():
    item = _template("item_planetary-computer__sentinel-1-rtc.json")
    assert sentinel1_radiometry(item).rule == "s1-gamma0-db"
    lin = sentinel1_radiometry(item, ProcessingOptions(sar_scale="linear"))
    assert (lin.rule, lin.transform, lin.nodata) == ("s1-gamma0-linear", None, -32768)
    undeclared = copy.deepcopy(item)
    for asset in undeclared["assets"].values():
        asset["raster:bands"] = [{"data_type": "float32"}]
    rad = sentinel1_radiometry(undeclared)
    assert rad.nodata == -32768 and any("no nodata declared" in w for w in rad.warnings)
    grd = copy.deepcopy(item)
    grd["assets"]["vv"]["raster:bands"] = [{"data_type": "uint16", "nodata": 0}]
    with pytest.raises(InvalidRequestError, match="GRD amplitude"):
        sentinel1_radiometry(grd)


def test_processing_options_validate_and_round_trip():
    opts = ProcessingOptions()
    assert (opts.mask_clouds, opts.scl_classes, opts.qa_flags, opts.sar_scale) == (
        False,
        DEFAULT_SCL_MASK,
        DEFAULT_QA_MASK,
        "db",
    )
    assert opts.qa_mask_bits == 0b11110
    custom = ProcessingOptions(mask_clouds=True, scl_classes=(9, 8, 9), qa_flags=("cloud",))
    assert custom.scl_classes == (8, 9)
    assert ProcessingOptions.from_record(json.loads(json.dumps(custom.describe()))) == custom
    with pytest.raises(InvalidRequestError, match=r"SCL classes must be 0\.\.11"):
        ProcessingOptions(scl_classes=(12,))
    with pytest.raises(InvalidRequestError, match="unknown QA_PIXEL flag"):
        ProcessingOptions(qa_flags=("clouds",))
    with pytest.raises(InvalidRequestError, match="sar_scale"):
        ProcessingOptions(sar_scale="amplitude")


def test_to_physical_per_band_scaling_db_and_nodata():
    from stac2cube.encoding import stored_range, variable_encoding
    from stac2cube.pixels import to_physical

    raw = xr.DataArray(
        np.array([[[0, 10000]], [[30000, 7273]]], "uint16")[:, :, :],
        dims=("item", "band", "x"),
        coords={"band": ["lwir11"]},
    )
    rads = [landsat_radiometry({"id": "LC08_L2SP_x", "properties": {}, "assets": {}})] * 2
    got = to_physical(raw, rads).values
    assert np.isnan(got[0, 0, 0])
    np.testing.assert_allclose(got[0, 0, 1], 10000 * 0.00341802 + 149.0, rtol=1e-6)
    s1 = xr.DataArray(np.array([[0.1, -32768.0, np.nan, 0.0]], "float32"), dims=("item", "x"))
    db = to_physical(s1, [Radiometry("s1-gamma0-db", 1.0, 0.0, nodata=-32768, transform="db")])
    np.testing.assert_allclose(db.values, [[-10.0, np.nan, np.nan, np.nan]], atol=1e-5)
    ls = get_mission("landsat-c2-l2")
    lo, hi = stored_range(variable_encoding(ls, ls.band("red")))
    assert np.isclose(lo, 2.75e-05 - 0.2) and np.isclose(hi, 65535 * 2.75e-05 - 0.2)
    s1m = get_mission("sentinel-1-rtc")
    assert variable_encoding(s1m, s1m.band("vv"))["dtype"] == "int16"
    linear = variable_encoding(s1m, s1m.band("vv"), ProcessingOptions(sar_scale="linear"))
    assert linear["dtype"] == "float32" and np.isnan(linear["_FillValue"])


def test_mosaic_prefers_valid_items_and_falls_back_for_classes():
    from stac2cube.mosaic import mosaic_first_valid

    scl = xr.DataArray(np.array([[9, 4, 0], [4, 9, 5]], "uint8"), dims=("item", "x"))
    valid = xr.DataArray(np.array([[False, True, False], [True, False, True]]), dims=("item", "x"))
    out = mosaic_first_valid(scl, [[0, 1]], nodata=0, valid=valid)
    assert out.values.tolist() == [[4, 4, 5]]
    none_valid = xr.zeros_like(valid)
    assert mosaic_first_valid(scl, [[0, 1]], nodata=0, valid=none_valid).values.tolist() == [
        [9, 4, 5]
    ]


# --- catalog access -----------------------------------------------------------------------------


@pytest.fixture()
def sas_endpoint(monkeypatch):
    """A local stand-in for the Planetary Computer SAS token API (127.0.0.1)."""
    from planetary_computer import sas
    from planetary_computer.settings import Settings

    server, url, seen = start_sas_server("SECRET")
    monkeypatch.setattr(Settings.get(), "sas_url", url)
    monkeypatch.setattr(Settings.get(), "subscription_key", None)
    monkeypatch.setattr(sas, "TOKEN_CACHE", {})
    yield seen
    server.shutdown()
    server.server_close()


def test_planetary_computer_signer_uses_the_key_and_never_shows_it(sas_endpoint, monkeypatch):
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    signer = PlanetaryComputerSigner("my-secret-key")
    href = "https://sentinel1euwestrtc.blob.core.windows.net/sentinel1-grd-rtc/x/iw-vv.tif"
    signed = signer(href)
    assert signed == href + "?st=2024&se=2099&sp=rl&sig=SECRET"
    assert sas_endpoint == [
        ("/api/sas/v1/token/sentinel1euwestrtc/sentinel1-grd-rtc", "my-secret-key")
    ]
    assert signer("file:///data/x.tif") == "file:///data/x.tif"  # only blob storage is signed
    assert "my-secret-key" not in repr(signer) and "my-secret-key" not in str(signer)
    assert pickle.loads(pickle.dumps(signer)) == signer  # travels to Dask workers
    assert redact(f"Error opening '{signed}'") == f"Error opening '{href}?<sas-token>'"


def test_subscription_key_sources(monkeypatch):
    assert subscription_key("explicit", environ={"PC_SDK_SUBSCRIPTION_KEY": "env"}) == "explicit"
    assert subscription_key(environ={"PC_SDK_SUBSCRIPTION_KEY": "env"}) == "env"
    assert subscription_key(environ={}) is None
    assert needs_signing("https://x.blob.core.windows.net/c/a.tif")
    assert not needs_signing("s3://usgs-landsat/a.tif")


def test_signers_are_chosen_per_catalog_and_href():
    assert isinstance(make_signer(PLANETARY_COMPUTER), PlanetaryComputerSigner)
    assert make_signer(EARTH_SEARCH, [{"assets": {"a": {"href": "s3://b/k.tif"}}}]) is None
    reserved = [{"assets": {"vv": {"href": "https://a.blob.core.windows.net/c/vv.tif"}}}]
    assert isinstance(make_signer(resolve_catalog("https://x.org/stac"), reserved),
                      PlanetaryComputerSigner)  # fmt: skip


def _local_cog(tmp_path: Path) -> Path:
    from stac2cube.testing.synthetic_missions import write_raster

    path = tmp_path / "x.tif"
    data = np.arange(64 * 64, dtype="uint16").reshape(64, 64)
    write_raster(path, data, 32632, [10, 0, 690000, 0, -10, 5340000], nodata=0)
    return path


class _MapSigner:
    """A picklable test signer: every href "signs" to ``target``; calls are recorded."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.calls: list[str] = []

    def __call__(self, href: str) -> str:
        self.calls.append(href)
        return self.target


def _reader(url: str, signer) -> SigningReader:
    from rasterio.enums import Resampling
    from stackstac.raster_spec import RasterSpec

    spec = RasterSpec(
        epsg=32632, bounds=(690000, 5339360, 690640, 5340000), resolutions_xy=(10, 10)
    )
    return SigningReader(
        signer=signer,
        url=url,
        spec=spec,
        resampling=Resampling.nearest,
        dtype=np.dtype("uint16"),
        fill_value=np.uint16(0),
        scale_offset=(1, 0),
    )


def test_signing_reader_signs_when_it_opens_and_redacts_errors(tmp_path):
    from rasterio.windows import Window

    cog = _local_cog(tmp_path)
    blob = "https://acct.blob.core.windows.net/cont/x.tif"
    signer = _MapSigner(cog.as_uri())
    reader = _reader(blob, signer)
    assert signer.calls == []
    data = reader.read(Window(0, 0, 64, 64))
    assert signer.calls == [blob] and data[1, 2] == 66
    assert reader.url == blob  # the unsigned href is what errors will name
    clone = pickle.loads(pickle.dumps(reader))  # readers travel to Dask workers
    assert clone.signer.target == cog.as_uri() and clone.url == blob
    assert clone.read(Window(0, 0, 4, 4))[0, 1] == 1

    def bad_token(href):
        return "/nonexistent/x.tif?st=1&se=2&sig=TOPSECRET"

    with pytest.raises(RuntimeError) as err:
        _reader(blob, bad_token).read(Window(0, 0, 8, 8))
    assert "TOPSECRET" not in str(err.value) and "Error opening" in str(err.value)

    def refused(href):
        raise PermissionError("HTTP 403 for https://x.blob.core.windows.net/c?sig=LEAK")

    with pytest.raises(RuntimeError) as err:
        _reader(blob, refused).read(Window(0, 0, 8, 8))
    assert blob in str(err.value) and "cannot sign" in str(err.value)
    assert "LEAK" not in str(err.value)


def test_gdal_options_for_requester_pays_and_public_buckets():
    from stac2cube.load import gdal_env_for

    landsat = [{"assets": {"red": {"href": "s3://usgs-landsat/a.TIF"}}}]
    assert gdal_env_for(landsat, environ={})._always["AWS_REQUEST_PAYER"] == "requester"
    flagged = [{"assets": {"a": {"href": "s3://other/a.tif", "storage:requester_pays": True}}}]
    assert gdal_env_for(flagged, environ={})._always["AWS_REQUEST_PAYER"] == "requester"
    dem = [{"assets": {"data": {"href": "s3://copernicus-dem-30m/x.tif"}}}]
    assert gdal_env_for(dem, environ={})._always["AWS_NO_SIGN_REQUEST"] == "YES"
    assert gdal_env_for(dem, environ={"AWS_PROFILE": "me"}) is None
    assert gdal_env_for([{"assets": {"a": {"href": "file:///x.tif"}}}], environ={}) is None
