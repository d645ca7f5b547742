"""The cube store: an icechunk repository (Zarr v3) holding one cube, its request and ledger.

Layout of the root group:

* one variable a band, dims ``(time, y, x)``, chunks ``(1, 512, 512)``: one chunk per time
  step keeps appends proportional to the scenes added; 512 x 512 keeps a small window's time
  series to one modest chunk per step. Reflectance is stored as ``uint16`` with CF
  ``scale_factor=1e-4``, ``add_offset=-0.1`` and ``_FillValue=0`` (lossless for every
  Sentinel-2 DN, negative reflectance down to -0.0999 included); xarray decodes it to float
  with NaN for nodata. Classification bands (SCL) are ``uint8`` classes, 0 = nodata.
* per-time-step coordinates ``n_scenes``, ``item_ids``, ``radiometry_rule``,
  ``processing_baseline``; the ``spatial_ref`` grid-mapping coordinate.
* attributes ``stac2cube:request`` (what was asked, so ``update`` needs only the path),
  ``stac2cube:ledger`` (per time step: item ids, datetimes, baselines, radiometry applied) and
  ``stac2cube:version``.

Every run writes inside one icechunk session and commits once: a run that dies leaves the cube at
its previous commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from stac2cube.errors import GridMismatchError, StoreError
from stac2cube.grid import Grid

CHUNK = 512
REQUEST_ATTR = "stac2cube:request"
LEDGER_ATTR = "stac2cube:ledger"
VERSION_ATTR = "stac2cube:version"
REFLECTANCE_ENCODING = {
    "dtype": "uint16",
    "scale_factor": 1e-4,
    "add_offset": -0.1,
    "_FillValue": 0,
}
TIME_ENCODING = {"units": "seconds since 1970-01-01T00:00:00", "dtype": "int64"}


def _quiet_icechunk() -> None:
    import icechunk

    # the local-filesystem "not safe for concurrent commits" notice: we lock ourselves
    icechunk.set_logs_filter("error")


def repo_exists(path: str | Path) -> bool:
    """True when ``path`` holds an icechunk repository."""
    import icechunk

    p = Path(path)
    if not p.exists():
        return False
    return icechunk.Repository.exists(icechunk.local_filesystem_storage(str(p.resolve())))


def open_repo(path: str | Path, *, create: bool = False):
    """The icechunk repository at ``path``; create it when ``create`` and it does not exist."""
    import icechunk

    _quiet_icechunk()
    p = Path(path).resolve()
    storage = icechunk.local_filesystem_storage(str(p))
    if icechunk.Repository.exists(storage):
        return icechunk.Repository.open(storage)
    if not create:
        raise StoreError(f"no cube at {path}")
    if p.exists() and any(p.iterdir()):
        raise StoreError(f"{path} exists and is not a cube store; choose another --store")
    return icechunk.Repository.create(storage)


@dataclass(frozen=True)
class CubeState:
    """What an existing cube says about itself."""

    request: dict[str, Any]
    ledger: list[dict[str, Any]]
    version: str

    @property
    def grid(self) -> Grid:
        return Grid.from_attrs(self.request["grid"])

    @property
    def item_ids(self) -> set[str]:
        return {i["id"] for step in self.ledger for i in step["items"]}

    @property
    def times(self) -> list[str]:
        return [step["time"] for step in self.ledger]


def read_state(path: str | Path, snapshot: str | None = None) -> CubeState | None:
    """The :class:`CubeState` of the cube at ``path``, or None when there is none yet."""
    import zarr

    if not repo_exists(path):
        if Path(path).exists() and any(Path(path).iterdir()):
            raise StoreError(f"{path} exists and is not a cube store; choose another --store")
        return None
    repo = open_repo(path)
    session = (
        repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session("main")
    )
    try:
        attrs = zarr.open_group(session.store, mode="r").attrs.asdict()
    except Exception as exc:
        raise StoreError(f"{path} is an icechunk repository but holds no stac2cube cube") from exc
    if REQUEST_ATTR not in attrs:
        raise StoreError(f"{path} is an icechunk repository but holds no stac2cube cube")
    return CubeState(
        request=_load(attrs[REQUEST_ATTR]),
        ledger=_load(attrs.get(LEDGER_ATTR, "[]")),
        version=str(attrs.get(VERSION_ATTR, "?")),
    )


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def check_compatible(state: CubeState, request: dict[str, Any]) -> None:
    """Raise :class:`GridMismatchError` naming every way ``request`` differs from the cube.

    Grid (CRS, resolution, bounds), bands, mission and collection are fixed at creation.
    """
    problems = state.grid.differences(Grid.from_attrs(request["grid"]))
    for key in ("mission", "collection"):
        if state.request.get(key) != request.get(key):
            problems.append(f"{key} {request.get(key)!r} != cube's {state.request.get(key)!r}")
    if list(state.request.get("bands", [])) != list(request.get("bands", [])):
        problems.append(f"bands {request.get('bands')} != cube's {state.request.get('bands')}")
    if problems:
        raise GridMismatchError(
            "request does not match the existing cube: "
            + "; ".join(problems)
            + " (the cube is left unchanged; use another --store for a different grid)"
        )


def encode_for_store(ds: xr.Dataset, chunk: int = CHUNK) -> dict[str, dict[str, Any]]:
    """Zarr encodings of the cube's variables (first write only; appends reuse them)."""
    enc: dict[str, dict[str, Any]] = {"time": dict(TIME_ENCODING)}
    for name, var in ds.data_vars.items():
        chunks = (1, min(chunk, var.sizes["y"]), min(chunk, var.sizes["x"]))
        if var.dtype.kind == "f":
            enc[name] = {**REFLECTANCE_ENCODING, "chunks": chunks}
        else:
            enc[name] = {"dtype": str(var.dtype), "chunks": chunks}
    return enc


def write_time_steps(session, ds: xr.Dataset, *, first: bool) -> None:
    """Write (``first``) or append along time the variables of ``ds`` into ``session``."""
    from icechunk.xarray import to_icechunk

    # chunk the pixel variables only: per-step string coordinates stay in memory (object dtype)
    ds = ds.assign(
        {name: var.chunk({"time": 1, "y": CHUNK, "x": CHUNK}) for name, var in ds.data_vars.items()}
    )
    if first:
        to_icechunk(ds, session, mode="w-", encoding=encode_for_store(ds))
    else:
        to_icechunk(ds, session, append_dim="time")


def write_metadata(session, *, request: dict[str, Any], ledger: list[dict[str, Any]], version: str):
    """Store the request and ledger as root attributes (part of the same commit)."""
    import zarr

    group = zarr.open_group(session.store, mode="r+")
    group.attrs.update(
        {
            REQUEST_ATTR: json.dumps(request),
            LEDGER_ATTR: json.dumps(ledger),
            VERSION_ATTR: version,
        }
    )


def open_cube(path: str | Path, *, snapshot: str | None = None, decode: bool = True) -> xr.Dataset:
    """Open the cube at ``path`` as a lazy, decoded ``xarray.Dataset``.

    Args:
        path: the cube store (an icechunk repository).
        snapshot: an icechunk snapshot id to read instead of the latest commit.
        decode: apply CF decoding (scale/offset, NaN for nodata); False gives stored integers.

    Example:
        >>> ds = open_cube("demo.icechunk")  # doctest: +SKIP
        >>> ds.B04.sel(time="2024-01").mean("time")  # doctest: +SKIP
    """
    if not repo_exists(path):
        raise StoreError(f"no cube at {path}")
    repo = open_repo(path)
    session = (
        repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session("main")
    )
    return xr.open_zarr(session.store, consolidated=False, mask_and_scale=decode, chunks={})


def cube_info(path: str | Path) -> dict[str, Any]:
    """Summary of the cube at ``path``: grid, bands, time range, scenes per time step."""
    state = read_state(path)
    if state is None:
        raise StoreError(f"no cube at {path}")
    ds = open_cube(path)
    grid = state.grid
    repo = open_repo(path)
    snapshot = next(iter(repo.ancestry(branch="main"))).id
    return {
        "store": str(path),
        "snapshot": snapshot,
        "mission": state.request.get("mission"),
        "catalog": state.request.get("catalog_url"),
        "collection": state.request.get("collection"),
        "crs": grid.crs,
        "resolution": grid.resolution,
        "bounds": list(grid.bounds),
        "shape": {"time": int(ds.sizes.get("time", 0)), "y": grid.height, "x": grid.width},
        "bands": list(state.request.get("bands", [])),
        "time_range": [state.times[0], state.times[-1]] if state.times else None,
        "time_steps": [
            {
                "time": s["time"],
                "scenes": len(s["items"]),
                "rules": sorted({i["rule"] for i in s["items"]}),
            }
            for s in state.ledger
        ],
        "stac2cube_version": state.version,
    }
