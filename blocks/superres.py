"""The super-resolution model block: where the SEN2SR weights are and which device runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, field_validator

_LOGO = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/filesystem.png"
)
_DOCS = "https://github.com/ESAOpenSR/SEN2SR"


class SuperresModel(Block):
    """A SEN2SRLite model folder (mlstac layout, downloaded beforehand) and how to run it.

    Attributes:
        model_dir: Folder of the model (``mlm.json`` + ``*.safetensor``) or of several models.
        model: rgbn, full or rswir-x2.
        device: auto, cpu or cuda.
        batch_size: Patches per forward pass (empty: 4 on the CPU, from free memory on CUDA).
        precision: auto, fp32, fp16 or bf16 (CNNs only; auto is fp16 on CUDA, fp32 on CPU).
    """

    _block_type_name: ClassVar[str] = "Superres Model"
    _block_type_slug: ClassVar[str] = "superres-model"
    _logo_url: ClassVar[str] = _LOGO
    _documentation_url: ClassVar[str] = _DOCS
    _description: ClassVar[str] = (
        "Where the SEN2SR super-resolution weights lie (a local mlstac folder: compute nodes "
        "have no internet) and the device and batch size stac2cube runs them with."
    )
    _code_example: ClassVar[str] = """\
        from stac2cube import super_resolution
        from stac2cube.blocks import SuperresModel

        block = SuperresModel.load("BLOCK_NAME")
        super_resolution(store="munich.icechunk", model_block="BLOCK_NAME")
        """

    model_dir: str = Field(
        description="Folder of the SEN2SR model(s), as mlstac.download wrote it.",
        examples=["/dss/models/sen2sr"],
    )
    model: Literal["rgbn", "full", "rswir-x2"] = Field(
        default="rgbn",
        description="rgbn (B04 B03 B02 B08 to 2.5 m), full (10 bands to 2.5 m) or rswir-x2 "
        "(20 m bands to 10 m).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto (CUDA when a GPU is visible), cpu or cuda."
    )
    batch_size: int | None = Field(
        default=None, ge=1, description="Patches per forward pass; empty: from the device."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="Precision of the CNNs: auto is fp16 on CUDA, fp32 on CPU."
    )

    @field_validator("model_dir")
    @classmethod
    def _normalise(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the model directory must not be empty")
        return str(Path(value).expanduser())

    def settings(self, **override: Any) -> dict[str, Any]:
        """The stage's settings (``SuperresSettings`` fields), ``override`` winning."""
        out = {
            "model_dir": self.model_dir,
            "model": self.model,
            "device": self.device,
            "batch_size": self.batch_size,
            "precision": self.precision,
        }
        out.update({k: v for k, v in override.items() if v is not None})
        return out
