"""Prefect Blocks of stac2cube: a STAC catalog, a cube store and a Dask cluster.

Register their types with a Prefect server (so the UI offers them)::

    prefect block register -m stac2cube.blocks
"""

from stac2cube.blocks.catalog import StacCatalog
from stac2cube.blocks.cluster import DaskCluster
from stac2cube.blocks.store import CubeStore

__all__ = ["CubeStore", "DaskCluster", "StacCatalog"]
