"""Super-resolution of real cubes: the flow, its group, appends, bad input, the CLI.

A cube is built from the session's STAC API (collection ``season-s2``: 600 m scenes with B02
B03 B04 B08, July 2020 with a nodata strip on its east half); the model is SEN2SRLite RGBN with
random weights written by :mod:`stac2cube.testing.superres` and loaded by the real loader.
Expected pixels come from :func:`stac2cube.superres.super_resolve` run here on the cube's own
decoded values; georeferencing is checked against the cube's 10 m grid.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from helpers import small_bbox

from stac2cube import get_stac_layers, open_cube, super_resolution
from stac2cube.cli import EXIT_ERROR, main
from stac2cube.cube import Cube
from stac2cube.errors import InvalidRequestError
from stac2cube.superres import SUPERRES_ENCODING, check_cube, super_resolve
from stac2cube.superres_models import load_model, variant
from stac2cube.testing.superres import LOAD_PY_SENTINEL, write_test_model

pytestmark = pytest.mark.integration
torch.set_num_threads(2)
BANDS = ["B02", "B03", "B04", "B08"]
RGBN = ["B04", "B03", "B02", "B08"]  # the model's order


def build(store, end: str, **kw):
    return get_stac_layers(
        mission="sentinel-2-l2a", bbox=small_bbox(), start="2020-06-01", end=end,
        catalog=kw.pop("catalog"), collection="season-s2", bands=BANDS, store=str(store), **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sen2sr-models")
    write_test_model(root, "rgbn", seed=11)
    return root


@pytest.fixture(scope="module")
def cube(season_api, stac_url, tmp_path_factory):
    store = tmp_path_factory.mktemp("superres") / "cube.icechunk"
    build(store, "2020-07-31", catalog=stac_url)
    return store


def head(store) -> str:
    return Cube(store).head()


def expected(store, models, t: int, snapshot=None) -> np.ndarray:
    ds = open_cube(store, snapshot=snapshot)
    data = np.stack([ds[b].isel(time=t).values for b in RGBN])
    return super_resolve(data.astype(np.float32), load_model(models, "rgbn"))


def test_flow_writes_the_superres_group_on_the_nested_grid(cube, models):
    summary = super_resolution(store=str(cube), model_dir=str(models), device="cpu")
    assert summary["computed"] == 2 and summary["kept"] == 0 and summary["snapshot"]
    base = open_cube(cube)
    sr = open_cube(cube, group="superres")
    assert sorted(sr.data_vars) == ["B02", "B03", "B04", "B08"]
    assert sr.sizes == {"time": 2, "y": 4 * base.sizes["y"], "x": 4 * base.sizes["x"]}
    np.testing.assert_array_equal(sr.time.values, base.time.values)
    # georeferencing: output pixel edges coincide with the 10 m grid's, 4 x 4 per pixel
    x10, y10 = base.x.values, base.y.values
    assert np.allclose(np.diff(sr.x.values), 2.5) and np.allclose(np.diff(sr.y.values), -2.5)
    assert sr.x.values[0] - 1.25 == pytest.approx(x10[0] - 5.0, abs=1e-6)
    assert sr.y.values[0] + 1.25 == pytest.approx(y10[0] + 5.0, abs=1e-6)
    assert sr.x.values[-1] + 1.25 == pytest.approx(x10[-1] + 5.0, abs=1e-6)
    edges = np.append(x10 - 5.0, x10[-1] + 5.0)
    assert (np.histogram(sr.x.values, edges)[0] == 4).all()
    assert sr.spatial_ref.attrs["spatial_ref"] == base.spatial_ref.attrs["spatial_ref"]
    gt = [float(v) for v in sr.spatial_ref.attrs["GeoTransform"].split()]
    assert gt == [x10[0] - 5.0, 2.5, 0.0, y10[0] + 5.0, 0.0, -2.5]
    # attributes name the model
    attrs = sr.attrs
    assert attrs["stac2cube:superres_variant"] == "rgbn"
    assert attrs["stac2cube:superres_patch_size"] == 128
    assert attrs["stac2cube:superres_overlap"] == 32
    assert len(attrs["stac2cube:superres_weights_sha256"]) == 64
    assert attrs["stac2cube:superres_sen2sr_version"] == "0.8.5"
    assert attrs["stac2cube:superres_torch_version"] == torch.__version__
    # pixels: the model on the cube's own values, to the encoding's quantisation
    for t in range(2):
        want = expected(cube, models, t)
        got = np.stack([sr[b].isel(time=t).values for b in RGBN])
        assert np.array_equal(np.isnan(got), np.isnan(want) | (want < -0.0999))
        ok = np.isfinite(got)
        np.testing.assert_allclose(got[ok], want[ok], atol=0.5e-4 + 1e-6)
    # July's east half is nodata: NaN there (dilated by 2 px), valid elsewhere, no NaN patches
    july = base.B04.isel(time=1).values
    assert np.isnan(july).any() and np.isfinite(july).any()
    got = sr.B04.isel(time=1).values
    valid_far = np.isfinite(july)
    from scipy.ndimage import minimum_filter

    valid_far = minimum_filter(valid_far, size=5, mode="nearest")
    hr_valid = np.repeat(np.repeat(valid_far, 4, 0), 4, 1)
    assert np.isfinite(got[hr_valid]).all()
    assert np.isnan(got[~np.repeat(np.repeat(np.isfinite(july), 4, 0), 4, 1)]).all()
    assert not (models / "NonReference_RGBN_x4" / LOAD_PY_SENTINEL).exists()


def test_second_run_changes_nothing(cube, models):
    before = head(cube)
    summary = super_resolution(store=str(cube), model_dir=str(models), device="cpu")
    assert summary["computed"] == 0 and summary["snapshot"] is None
    assert head(cube) == before


def test_an_update_appends_the_new_step_with_the_same_encoding(cube, models, stac_url):
    raw_before = open_cube(cube, group="superres", decode=False)
    old = {b: raw_before[b].values.copy() for b in raw_before.data_vars}
    # the cube has the group: the build adds August's output too, in its own commit, with the
    # settings stored in the group (no switch needed)
    build(cube, "2020-08-31", catalog=stac_url)
    summary = super_resolution(store=str(cube))  # nothing left to do
    assert summary["computed"] == 0 and summary["kept"] == 3 and summary["snapshot"] is None
    raw = open_cube(cube, group="superres", decode=False)
    assert raw.sizes["time"] == 3
    for b in raw.data_vars:
        np.testing.assert_array_equal(raw[b].values[:2], old[b])
        arr = zarr.open_group(Cube(cube)._readonly().store, mode="r")[f"superres/{b}"]
        assert arr.dtype == np.dtype(SUPERRES_ENCODING["dtype"])
        assert arr.fill_value == SUPERRES_ENCODING["_FillValue"]
        assert arr.attrs["scale_factor"] == SUPERRES_ENCODING["scale_factor"]
        assert arr.attrs["add_offset"] == SUPERRES_ENCODING["add_offset"]
    sr = open_cube(cube, group="superres")
    want = expected(cube, models, 2)
    got = np.stack([sr[b].isel(time=2).values for b in RGBN])
    ok = np.isfinite(got) & np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], atol=0.5e-4 + 1e-6)


def _untouched(store, models, **kw):
    before = head(store)
    groups = Cube(store).groups()
    with pytest.raises(InvalidRequestError) as info:
        super_resolution(store=str(store), **kw)
    assert "\n" not in str(info.value)
    assert head(store) == before and Cube(store).groups() == groups
    return str(info.value)


def test_bad_input_is_one_line_and_leaves_the_store_untouched(cube, models, tmp_path):
    msg = _untouched(cube, models, model_dir=str(models), model="full")
    assert "needs bands" in msg and "lacks B05 B06 B07 B8A B11 B12" in msg
    msg = _untouched(cube, models, model_dir=str(tmp_path / "no-weights"))
    assert str(tmp_path / "no-weights") in msg and "mlstac.download" in msg
    write_test_model(tmp_path / "partial", "rgbn")
    (tmp_path / "partial" / "NonReference_RGBN_x4" / "hard_constraint.safetensor").unlink()
    msg = _untouched(cube, models, model_dir=str(tmp_path / "partial"))
    assert "incomplete" in msg and "hard_constraint.safetensor" in msg
    if not torch.cuda.is_available():
        msg = _untouched(cube, models, model_dir=str(models), device="cuda")
        assert "no CUDA GPU" in msg


def test_non_sentinel2_and_non_10m_cubes_are_refused(cube):
    """The check on the cube's recorded request (the Landsat/20 m records are the real
    record with the mission or the grid changed)."""
    record = dict(Cube(cube).require().request)
    names = list(open_cube(cube).data_vars)
    with pytest.raises(InvalidRequestError, match="needs a Sentinel-2 cube; x is a landsat"):
        check_cube({**record, "mission": "landsat-c2-l2"}, names, variant("rgbn"), "x")
    grid = {**record["grid"], "resolution": 20.0}
    with pytest.raises(InvalidRequestError, match="10 m grid"):
        check_cube({**record, "grid": grid}, names, variant("rgbn"), "x")


def test_cli_superres(cube, models, tmp_path, capsys):
    assert (
        main(["superres", "--store", str(cube), "--model-dir", str(tmp_path / "x")]) == EXIT_ERROR
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: super-resolution model directory")
    rc = main(["superres", "--store", str(cube), "--model-dir", str(models), "--device", "cpu"])
    assert rc == 0
    assert "0 time steps computed" in capsys.readouterr().out
    settings = json.loads(open_cube(cube, group="superres").attrs["stac2cube:superres_settings"])
    assert settings["model"] == "rgbn" and settings["device"] == "cpu"


def test_build_switch_and_update_keep_the_group_current(season_api, stac_url, models, tmp_path):
    """``build --superres`` writes the group in the build's own commit; a later build or update
    without the switch adds the new steps' output in its commit too."""
    store = tmp_path / "switched.icechunk"
    with pytest.raises(InvalidRequestError, match="superres_model_dir"):
        build(store, "2020-06-30", catalog=stac_url, superres=True)
    assert not store.exists()
    build(store, "2020-06-30", catalog=stac_url, superres=True, superres_model_dir=str(models))
    history = Cube(store).history()  # one commit (after icechunk's initial one): both groups
    assert [h["message"].split(":")[0] for h in history] == ["create", "Repository initialized"]
    sr = open_cube(store, group="superres")
    assert sr.sizes["time"] == 1 and sr.attrs["stac2cube:superres_variant"] == "rgbn"
    n = len(Cube(store).history())
    build(store, "2020-07-31", catalog=stac_url)  # no switch: the group is kept current
    assert len(Cube(store).history()) == n + 1
    sr = open_cube(store, group="superres")
    np.testing.assert_array_equal(sr.time.values, open_cube(store).time.values)
    assert np.isfinite(sr.B04.isel(time=1).values).any()
    want = expected(store, models, 1)
    got = np.stack([sr[b].isel(time=1).values for b in RGBN])
    ok = np.isfinite(got) & np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], atol=0.5e-4 + 1e-6)
    # the standalone flow finds nothing left to do
    assert super_resolution(store=str(store))["computed"] == 0


def test_a_step_inserted_in_the_middle_is_computed_and_the_others_copied(
    season_api, stac_url, models, tmp_path
):
    """June and August first, then July: the group's time axis is rebuilt in order, July is
    computed, June and August are the stored integers, copied unchanged."""
    store = tmp_path / "insert.icechunk"
    common = dict(
        mission="sentinel-2-l2a", bbox=small_bbox(), catalog=stac_url, collection="season-s2",
        bands=BANDS, store=str(store), superres_model_dir=str(models),
    )  # fmt: skip
    get_stac_layers(start="2020-06-01", end="2020-06-30", superres=True, **common)
    get_stac_layers(start="2020-08-01", end="2020-08-31", **common)
    before = open_cube(store, group="superres", decode=False)
    old = {b: before[b].values.copy() for b in before.data_vars}
    get_stac_layers(start="2020-07-01", end="2020-07-31", **common)
    raw = open_cube(store, group="superres", decode=False)
    np.testing.assert_array_equal(raw.time.values, open_cube(store).time.values)
    assert raw.sizes["time"] == 3
    for b in raw.data_vars:
        np.testing.assert_array_equal(raw[b].values[[0, 2]], old[b])
    sr = open_cube(store, group="superres")
    want = expected(store, models, 1)
    got = np.stack([sr[b].isel(time=1).values for b in RGBN])
    ok = np.isfinite(got) & np.isfinite(want)
    assert ok.any()
    np.testing.assert_allclose(got[ok], want[ok], atol=0.5e-4 + 1e-6)
