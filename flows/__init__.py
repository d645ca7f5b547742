"""Public Prefect flows: each wires stages from :mod:`stac2cube.tasks` together."""

from stac2cube.flows.build import get_stac_layers
from stac2cube.flows.update import update_cube

__all__ = ["get_stac_layers", "update_cube"]
