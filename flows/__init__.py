"""Public Prefect flows: each wires stages from :mod:`stac2cube.tasks` together."""

from stac2cube.flows.availability import check_availability
from stac2cube.flows.build import get_stac_layers
from stac2cube.flows.superres import super_resolution
from stac2cube.flows.update import cube_from_settings, update_cube

__all__ = [
    "check_availability",
    "cube_from_settings",
    "get_stac_layers",
    "super_resolution",
    "update_cube",
]
