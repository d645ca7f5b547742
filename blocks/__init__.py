"""Prefect Blocks of stac2cube: a STAC catalog, a cube store, a Dask cluster and a
super-resolution model.

Register their types with a Prefect server (so the UI offers them)::

    prefect block register -m stac2cube.blocks
"""

from stac2cube.blocks.catalog import StacCatalog
from stac2cube.blocks.cluster import DaskCluster
from stac2cube.blocks.store import CubeStore
from stac2cube.blocks.superres import SuperresModel

__all__ = ["CubeStore", "DaskCluster", "StacCatalog", "SuperresModel"]
