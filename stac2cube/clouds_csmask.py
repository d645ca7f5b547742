"""The L2A-based cloud detector for catalogs without L1C: ukis-csmask (``--cloud-method csmask``).

ukis-csmask (Apache-2.0) ships ONNX models (CPU onnxruntime) that segment clouds and cloud
shadows from the L2A bands blue, green, red, NIR, SWIR 1.6 and SWIR 2.2 (its ``model_6b_l2a``),
best near 30 m. This module runs the model exactly as ukis-csmask's ``CSmask`` does (its band
statistics, 256 px tiles with 20 % overlap, smooth blending) but keeps the softmax
probabilities: ``cloud_prob`` is the probability of its class *cloud*, ``shadow_mask`` is where
*cloud shadow* is the most probable class. The group ``clouds`` holds the same variables as
with s2cloudless; masks use the same thresholds and smoothing.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

#: the L2A bands read for csmask, in its model's order
CSMASK_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
_SESSION: dict[str, object] = {}


def _model():
    """(onnxruntime session, input name, band means, band stds, tile size), loaded once."""
    if "model" not in _SESSION:
        import onnxruntime
        import ukis_csmask

        path = Path(ukis_csmask.__file__).parent / "model_6b_l2a.onnx"
        meta = json.loads(path.with_suffix(".json").read_text())
        stats = meta["data"]["dataset_statistics"]
        if stats["band_names"] != ["blue", "green", "red", "nir", "swir16", "swir22"]:
            raise RuntimeError(f"unexpected ukis-csmask band order {stats['band_names']}")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        _SESSION["model"] = (
            session,
            session.get_inputs()[0].name,
            np.asarray(stats["img"][0], "float32"),
            np.asarray(stats["img"][1], "float32"),
            int(meta["data"]["target_size"][0]),
            str(meta["model"]["version"]),
        )
    return _SESSION["model"]


def csmask_version() -> str:
    """The ukis-csmask model version (``1.0.0-6BL2A``)."""
    return _model()[5]


def csmask_probabilities(refl: np.ndarray) -> np.ndarray:
    """Class probabilities ``(y, x, 3)`` (background, cloud, shadow) of ``(y, x, 6)`` L2A
    reflectance (NaN = nodata: probabilities NaN there)."""
    import scipy.special
    from ukis_csmask.utils import tile_array, untile_array

    session, name, mean, std, size = _model()[:5]
    valid = np.isfinite(refl).all(axis=-1)
    h, w = valid.shape
    ph, pw = max(h, size), max(w, size)  # at least one whole tile
    img = np.zeros((ph, pw, 6), "float32")
    img[:h, :w] = np.where(valid[..., None], refl, 0)
    img = (img - mean) / std
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = np.moveaxis(tile_array(img, xsize=size, ysize=size, overlap=0.2), -1, 1)
        probs = np.concatenate(
            [scipy.special.softmax(session.run(None, {name: x[k : k + 1]})[0], axis=1)
             for k in range(len(x))]
        )  # fmt: skip
        y = untile_array(np.moveaxis(probs, 1, -1), (ph, pw, 3), overlap=0.2, smooth_blending=True)
    out = np.asarray(y[:h, :w], "float32")
    out[~valid] = np.nan
    return out
