"""The L2A-based detector (``--cloud-method csmask``, ukis-csmask's ONNX model on CPU)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from test_clouds import build, cloud_catalog, layers  # noqa: F401 (fixture)

from stac2cube import get_cloud_layers
from stac2cube.testing.clouds import CLEAR_TOA, CLOUD_TOA, DARK_TOA

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def test_probabilities_are_ukis_csmask_classes():
    """Our run of the model keeps its probabilities; their argmax is CSmask's own class map."""
    from ukis_csmask.mask import CSmask

    from stac2cube.clouds_csmask import csmask_probabilities

    rng = np.random.default_rng(0)
    img = np.empty((256, 256, 6), "float32")
    img[:] = np.array([CLEAR_TOA[b] for b in BANDS]) * (
        1 + 0.1 * rng.standard_normal((256, 256, 1))
    )
    img[100:180, 120:200] = [CLOUD_TOA[b] for b in BANDS]
    img[20:90, 60:140] = [DARK_TOA[b] for b in BANDS]
    probs = csmask_probabilities(img.copy())
    assert probs.shape == (256, 256, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classes = CSmask(img.copy(), ["blue", "green", "red", "nir", "swir16", "swir22"],
                         product_level="l2a").csm[..., 0]  # fmt: skip
    np.testing.assert_array_equal(np.argmax(probs, -1), classes)


@pytest.mark.integration
def test_csmask_layers_on_the_cube_l2a_bands(stac_api, cloud_catalog, tmp_path):  # noqa: F811
    """Same variables as s2cloudless, from the cube's own L2A scenes (no L1C needed): a step
    without L1C has layers too."""
    store = tmp_path / "cs.icechunk"
    build(stac_api.url, cloud_catalog, store, start="2024-01-10", end="2024-01-15")
    summary = get_cloud_layers(str(store), cloud_method="csmask", shadows=True)
    assert summary["computed_time_steps"] == 2 and summary["unmatched"] == {}
    ds = layers(store)
    assert {"cloud_prob", "cloud_mask", "shadow_mask"} <= set(ds.data_vars)
    assert ds.attrs["method"] == "csmask" and ds.attrs["processing_resolution"] == 30.0
    assert ds.attrs["csmask_model_version"] == "1.0.0-6BL2A"
    prob = ds.cloud_prob.values
    assert np.isfinite(prob).mean() > 0.9 and np.nanmax(prob) <= 1.0
    ids = [str(v) for v in ds.l1c_item_ids.values]
    assert all("L2A" in i for i in ids)  # the scenes read are the L2A ones
    shutil.rmtree(store)
