"""Super-resolution core: the SEN2SRLite architectures and loader, tiling, the hard constraint,
nodata, devices (CPU; random weights of the exact architectures, loaded by the real loader).

Expected values are computed here independently: torch's own bicubic upsampling and FFT for
the hard constraint, direct model calls on single windows, the whole-image CNN.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from stac2cube.errors import InvalidRequestError
from stac2cube.superres import (
    PATCH,
    SuperresSettings,
    output_coords,
    resolve_device,
    super_resolve,
    tile_starts,
)
from stac2cube.superres_models import (
    CNN_REACH,
    RGBN_PARAMETERS,
    RSWIR_PARAMETERS,
    count_parameters,
    load_model,
    weights_digest,
)
from stac2cube.testing.superres import LOAD_PY_SENTINEL, write_test_model

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sen2sr")
    for name in ("rgbn", "rswir-x2", "full"):
        write_test_model(root, name, seed=3)
    return root


@pytest.fixture(scope="module")
def rgbn(models):
    return load_model(models, "rgbn")


def texture(shape, seed=0):
    """Smooth reflectance-like texture in 0.02..0.5."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty(shape, np.float32)
    for k in range(c):
        a, b, p = rng.uniform(0.05, 0.3, 3)
        out[k] = 0.2 + 0.1 * np.sin(a * yy + p) * np.cos(b * xx) + rng.normal(0, 0.01, (h, w))
    return np.clip(out, 0.02, 0.5)


# -- the architectures and the loader ---------------------------------------------------------


def test_parameter_counts_of_the_published_architectures(models):
    rgbn = load_model(models, "rgbn")
    assert count_parameters(rgbn.module.sr_model) == RGBN_PARAMETERS == 572_336
    x2 = load_model(models, "rswir-x2")
    assert count_parameters(x2.module.sr_model) == RSWIR_PARAMETERS == 566_554
    full = load_model(models, "full")
    assert count_parameters(full.module) == 2 * RSWIR_PARAMETERS + RGBN_PARAMETERS
    # the constraint masks are buffers of the file, not parameters
    assert tuple(rgbn.module.hard_constraint.low_pass_mask.shape) == (512, 512)


def test_weights_load_strictly_and_load_py_never_runs(models, tmp_path):
    folder = models / "NonReference_RGBN_x4"
    model = load_model(folder, "rgbn")  # the model folder itself works too
    assert model.digest == weights_digest(folder, "rgbn")
    assert not (folder / LOAD_PY_SENTINEL).exists()
    # weights of another architecture in the file: refused in one line naming the file
    bad = write_test_model(tmp_path, "rgbn")
    (bad / "model.safetensor").write_bytes((models / "main" / "f2_model.safetensor").read_bytes())
    with pytest.raises(InvalidRequestError, match=r"model.safetensor does not hold the weights"):
        load_model(tmp_path, "rgbn")


def test_missing_or_incomplete_model_dir_is_one_line(models, tmp_path):
    with pytest.raises(InvalidRequestError) as info:
        load_model(tmp_path / "nowhere", "rgbn")
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "nowhere") in msg and "mlstac.download" in msg
    write_test_model(tmp_path, "full")
    (tmp_path / "main" / "f2_hard_constraint.safetensor").unlink()
    with pytest.raises(InvalidRequestError, match=r"incomplete .*missing f2_hard_constraint"):
        load_model(tmp_path, "full")
    with pytest.raises(InvalidRequestError, match="no rgbn model"):
        load_model(tmp_path, "rgbn")


def test_device_cuda_without_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # the test is for the CPU-only CI machine
    with pytest.raises(InvalidRequestError, match=r"--device cuda: .* sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(InvalidRequestError, match="unknown device"):
        SuperresSettings(model_dir=".", device="tpu")


# -- tiling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 40, 127, 128, 129, 200, 300, 515])
def test_tile_starts_cover_with_overlap(length):
    starts = tile_starts(length, 128, 32)
    assert starts[0] == 0
    if length > 128:
        assert starts[-1] == length - 128
        assert all(b - a <= 96 for a, b in itertools.pairwise(starts))
    even = tile_starts(length + length % 2, 128, 32, even=True)
    assert all(s % 2 == 0 for s in even)


def test_hard_constraint_low_pass_of_output_equals_bicubic_input(rgbn):
    """On one 128 px window: the output's FFT inside the stored mask equals that of the
    antialiased bicubic upsampling of the input (torch's own), to 1e-4 of the spectrum's
    largest coefficient (float32 FFTs of 512 x 512)."""
    x = texture((4, PATCH, PATCH), seed=1)
    out = super_resolve(x, rgbn, overlap=32)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None], size=(512, 512), mode="bicubic", antialias=True
    )[0]
    mask = rgbn.module.hard_constraint.low_pass_mask.bool()
    f_out = torch.fft.fftshift(torch.fft.fftn(torch.from_numpy(out), dim=(-2, -1)), dim=(-2, -1))
    f_up = torch.fft.fftshift(torch.fft.fftn(up, dim=(-2, -1)), dim=(-2, -1))
    diff = (f_out - f_up).abs()[:, mask]
    assert float(diff.max()) <= 1e-4 * float(f_up.abs().max())
    # and outside the mask the network did something (not just the bicubic image)
    assert float((f_out - f_up).abs()[:, ~mask].max()) > 1e-3 * float(f_up.abs().max())


def test_tiled_equals_the_direct_model_call_where_one_window_covers(rgbn):
    """A 300 x 200 grid (non-square, not a multiple of 128): where only one window covers a
    pixel the output is that window's direct model output; where two overlap, a weighted mean
    of theirs (so between them)."""
    x = texture((4, 300, 200), seed=2)
    out = super_resolve(x, rgbn, overlap=32, batch_size=3)
    assert out.shape == (4, 1200, 800) and np.isfinite(out).all()
    ys, xs = tile_starts(300), tile_starts(200)
    with torch.inference_mode():
        direct = {
            (y0, x0): rgbn(torch.from_numpy(x[None, :, y0 : y0 + 128, x0 : x0 + 128]))[0].numpy()
            for y0 in ys
            for x0 in xs
        }
    # window (0, 0) alone: rows < ys[1], cols < xs[1]
    alone = direct[(0, 0)][:, : ys[1] * 4, : xs[1] * 4]
    np.testing.assert_allclose(out[:, : ys[1] * 4, : xs[1] * 4], alone, atol=1e-5)
    # the middle of the overlap of windows (0,0) and (0,1) along x, rows only window row 0
    col = (xs[1] + 128) // 2 * 4 - xs[1] * 4  # in window (0,1)'s coordinates
    a = direct[(0, 0)][:, :40, xs[1] * 4 + col]
    b = direct[(0, xs[1])][:, :40, col]
    got = out[:, :40, xs[1] * 4 + col]
    assert np.all(got >= np.minimum(a, b) - 1e-5) and np.all(got <= np.maximum(a, b) + 1e-5)


def test_tiled_cnn_equals_whole_image_cnn_in_the_interior(rgbn):
    """The bare CNN (translation-equivariant, reach 21 px): tiled with overlap 96 (nothing taken
    within 24 px of a window edge) equals one whole-image pass, to float tolerance."""
    cnn = rgbn.module.sr_model
    x = texture((4, 200, 170), seed=4)
    tiled = super_resolve(x, lambda t: cnn(t), scale=4, overlap=96, batch_size=2, nodata_dilation=0)
    with torch.inference_mode():
        whole = cnn(torch.from_numpy(x)[None])[0].numpy()
    inner = slice(4 * CNN_REACH, -4 * CNN_REACH)
    np.testing.assert_allclose(tiled[:, inner, inner], whole[:, inner, inner], atol=2e-4)


@pytest.mark.parametrize("shape", [(40, 41), (1, 1), (7, 130)])
def test_small_and_odd_grids(rgbn, shape):
    x = texture((4, *shape), seed=5)
    out = super_resolve(x, rgbn)
    assert out.shape == (4, shape[0] * 4, shape[1] * 4) and np.isfinite(out).all()
    # a grid smaller than a patch: the padded window's top-left corner, cropped
    padded = np.pad(x, ((0, 0), (0, max(0, 128 - shape[0])), (0, max(0, 128 - shape[1]))), "edge")
    if shape[1] <= 128:
        with torch.inference_mode():
            direct = rgbn(torch.from_numpy(padded[None, :, :128, :128]))[0].numpy()
        np.testing.assert_allclose(out, direct[:, : shape[0] * 4, : shape[1] * 4], atol=1e-5)


def test_nodata_filled_for_inference_and_masked_dilated(rgbn):
    x = texture((4, 150, 140), seed=6)
    x[:, 60:70, 50:58] = np.nan  # a cloud hole
    x[2, 100, 100] = np.nan  # one band missing at one pixel
    x[:, :, 130:] = np.nan  # a swath edge
    out = super_resolve(x, rgbn, nodata_dilation=2)
    bad = np.zeros((150, 140), bool)
    bad[58:72, 48:60] = True
    bad[98:103, 98:103] = True
    bad[:, 128:] = True
    want_nan = np.repeat(np.repeat(bad, 4, 0), 4, 1)
    assert np.array_equal(np.isnan(out).any(axis=0), want_nan)
    assert np.isfinite(out[:, ~want_nan]).all()  # no NaN patches where the input was valid
    # all nodata: all NaN, nothing run
    stats = {}
    empty = super_resolve(np.full((4, 20, 20), np.nan, np.float32), rgbn, stats=stats)
    assert np.isnan(empty).all() and stats["patches"] == 0


@pytest.mark.slow
def test_full_model_20m_phase_and_rswir_x2(models):
    """The 10-band models: windows start on a 20 m pixel edge. With the phase given as one
    pixel, the result equals running on the grid with one extra (edge) column and row before
    it, cropped: the model's decimation keeps the same pixels as 20 m pixels."""
    x2 = load_model(models, "rswir-x2")
    x = texture((10, 40, 36), seed=7)
    # 20 m bands constant over 2 x 2 blocks starting at odd rows/columns (phase 1, 1)
    for k in (3, 4, 5, 7, 8, 9):
        blocks = texture((1, 21, 19), seed=10 + k)[0]
        up = np.repeat(np.repeat(blocks, 2, 0), 2, 1)
        x[k] = up[1:41, 1:37]
    out = super_resolve(x, x2, phase=(1, 1))
    assert out.shape == (6, 40, 36) and np.isfinite(out).all()
    padded = np.pad(x, ((0, 0), (1, 0), (1, 0)), mode="edge")
    ref = super_resolve(padded, x2, phase=(0, 0))
    np.testing.assert_allclose(out, ref[:, 1:, 1:], atol=1e-5)
    full = load_model(models, "full")
    y = super_resolve(x, full, phase=(1, 1))
    assert y.shape == (10, 160, 144) and np.isfinite(y).all()


def test_output_grid_nests_in_the_10m_grid():
    x = 690105.0 + 10 * np.arange(5)
    y = 5339895.0 - 10 * np.arange(3)
    xs, ys = output_coords(x, y, 4)
    assert xs[0] == 690101.25 and np.allclose(np.diff(xs), 2.5)
    assert ys[0] == 5339898.75 and np.allclose(np.diff(ys), -2.5)
    # every 10 m pixel holds exactly 4 x 4 output centres
    edges = 690100.0 + 10 * np.arange(6)
    assert (np.histogram(xs, edges)[0] == 4).all()
