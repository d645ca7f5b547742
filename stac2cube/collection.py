"""A cube described as a STAC Collection, written beside it: ``<cube>.collection.json``.

Catalogs and tools that speak STAC (pystac, STAC browsers, stac-fastapi loaders, openEO) list and
open the cube from this file. It uses the datacube extension for the cube's shape and the
projection extension for its grid:

* ``cube:dimensions``: ``x`` and ``y`` (spatial, extent of the pixel edges, step = resolution,
  ``reference_system`` = the EPSG code), ``time`` (temporal, extent and every value), plus
  ``tile`` for cubes with one step per tile;
* ``cube:variables``: every band and index, ``(time, y, x)``, with its ``unit`` where the cube
  records one and its description;
* the grid: ``proj:code``, ``proj:shape``, ``proj:transform`` and ``proj:bbox`` on the store's
  asset (and ``proj:code`` in the summaries);
* links: ``derived_from`` the source collection and each source item in the catalog (URLs
  without credentials), and ``via`` the search that made the cube (a STAC API POST search).

Every build and update rewrites the file from the cube's committed state, so it stays current.

Example:
    >>> doc = cube_collection_from_state(*_example_state())
    >>> doc["cube:dimensions"]["x"]["step"], doc["cube:variables"]["B04"]["unit"]
    (10.0, '1')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stac2cube.signing import redact_url

if TYPE_CHECKING:
    from stac2cube.cube import Cube
    from stac2cube.grid import Grid

__all__ = [
    "COLLECTION_SUFFIX",
    "DATACUBE_EXTENSION",
    "PROJECTION_EXTENSION",
    "cube_collection",
    "cube_collection_from_state",
    "write_collection",
]

COLLECTION_SUFFIX = ".collection.json"
STAC_VERSION = "1.1.0"
DATACUBE_EXTENSION = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
#: per-step coordinates the cube also stores (auxiliary variables of the time dimension)
_STEP_COORDS = ("valid_fraction", "cloud_fraction")


def _iso(value: str) -> str:
    """An RFC 3339 UTC timestamp of a ledger time (``2024-01-05T10:30:21`` -> ``...Z``)."""
    import pandas as pd

    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def cube_collection_from_state(
    name: str,
    grid: Grid,
    record: Mapping[str, Any],
    ledger: Sequence[Mapping[str, Any]],
    variables: Mapping[str, Mapping[str, Any]],
    *,
    store_href: str | None = None,
    tiles: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The STAC Collection (a dict) of a cube: pure, from its parts.

    Args:
        name: The cube's name (the collection id).
        grid: The cube's :class:`~stac2cube.grid.Grid`.
        record: The request stored in the cube (:meth:`~stac2cube.request.CubeRequest.describe`).
        ledger: The cube's ledger entries (one per time step, time-sorted).
        variables: ``{name: attributes}`` of the data variables (``units``, ``long_name``).
        store_href: The store's href relative to the collection file (default ``<name>.icechunk``).
        tiles: The tile coordinate values of a cube with one step per tile.
    """
    times = sorted({_iso(e["time"]) for e in ledger})
    catalog = redact_url(record.get("catalog_url"))
    catalog = catalog.rstrip("/") if catalog else catalog
    collection = record.get("collection")
    west, south, east, north = (float(v) for v in record["bbox"])
    xmin, ymin, xmax, ymax = (float(v) for v in grid.bounds)
    res = float(grid.resolution)
    dims: dict[str, Any] = {
        "x": {
            "type": "spatial",
            "axis": "x",
            "extent": [xmin, xmax],
            "step": res,
            "reference_system": int(grid.epsg),
            "description": "pixel centres in the cube; the extent gives the outer pixel edges",
        },
        "y": {
            "type": "spatial",
            "axis": "y",
            "extent": [ymin, ymax],
            "step": -res,
            "reference_system": int(grid.epsg),
        },
        "time": {
            "type": "temporal",
            "extent": [times[0], times[-1]] if times else [None, None],
            "values": times or [],
            "step": None,  # irregular: one step per solar day with scenes
            "description": "one step per solar day (UTC timestamp of its first scene)",
        },
    }
    if not times:
        dims["time"].pop("values")
    if tiles:
        dims["tile"] = {"type": "other", "values": sorted(set(tiles))}
    var_dims = ["time", "y", "x"] + (["tile"] if tiles else [])
    cube_vars: dict[str, Any] = {}
    for var, attrs in variables.items():
        entry: dict[str, Any] = {"dimensions": var_dims, "type": "data"}
        if attrs.get("long_name"):
            entry["description"] = str(attrs["long_name"])
        if attrs.get("units"):
            entry["unit"] = str(attrs["units"])
        cube_vars[var] = entry
    for coord in _STEP_COORDS:
        cube_vars[coord] = {
            "dimensions": ["time"],
            "type": "auxiliary",
            "unit": "1",
            "description": f"share of the area's pixels: {coord.replace('_', ' ')} of each step",
        }
    links: list[dict[str, Any]] = []
    if catalog and collection:
        links.append(
            {
                "rel": "derived_from",
                "href": f"{catalog}/collections/{collection}",
                "type": "application/json",
                "title": f"Source collection {collection}",
            }
        )
        links.append(
            {
                "rel": "via",
                "href": f"{catalog}/search",
                "type": "application/geo+json",
                "method": "POST",
                "title": "The STAC API search that made this cube",
                "body": {
                    "collections": [collection],
                    "bbox": [west, south, east, north],
                    "datetime": f"{record.get('start')}T00:00:00Z/{record.get('end')}T23:59:59Z",
                    **(
                        {"query": {"eo:cloud_cover": {"lte": record["max_cloud"]}}}
                        if record.get("max_cloud") is not None and record["max_cloud"] < 100
                        else {}
                    ),
                },
            }
        )
        seen = set()
        for entry in ledger:
            for item in entry.get("items", []):
                source = item.get("collection") or collection
                key = (source, item["id"])
                if key in seen:
                    continue
                seen.add(key)
                links.append(
                    {
                        "rel": "derived_from",
                        "href": f"{catalog}/collections/{source}/items/{item['id']}",
                        "type": "application/geo+json",
                        "title": item["id"],
                    }
                )
    store_href = store_href or f"./{name}.icechunk"
    asset = {
        "href": store_href,
        "title": f"{name}: icechunk repository (Zarr v3), branch main",
        "type": "application/vnd+zarr",
        "roles": ["data"],
        "proj:code": f"EPSG:{int(grid.epsg)}",
        "proj:shape": [int(grid.height), int(grid.width)],
        "proj:transform": [float(v) for v in grid.transform][:6],
        "proj:bbox": [xmin, ymin, xmax, ymax],
    }
    mission = record.get("mission")
    description = (
        f"Analysis-ready {mission} data cube made by stac2cube from "
        f"{collection or 'a STAC collection'} ({catalog or 'a STAC API'}): "
        f"{len(times)} time steps on a {res:g} m grid in EPSG:{int(grid.epsg)}, "
        f"bands {', '.join(variables) or '-'}."
    )
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [DATACUBE_EXTENSION, PROJECTION_EXTENSION],
        "id": name,
        "title": f"{name} ({mission})",
        "description": description,
        "license": "other",
        "keywords": [k for k in ("stac2cube", "datacube", mission) if k],
        "extent": {
            "spatial": {"bbox": [[west, south, east, north]]},
            "temporal": {"interval": [[times[0], times[-1]] if times else [None, None]]},
        },
        "summaries": {"proj:code": [f"EPSG:{int(grid.epsg)}"]},
        "cube:dimensions": dims,
        "cube:variables": cube_vars,
        "assets": {"data": asset},
        "links": links,
    }


def cube_collection(cube: Cube | str | Path) -> dict[str, Any]:
    """The STAC Collection of the cube at ``cube`` (a path or :class:`~stac2cube.cube.Cube`),
    from the state the handle holds.

    Raises:
        StoreError: there is no cube.
    """
    from stac2cube.cube import as_cube
    from stac2cube.settings import sidecar_path

    cube = as_cube(cube)
    state = cube.require()
    ds = cube.open_dataset(snapshot=cube.snapshot)
    variables = {
        name: dict(var.attrs)
        for name, var in ds.data_vars.items()
        if {"time", "y", "x"} <= set(var.dims)
    }
    tiles = [str(t) for t in ds["tile"].values.ravel()] if "tile" in ds.coords else None
    store = Path(str(cube.name).rstrip("/"))
    name = sidecar_path(store, "").name
    return cube_collection_from_state(
        name,
        state.grid,
        state.request,
        state.ledger,
        variables,
        store_href=f"./{store.name}",
        tiles=tiles,
    )


def write_collection(cube: Cube | str | Path) -> Path:
    """Write ``<cube>.collection.json`` beside the cube (atomically); returns its path."""
    from stac2cube.cube import as_cube
    from stac2cube.settings import sidecar_path

    cube = as_cube(cube)
    path = sidecar_path(cube.name, COLLECTION_SUFFIX)
    document = cube_collection(cube)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)  # readers never see half a file
    return path


def _example_state() -> tuple[Any, ...]:
    """A small cube's parts, for the module example."""
    from stac2cube.grid import Grid

    grid = Grid(epsg=32632, resolution=10.0, bounds=(690000.0, 5330000.0, 690100.0, 5330100.0))
    record = {
        "mission": "sentinel-2-l2a",
        "bbox": [11.5, 48.1, 11.51, 48.11],
        "catalog_url": "https://earth-search.aws.element84.com/v1",
        "collection": "sentinel-2-c1-l2a",
        "start": "2024-06-01",
        "end": "2024-06-30",
    }
    ledger = [{"time": "2024-06-05T10:30:21", "items": [{"id": "S2A_1", "collection": None}]}]
    return "munich", grid, record, ledger, {"B04": {"units": "1", "long_name": "B04 reflectance"}}
