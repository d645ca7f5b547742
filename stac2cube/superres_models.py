"""The SEN2SRLite models, built from the ``sen2sr`` architectures and local weights (no Prefect).

Weights come from a local folder in the mlstac layout that ``mlstac.download`` writes
(``mlm.json``, ``load.py``, ``*.safetensor``). The folder's ``load.py`` is never executed: the
architectures are built here, with the constructor arguments of the published loaders, from
``sen2sr``'s own modules (``sen2sr.models.opensr_baseline.cnn.CNNSR``,
``sen2sr.models.tricks.HardConstraint`` and the wrappers ``sen2sr.nonreference``,
``sen2sr.referencex2``, ``sen2sr.referencex4``), and the tensors are loaded strictly (every
name and shape must fit).

=============  ===============================  ==========================================
variant        folder (Hugging Face, mlstac)    files
=============  ===============================  ==========================================
``rgbn``       ``SEN2SRLite/NonReference_RGBN_x4``  ``model``, ``hard_constraint``
``rswir-x2``   ``SEN2SRLite/Reference_RSWIR_x2``    ``model``, ``hard_constraint``
``full``       ``SEN2SRLite/main``                  ``sr_model``, ``sr_hard_constraint``,
                                                    ``f2_model``, ``f2_hard_constraint``,
                                                    ``model``, ``hard_constraint``
=============  ===============================  ==========================================

Example:
    >>> VARIANTS["rgbn"].bands
    ('B04', 'B03', 'B02', 'B08')
    >>> VARIANTS["full"].scale, VARIANTS["rswir-x2"].scale
    (4, 1)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stac2cube.errors import InvalidRequestError

ModelName = Literal["rgbn", "full", "rswir-x2"]
HF_BASE = "https://huggingface.co/tacofoundation/sen2sr/resolve/main/SEN2SRLite"

#: constructor arguments of the published loaders: CNNSR(in, out, features, upscale, bias,
#: train_mode, blocks)
RGBN_CNN = (4, 4, 24, 4, True, False, 6)
RSWIR_CNN = (10, 6, 24, 1, True, False, 6)
#: parameters of each CNN (counted from the published safetensors; checked by the tests)
RGBN_PARAMETERS = 572_336
RSWIR_PARAMETERS = 566_554
#: receptive field of the CNNs in input pixels: 21 stacked 3x3 convolutions (conv_1, 6 blocks of
#: 3, conv_2, the upsampler's); the hard constraint's bicubic upsampling reaches 2 input pixels
CNN_REACH = 21
BICUBIC_REACH = 2
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
S2_ALL = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


@dataclass(frozen=True)
class Variant:
    """One SEN2SRLite model: its folder, files, input bands (in the model's order) and scale.

    Attributes:
        name: ``rgbn``, ``full`` or ``rswir-x2``.
        folder: the model's folder under ``SEN2SRLite/`` on Hugging Face (and the sub-folder of
            a ``--model-dir`` holding several models).
        files: the ``.safetensor`` files the model needs (without suffix).
        bands: input bands in the order the model takes them.
        outputs: output bands in the order the model returns them.
        scale: output pixels per input pixel along x and y (1: 10 m output).
        needs_20m_phase: the model decimates the 20 m bands at even 10 m pixels, so the
            cube's 10 m grid must be processed in windows that start on a 20 m pixel edge.
        reach: input pixels a nodata pixel spoils around it at most (the CNNs' receptive field).
    """

    name: str
    folder: str
    files: tuple[str, ...]
    bands: tuple[str, ...]
    outputs: tuple[str, ...]
    scale: int
    needs_20m_phase: bool
    reach: int

    @property
    def url(self) -> str:
        """The model's ``mlm.json`` on Hugging Face (what ``mlstac.download`` takes)."""
        return f"{HF_BASE}/{self.folder}/mlm.json"

    @property
    def mlm_id(self) -> str:
        return f"SEN2SRLite_{self.folder}"


VARIANTS: dict[str, Variant] = {
    "rgbn": Variant(
        "rgbn", "NonReference_RGBN_x4", ("model", "hard_constraint"),
        ("B04", "B03", "B02", "B08"), ("B04", "B03", "B02", "B08"), 4, False, CNN_REACH,
    ),
    "rswir-x2": Variant(
        "rswir-x2", "Reference_RSWIR_x2", ("model", "hard_constraint"),
        S2_ALL, S2_20M, 1, True, CNN_REACH,
    ),
    "full": Variant(
        "full", "main",
        ("sr_model", "sr_hard_constraint", "f2_model", "f2_hard_constraint", "model",
         "hard_constraint"),
        S2_ALL, S2_ALL, 4, True, 2 * CNN_REACH,
    ),
}  # fmt: skip


def variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``, or a one-line error naming the choices."""
    try:
        return VARIANTS[str(name).strip().lower()]
    except KeyError:
        raise InvalidRequestError(
            f"unknown super-resolution model {name!r}; use one of {', '.join(VARIANTS)}"
        ) from None


def how_to_get(v: Variant, where: Path) -> str:
    """The sentence every missing-weights message ends with."""
    return (
        f'download it on a machine with internet: python -c "import mlstac; '
        f"mlstac.download(file='{v.url}', output_dir='{v.folder}')\" and copy the folder "
        f"to {where} (see the README, Super-resolution)"
    )


def model_folder(model_dir: str | Path, name: str) -> Path:
    """The folder of model ``name`` in ``model_dir``: ``model_dir`` itself when it holds an
    ``mlm.json``, else its sub-folder named like the Hugging Face folder (``main``,
    ``NonReference_RGBN_x4``, ``Reference_RSWIR_x2``) or like the variant (``rgbn``, ...).

    Raises:
        InvalidRequestError: no such folder, or one without ``mlm.json`` or a weights file
            (one line naming the folder and how to get the weights).
    """
    v = variant(name)
    root = Path(model_dir).expanduser().resolve()
    if not root.is_dir():
        raise InvalidRequestError(
            f"super-resolution model directory {root} does not exist; {how_to_get(v, root)}"
        )
    candidates = [root, root / v.folder, root / v.name, root / f"SEN2SRLite_{v.folder}"]
    folder = next((c for c in candidates if (c / "mlm.json").is_file()), None)
    if folder is None:
        raise InvalidRequestError(
            f"no {v.name} model (mlm.json) in {root} or its sub-folder {v.folder}; "
            f"{how_to_get(v, root)}"
        )
    missing = [f"{f}.safetensor" for f in v.files if not (folder / f"{f}.safetensor").is_file()]
    if missing:
        raise InvalidRequestError(
            f"model directory {folder} is incomplete for the {v.name} model: missing "
            f"{', '.join(missing)}; {how_to_get(v, folder)}"
        )
    return folder


def weights_digest(folder: Path, name: str) -> str:
    """SHA-256 over the variant's weight files (name and bytes, in a fixed order)."""
    h = hashlib.sha256()
    for f in variant(name).files:
        h.update(f.encode())
        h.update((folder / f"{f}.safetensor").read_bytes())
    return h.hexdigest()


def mlm_id(folder: Path) -> str | None:
    """The ``id`` of the folder's ``mlm.json`` (None when it cannot be read)."""
    try:
        return str(json.loads((folder / "mlm.json").read_text(encoding="utf-8")).get("id"))
    except (OSError, ValueError, AttributeError):
        return None


def count_parameters(module: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(int(p.numel()) for p in module.parameters())


def new_cnn(kind: Literal["rgbn", "rswir"]):
    """A freshly initialised SEN2SRLite CNN (the published constructor arguments)."""
    from sen2sr.models.opensr_baseline.cnn import CNNSR

    return CNNSR(*(RGBN_CNN if kind == "rgbn" else RSWIR_CNN))


class _Amp:
    """Run a CNN under autocast (``dtype``) and hand back float32 (the hard constraint and its
    FFT stay in float32). ``dtype`` None: plain float32."""

    def __new__(cls, cnn, dtype):
        import torch

        class AmpCNN(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.cnn = cnn
                self.dtype = dtype

            def forward(self, x):
                if self.dtype is None:
                    return self.cnn(x)
                with torch.autocast(device_type=x.device.type, dtype=self.dtype):
                    out = self.cnn(x)
                return out.float()

        return AmpCNN()


def _cnn(folder: Path, file: str, kind: str, device, dtype):
    import safetensors.torch

    cnn = new_cnn(kind)  # type: ignore[arg-type]
    path = folder / f"{file}.safetensor"
    try:
        state = safetensors.torch.load_file(str(path))
        cnn.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidRequestError(
            f"{path} does not hold the weights of the SEN2SRLite {kind} CNN ({first[:160]})"
        ) from exc
    cnn = cnn.eval().to(device)
    for p in cnn.parameters():
        p.requires_grad = False
    return _Amp(cnn, dtype)


def _constraint(folder: Path, file: str, device, bands: Any, size: int):
    import safetensors.torch
    from sen2sr.models.tricks import HardConstraint

    path = folder / f"{file}.safetensor"
    try:
        mask = safetensors.torch.load_file(str(path))["weights"]
    except Exception as exc:
        raise InvalidRequestError(
            f"{path} does not hold a hard-constraint mask ('weights') ({type(exc).__name__})"
        ) from exc
    if tuple(mask.shape) != (size, size):
        raise InvalidRequestError(
            f"{path}: hard-constraint mask of shape {tuple(mask.shape)}, expected "
            f"({size}, {size}) for 128 px input patches"
        )
    hc = HardConstraint(low_pass_mask=mask.float().to(device), bands=bands, device=device)
    return hc.eval()


@dataclass
class LoadedModel:
    """A model ready for inference: the torch module and what identifies it."""

    variant: Variant
    module: Any
    folder: Path
    digest: str
    mlm_id: str | None
    device: Any
    precision: str
    patch: int = 128

    def __call__(self, x):
        return self.module(x)


def load_model(
    model_dir: str | Path,
    name: str = "rgbn",
    *,
    device: Any = "cpu",
    precision: Literal["fp32", "fp16", "bf16"] = "fp32",
    patch: int = 128,
) -> LoadedModel:
    """Build SEN2SRLite model ``name`` from ``sen2sr`` and load its weights from ``model_dir``.

    Args:
        model_dir: a model folder in the mlstac layout, or a folder holding one per model.
        name: ``rgbn`` (B04 B03 B02 B08 at 10 m -> 2.5 m), ``rswir-x2`` (20 m bands -> 10 m with
            the 10 m bands as reference) or ``full`` (the 10 bands -> 2.5 m).
        device: a torch device.
        precision: ``fp32``, or ``fp16``/``bf16`` for the CNNs (autocast; hard constraints and
            FFTs stay float32).
        patch: input patch size the hard-constraint masks are sized for.

    Raises:
        InvalidRequestError: the folder is missing or incomplete, or its weights do not fit.
    """
    import torch
    from sen2sr.nonreference import srmodel as rgbn_model
    from sen2sr.referencex2 import srmodel as rswir_x2
    from sen2sr.referencex4 import srmodel as rswir_x4

    v = variant(name)
    folder = model_folder(model_dir, v.name)
    device = torch.device(device)
    amp = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    hr = patch * 4
    with torch.no_grad():
        if v.name == "rgbn":
            module = rgbn_model(
                _cnn(folder, "model", "rgbn", device, amp),
                _constraint(folder, "hard_constraint", device, "all", hr),
                device=device,
            )
        elif v.name == "rswir-x2":
            module = rswir_x2(
                _cnn(folder, "model", "rswir", device, amp),
                _constraint(folder, "hard_constraint", device, [0, 1, 2, 3, 4, 5], patch),
                device=device,
            )
        else:
            rgbn = rgbn_model(
                _cnn(folder, "sr_model", "rgbn", device, amp),
                _constraint(folder, "sr_hard_constraint", device, "all", hr),
                device=device,
            )
            x2 = rswir_x2(
                _cnn(folder, "f2_model", "rswir", device, amp),
                _constraint(folder, "f2_hard_constraint", device, [0, 1, 2, 3, 4, 5], patch),
                device=device,
            )
            module = rswir_x4(
                rgbn,
                x2,
                _cnn(folder, "model", "rswir", device, amp),
                _constraint(folder, "hard_constraint", device, [0, 1, 2, 3, 4, 5], hr),
                device=device,
            )
    module = module.eval().to(device)
    return LoadedModel(
        v, module, folder, weights_digest(folder, v.name), mlm_id(folder), device, precision, patch
    )
