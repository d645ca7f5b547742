"""The cube store block: where a cube lives, so deployments and schedules can name it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, field_validator

_LOGO = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/filesystem.png"
)
_DOCS = "https://icechunk.io/"


class CubeStore(Block):
    """A cube store: the icechunk (Zarr v3) repository one cube lives in.

    The ``nightly-update`` deployment names its cube through such a block
    (``{{ prefect.blocks.cube-store.<name>.path }}``, resolved by ``prefect deploy``).

    Attributes:
        path: Path of the store (a local or shared file system path, ``~`` expanded).
    """

    _block_type_name: ClassVar[str] = "Cube Store"
    _block_type_slug: ClassVar[str] = "cube-store"
    _logo_url: ClassVar[str] = _LOGO
    _documentation_url: ClassVar[str] = _DOCS
    _description: ClassVar[str] = (
        "Where a stac2cube data cube lives: the path of its icechunk (Zarr v3) repository."
    )
    _code_example: ClassVar[str] = """\
        from stac2cube.blocks import CubeStore
        from stac2cube import open_cube

        store = CubeStore.load("BLOCK_NAME")
        ds = open_cube(store.path)
        """

    path: str = Field(
        description="Path of the cube's icechunk repository, e.g. /dss/cubes/munich.icechunk.",
        examples=["/dss/cubes/munich.icechunk"],
    )

    @field_validator("path")
    @classmethod
    def _normalise(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the cube store path must not be empty")
        if value.startswith("file://"):
            value = value.removeprefix("file://")
        if "://" in value:
            raise ValueError(
                f"{value!r}: only file system paths are supported (no object store URLs yet)"
            )
        return str(Path(value).expanduser())

    def exists(self) -> bool:
        """True when a cube has been written to :attr:`path`."""
        from stac2cube.store import repo_exists

        return repo_exists(self.path)

    def info(self) -> dict[str, Any]:
        """:func:`stac2cube.store.cube_info` of the cube (grid, bands, time steps)."""
        from stac2cube.store import cube_info

        return cube_info(self.path)
