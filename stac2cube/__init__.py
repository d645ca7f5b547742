"""stac2cube: STAC searches to analysis-ready, incrementally updated data cubes.

Public API::

    from stac2cube import get_stac_layers, open_cube

    from stac2cube import Cube, CubeSpec   # the cube handle; every parameter of a cube
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from stac2cube.errors import (
    CatalogError,
    EmptySearchError,
    GridMismatchError,
    InvalidRequestError,
    ReadError,
    Stac2CubeError,
    StoreError,
)

try:
    __version__ = _metadata.version("stac2cube")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CatalogError",
    "Cube",
    "CubeSpec",
    "EmptySearchError",
    "GridMismatchError",
    "InvalidRequestError",
    "ProcessingOptions",
    "ReadError",
    "Stac2CubeError",
    "StoreError",
    "__version__",
    "coregister_scenes",
    "cube_info",
    "export_cube",
    "get_cloud_layers",
    "get_stac_layers",
    "open_cube",
    "super_resolution",
    "update_cube",
]

_LAZY = {
    "Cube": "stac2cube.cube",
    "CubeSpec": "stac2cube.spec",
    "get_stac_layers": "stac2cube.flows.build",
    "get_cloud_layers": "stac2cube.flows.clouds",
    "open_cube": "stac2cube.store",
    "cube_info": "stac2cube.store",
    "update_cube": "stac2cube.flows.update",
    "super_resolution": "stac2cube.flows.superres",
    "export_cube": "stac2cube.export",
    "ProcessingOptions": "stac2cube.radiometry",
    "coregister_scenes": "stac2cube.flows.coregister",
}

if TYPE_CHECKING:
    from stac2cube.cube import Cube
    from stac2cube.export import export_cube
    from stac2cube.flows.build import get_stac_layers
    from stac2cube.flows.clouds import get_cloud_layers
    from stac2cube.flows.coregister import coregister_scenes
    from stac2cube.flows.superres import super_resolution
    from stac2cube.flows.update import update_cube
    from stac2cube.radiometry import ProcessingOptions
    from stac2cube.spec import CubeSpec
    from stac2cube.store import cube_info, open_cube


def __getattr__(name: str) -> Any:
    """Import flows (and Prefect) only when they are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stac2cube' has no attribute {name!r}")
