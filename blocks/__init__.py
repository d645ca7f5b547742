"""Prefect Blocks of stac2cube (register with ``prefect block register -m stac2cube.blocks``)."""
