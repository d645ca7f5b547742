"""Randomly initialised SEN2SRLite weights in the mlstac layout, for tests and offline trials.

The published weights cannot be fetched here (no internet, and no pip package ships them), so
tests make their own: the exact architectures of :mod:`stac2cube.superres_models` with random
initialisation, saved as ``*.safetensor`` beside an ``mlm.json`` and a ``load.py`` that must
never run (it writes ``LOAD_PY_RAN`` next to itself if it does). The hard-constraint masks are
ideal low-pass filters (radius: half the patch's Nyquist over the scale), shaped like the
published ones. The outputs are texture, not super-resolution: only the plumbing is real.

Example:
    >>> import tempfile
    >>> folder = write_test_model(tempfile.mkdtemp(), "rgbn")  # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
    ['hard_constraint.safetensor', 'load.py', 'mlm.json', 'model.safetensor']
"""

from __future__ import annotations

import json
from pathlib import Path

from stac2cube.superres_models import (
    RGBN_PARAMETERS,
    RSWIR_PARAMETERS,
    count_parameters,
    new_cnn,
    variant,
)

#: written next to the load.py of a test model if anything ever executes it
LOAD_PY_SENTINEL = "LOAD_PY_RAN"


def ideal_low_pass(size: int, scale: int):
    """The ideal low-pass mask sen2sr's ``FourierHardConstraint`` builds (``ideal``), float32."""
    import torch

    u = torch.arange(size, dtype=torch.float32) - size // 2
    dist = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    return (dist <= (size // 2) // scale).to(torch.float32)


def _save_cnn(path: Path, kind: str, seed: int) -> int:
    import safetensors.torch
    import torch

    torch.manual_seed(seed)
    cnn = new_cnn(kind)  # type: ignore[arg-type]
    n = count_parameters(cnn)
    want = RGBN_PARAMETERS if kind == "rgbn" else RSWIR_PARAMETERS
    assert n == want, f"{kind} CNN has {n} parameters, the published one {want}"
    state = {k: v.detach().contiguous().clone() for k, v in cnn.state_dict().items()}
    safetensors.torch.save_file(state, str(path))
    return n


def _save_mask(path: Path, size: int, scale: int) -> None:
    import safetensors.torch

    safetensors.torch.save_file({"weights": ideal_low_pass(size, scale)}, str(path))


def write_test_model(
    root: str | Path, name: str = "rgbn", *, seed: int = 0, patch: int = 128, subfolder: bool = True
) -> Path:
    """Write model ``name`` with random weights in the mlstac layout; returns its folder.

    Args:
        root: where to write; the model goes into ``root/<Hugging Face folder>`` (``subfolder``)
            or into ``root`` itself.
        name: ``rgbn``, ``rswir-x2`` or ``full``.
        seed: torch seed of the initialisation (same seed, same weights).
        patch: input patch size the masks are sized for.
    """
    v = variant(name)
    folder = Path(root) / v.folder if subfolder else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    hr = patch * 4
    total = 0
    if v.name == "rgbn":
        total += _save_cnn(folder / "model.safetensor", "rgbn", seed)
        _save_mask(folder / "hard_constraint.safetensor", hr, 4)
    elif v.name == "rswir-x2":
        total += _save_cnn(folder / "model.safetensor", "rswir", seed)
        _save_mask(folder / "hard_constraint.safetensor", patch, 2)
    else:
        total += _save_cnn(folder / "sr_model.safetensor", "rgbn", seed)
        _save_mask(folder / "sr_hard_constraint.safetensor", hr, 4)
        total += _save_cnn(folder / "f2_model.safetensor", "rswir", seed + 1)
        _save_mask(folder / "f2_hard_constraint.safetensor", patch, 2)
        total += _save_cnn(folder / "model.safetensor", "rswir", seed + 2)
        _save_mask(folder / "hard_constraint.safetensor", hr, 4)
    assets = {
        f"{f}.safetensor": {"href": f"{v.url.rsplit('/', 1)[0]}/{f}.safetensor"} for f in v.files
    }
    assets["load.py"] = {"href": f"{v.url.rsplit('/', 1)[0]}/load.py"}
    mlm = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": ["https://stac-extensions.github.io/mlm/v1.4.0/schema.json"],
        "id": v.mlm_id,
        "geometry": None,
        "links": [],
        "properties": {
            "datetime": None,
            "start_datetime": "1900-01-01T00:00:00Z",
            "end_datetime": "9999-01-01T00:00:00Z",
            "description": "stac2cube test model: random weights of the SEN2SRLite architecture",
            "mlm:name": v.mlm_id,
            "mlm:architecture": "CNNSR (SPAN)",
            "mlm:framework": "pytorch",
            "mlm:total_parameters": total,
            "mlm:input": [{"name": "lr", "bands": list(v.bands)}],
        },
        "assets": assets,
    }
    (folder / "mlm.json").write_text(json.dumps(mlm, indent=2), encoding="utf-8")
    (folder / "load.py").write_text(
        "# a stac2cube test model: this file must never be executed\n"
        "import pathlib\n"
        f"(pathlib.Path(__file__).parent / {LOAD_PY_SENTINEL!r}).write_text('ran')\n"
        "raise RuntimeError('load.py of a model folder was executed')\n",
        encoding="utf-8",
    )
    return folder
