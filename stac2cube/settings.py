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
from stac2cube.grid import Grid
from stac2cube.radiometry import ProcessingOptions

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


def options_parameters(record: dict[str, Any] | None) -> dict[str, Any]:
    """Flow parameters re-creating the processing options a cube was built with."""
    opts = ProcessingOptions.from_record(record)
    return {
        "mask_clouds": opts.mask_clouds,
        "scl_classes": list(opts.scl_classes),
        "qa_flags": list(opts.qa_flags),
        "sar_scale": opts.sar_scale,
    }


def build_parameters(record: dict[str, Any], store: str | Path) -> dict[str, Any]:
    """``get_stac_layers`` keyword arguments that rebuild (or extend) the cube of ``record``.

    ``record`` is a cube's stored request (:meth:`CubeRequest.describe`); the grid is pinned by
    its CRS, resolution and anchor, and the area by the recorded bbox and AOI, so the result
    lands on the same grid. Options a cube made by an older version lacks take the defaults
    they had then.
    """
    grid = Grid.from_attrs(record["grid"])
    months = record.get("months") or []
    params: dict[str, Any] = {
        "mission": record["mission"],
        "bbox": list(record["bbox"]),
        "aoi": record.get("aoi"),
        "start": record["start"],
        "end": record["end"],
        "store": str(store),
        "catalog": record["catalog_url"],
        "collection": record["collection"],
        "bands": list(record["bands"]),
        "resolution": grid.resolution,
        "crs": grid.crs,
        "anchor": list(grid.anchor),
        "max_cloud": record["max_cloud"],
        "resampling": record.get("resampling", "nearest"),
        "season": ",".join(str(m) for m in months) or None,
        "dates": list(record.get("dates") or []) or None,
        "clip": bool(record.get("clip", False)),
        "tile_mode": record.get("tile_mode", "mosaic"),
        "min_coverage": record.get("min_coverage", 0.0),
        "max_scene_cloud": record.get("max_scene_cloud", 100.0),
        "indices": list(record.get("indices") or []) or None,
        "composites": list(record.get("composites") or []) or None,
        "statistics": bool(record.get("statistics", False)),
        "quicklook": record.get("quicklook") or "none",
    }
    params.update(options_parameters(record.get("options")))
    return params


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
    import inspect

    from stac2cube.flows.build import get_stac_layers

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
    known = set(inspect.signature(get_stac_layers.fn).parameters)
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidRequestError(
            f"settings file {path}: unknown parameter(s) {unknown}; "
            f"get_stac_layers takes {sorted(known)}"
        )
    return params
