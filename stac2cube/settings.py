"""Build settings: the parameters that re-run a cube's build, and the files kept beside a cube.

A cube records its request (:meth:`~stac2cube.request.CubeRequest.describe`). From that record
:func:`build_parameters` gives the keyword arguments of
:func:`~stac2cube.flows.build.get_stac_layers` that rebuild or extend the same cube; the build
writes them to ``<cube>.settings.json`` beside the store, so the same build can be re-run from
the command line (``stac2cube build --settings munich.settings.json``), a Prefect deployment or
a SLURM job script, with nothing but that file.

Files beside a cube ``munich.icechunk`` (see :func:`sidecar_path`):

* ``munich.settings.json`` — the build settings (written by every build and update);
* ``munich.stats.csv`` — per-time-step statistics (when ``statistics`` is on);
* ``munich.quicklook.gif`` / ``.png`` — true-colour time-lapse (when asked for).

Example:
    >>> sidecar_path("data/munich.icechunk", ".settings.json").as_posix()
    'data/munich.settings.json'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stac2cube.errors import InvalidRequestError
from stac2cube.spec import RUN_FIELDS, SPEC_FIELDS, CubeSpec

SETTINGS_SUFFIX = ".settings.json"
STATS_SUFFIX = ".stats.csv"
_STORE_SUFFIXES = (".icechunk", ".zarr")


def sidecar_path(store: str | Path, suffix: str) -> Path:
    """The file named ``suffix`` beside the cube at ``store`` (the store's suffix replaced)."""
    path = Path(str(store).rstrip("/"))
    name = path.name
    for known in _STORE_SUFFIXES:
        name = name.removesuffix(known)
    return path.with_name(name + suffix)


def build_parameters(record: dict[str, Any], store: str | Path) -> dict[str, Any]:
    """``get_stac_layers`` keyword arguments that rebuild (or extend) the cube of ``record``.

    ``record`` is a cube's stored request (:meth:`CubeRequest.describe`); its spec
    (:meth:`~stac2cube.spec.CubeSpec.from_record`) pins the grid by its CRS, resolution and
    anchor, and the area by the recorded bbox and AOI, so the result lands on the same grid.
    """
    return {**CubeSpec.from_record(record).parameters(), "store": str(store)}


def write_settings(store: str | Path, record: dict[str, Any], version: str) -> Path:
    """Write ``<cube>.settings.json`` beside ``store``; returns its path."""
    path = sidecar_path(store, SETTINGS_SUFFIX)
    document = {
        "stac2cube_version": version,
        "flow": "get-stac-layers",
        "parameters": build_parameters(record, store),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)  # readers never see half a file
    return path


def read_settings(path: str | Path) -> dict[str, Any]:
    """The ``get_stac_layers`` parameters of a settings file (see :func:`write_settings`).

    Raises:
        InvalidRequestError: the file is missing, not JSON, or names parameters the flow does
            not have.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"settings file not found: {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"settings file {path} is not JSON: {exc}") from None
    params = document.get("parameters") if isinstance(document, dict) else None
    if not isinstance(params, dict):
        raise InvalidRequestError(f"settings file {path} has no 'parameters' object")
    known = {*SPEC_FIELDS, *RUN_FIELDS}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidRequestError(
            f"settings file {path}: unknown parameter(s) {unknown}; "
            f"get_stac_layers takes {sorted(known)}"
        )
    return params
