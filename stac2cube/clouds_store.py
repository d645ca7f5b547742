"""Cloud layers in the cube's store: plan (L1C search, pairing, checks) and write (no Prefect).

:func:`plan_cloud_layers` does everything that can fail before a byte is written: the cube is
Sentinel-2 L2A, the catalog has an L1C collection, the L1C scenes of the steps are found and
paired, requester-pays assets have AWS credentials. :func:`write_cloud_layers` then writes the
group ``clouds`` (see :mod:`stac2cube.clouds`) into an open writable icechunk session: the same
call serves the stage's own flow (:func:`stac2cube.flows.clouds.get_cloud_layers`) and the
build/update runs (right after the composites, in the same commit).

The group's time axis is the cube's. New steps after the group's last one are appended (arrays
resized); steps inserted before it, or other settings, rewrite the group, copying the layers of
unchanged steps from the parent snapshot one step at a time. Steps not computed hold fill
(NaN when decoded) and have no record, so a later run computes them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stac2cube._log import get_logger
from stac2cube.clouds import (
    DEFAULT_BLOCK,
    GROUP,
    NODATA,
    RECORD_ATTR,
    S2CLOUDLESS_BANDS,
    CloudLayerError,
    CloudSettings,
    StepPairing,
    halo,
    l1c_offsets,
    l1c_search_window,
    l1c_unavailable,
    load_record,
    mosaic_toa,
    pair_scenes,
    processing_grid,
    stale_times,
    step_record,
    sun_angles,
    upsample_probability,
    window_layers,
)
from stac2cube.grid import Grid

#: environment variables that give GDAL AWS credentials
AWS_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
STACK_CHUNK = 256


@dataclass
class CloudPlan:
    """What a cloud-layers write will do; made before anything is written."""

    settings: CloudSettings
    grid: Grid
    pgrid: Grid
    resampling: str
    catalog: str
    collection: str | None
    pairings: dict[str, StepPairing] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        out = self.settings.describe(self.grid.resolution)
        out.update(catalog=self.catalog, collection=self.collection)
        return out


def settings_of_group(session_or_store) -> CloudSettings | None:
    """The settings stored in the cube's ``clouds`` group (None: no group)."""
    record = read_group_record(session_or_store)
    if not record:
        return None
    return CloudSettings.from_record(record["settings"])


def read_group_record(session_or_store) -> dict[str, Any]:
    """The ``stac2cube:clouds`` record of the group, {} when the cube has no group."""
    import zarr

    store = getattr(session_or_store, "store", session_or_store)
    try:
        group = zarr.open_group(store, path=GROUP, mode="r")
    except Exception:
        return {}
    return load_record(group.attrs.asdict())


def resolve_l1c_catalog(settings: CloudSettings, request: Mapping[str, Any]) -> tuple[str, str]:
    """``(catalog URL, L1C collection)`` of the settings, defaulting to the cube's catalog.

    Raises:
        CloudLayerError: the catalog has no Sentinel-2 L1C (the message names alternatives).
    """
    from stac2cube.catalogs import resolve_catalog

    name = settings.catalog or request.get("catalog_url") or "earth-search"
    cat = resolve_catalog(name)
    if settings.collection:
        return cat.url, settings.collection
    if cat.name == "custom":
        return cat.url, "sentinel-2-l1c"
    ids = cat.collections.get("sentinel-2-l1c")
    if not ids:
        raise l1c_unavailable(cat.name, cat.not_offered.get("sentinel-2-l1c", "none offered"))
    return cat.url, ids[0]


def search_l1c(
    url: str, collection: str, bbox: Sequence[float], entries: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The L1C items of ``collection`` over ``bbox`` around the acquisitions of ``entries``.

    Raises:
        CloudLayerError: the catalog has no such collection.
        CatalogError: the catalog cannot be reached.
    """
    from stac2cube.errors import CatalogError
    from stac2cube.search import _reason, normalise_item, open_client

    client = open_client(url)
    try:
        found = client.get_collection(collection)
    except Exception as exc:
        raise l1c_unavailable(url, f"no collection {collection!r}: {_reason(exc)}") from exc
    if found is None or getattr(found, "id", collection) != collection:
        raise l1c_unavailable(url, f"no collection {collection!r}")
    start, end = l1c_search_window(entries)
    try:
        found = client.search(
            collections=[collection], bbox=list(bbox), datetime=f"{start}/{end}", limit=100
        ).items_as_dicts()
        return [normalise_item(i) for i in found]
    except Exception as exc:
        raise CatalogError(
            f"search on catalog {url} (collection {collection}) failed: {_reason(exc)}"
        ) from exc


def search_l2a(url: str, collection: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The cube's own L2A items by id (the csmask method reads their bands again)."""
    from stac2cube.errors import CatalogError
    from stac2cube.search import _reason, normalise_item, open_client

    client = open_client(url)
    out: list[dict[str, Any]] = []
    try:
        for k in range(0, len(ids), 100):
            found = client.search(
                collections=collection.split(","), ids=list(ids[k : k + 100]), limit=100
            ).items_as_dicts()
            out += [normalise_item(i) for i in found]
    except Exception as exc:
        raise CatalogError(f"search on catalog {url} failed: {_reason(exc)}") from exc
    return out


def requester_pays_buckets(items: Sequence[dict[str, Any]]) -> list[str]:
    """The requester-pays S3 buckets the assets of ``items`` lie in."""
    from stac2cube.load import REQUESTER_PAYS_BUCKETS

    out = []
    for item in items:
        for asset in item.get("assets", {}).values():
            href = str(asset.get("href", ""))
            if href.startswith("s3://"):
                bucket = href[5:].split("/", 1)[0]
                pays = asset.get("storage:requester_pays") or bucket in REQUESTER_PAYS_BUCKETS
                if pays and bucket not in out:
                    out.append(bucket)
    return out


def check_aws_credentials(items: Sequence[dict[str, Any]], environ=None) -> None:
    """Raise :class:`CloudLayerError` when requester-pays assets meet no AWS credentials."""
    env = os.environ if environ is None else environ
    buckets = requester_pays_buckets(items)
    if not buckets or any(env.get(k) for k in AWS_CREDENTIAL_ENV):
        return
    raise CloudLayerError(
        f"the L1C assets lie in the requester-pays S3 bucket(s) {', '.join(buckets)}: reading "
        "them needs AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or "
        "AWS_PROFILE, or pass aws_credentials_block, a Prefect Secret block); the transfer is "
        "billed to that account"
    )


def plan_cloud_layers(
    request: Mapping[str, Any],
    ledger: Sequence[Mapping[str, Any]],
    times: Sequence[str],
    settings: CloudSettings,
    *,
    name: str = "cube",
    environ=None,
) -> CloudPlan:
    """Check, search and pair for the steps ``times`` of a cube; nothing is written.

    Raises:
        CloudLayerError: not a Sentinel-2 cube, no L1C in the catalog, missing credentials.
    """
    from stac2cube.clouds import check_sentinel2

    check_sentinel2(request, name)
    grid = Grid.from_attrs(request["grid"])
    res = settings.processing_resolution(grid.resolution)
    pgrid = processing_grid(grid, res)
    resampling = (request.get("resampling") or "nearest") if pgrid == grid else "average"
    entries = [e for e in ledger if e["time"] in set(times)]
    if settings.method == "csmask":  # the cube's own L2A scenes
        url, collection = request["catalog_url"], request["collection"]
        plan = CloudPlan(settings, grid, pgrid, resampling, url, collection)
        if entries:
            items = search_l2a(url, collection, [r["id"] for e in entries for r in e["items"]])
            by_id = {i["id"]: i for i in items}
            for e in entries:
                found = tuple(by_id[r["id"]] for r in e["items"] if r["id"] in by_id)
                missing = tuple(r["id"] for r in e["items"] if r["id"] not in by_id)
                plan.pairings[e["time"]] = StepPairing(
                    e["time"], tuple(r["id"] for r in e["items"]), found, missing
                )
        return plan
    url, collection = resolve_l1c_catalog(settings, request)
    plan = CloudPlan(settings, grid, pgrid, resampling, url, collection)
    if not entries:
        return plan
    items = search_l1c(url, collection, request["bbox"], entries)
    for entry in entries:
        plan.pairings[entry["time"]] = pair_scenes(entry, items)
    check_aws_credentials([i for p in plan.pairings.values() for i in p.l1c], environ)
    return plan


# --- writing --------------------------------------------------------------------------------


def _skeleton(times, ids, grid: Grid, settings: CloudSettings):
    """The group as a lazy dataset of fill values (metadata written, no chunk)."""
    import dask.array as da
    import xarray as xr

    from stac2cube.dataset import spatial_ref

    n, (h, w) = len(times), grid.shape
    chunks = (1, min(512, h), min(512, w))
    fill = da.full((n, h, w), NODATA, dtype="uint8", chunks=chunks)
    thresholds = np.asarray(settings.thresholds, "float64")
    data = {
        "cloud_prob": (("time", "y", "x"), fill),
        "cloud_mask": (
            ("threshold", "time", "y", "x"),
            da.full((len(thresholds), n, h, w), NODATA, "uint8", chunks=(1, *chunks)),
        ),
    }
    if settings.shadows:
        data["shadow_mask"] = (("time", "y", "x"), fill)
    ds = xr.Dataset(
        data,
        coords={
            "time": np.asarray(times),
            "y": grid.y,
            "x": grid.x,
            "threshold": ("threshold", thresholds, {"units": "percent"}),
            "l1c_item_ids": ("time", np.asarray(ids, dtype=object)),
            "spatial_ref": spatial_ref(grid),
        },
    )
    ds["cloud_prob"].attrs.update(
        long_name="s2cloudless cloud probability", units="1", grid_mapping="spatial_ref"
    )
    ds["cloud_mask"].attrs.update(
        long_name="cloud mask (1: cloud) per probability threshold", grid_mapping="spatial_ref"
    )
    if settings.shadows:
        ds["shadow_mask"].attrs.update(
            long_name="cloud shadow mask (1: shadow)", grid_mapping="spatial_ref"
        )
    encoding = {
        "cloud_prob": {
            "dtype": "uint8",
            "_FillValue": NODATA,
            "scale_factor": np.float32(0.01),
            "add_offset": np.float32(0.0),
            "chunks": chunks,
        },
        "cloud_mask": {"dtype": "uint8", "_FillValue": NODATA, "chunks": (1, *chunks)},
        "time": {"units": "seconds since 1970-01-01", "dtype": "int64", "chunks": (4096,)},
        "l1c_item_ids": {"chunks": (4096,)},
    }
    if settings.shadows:
        encoding["shadow_mask"] = {"dtype": "uint8", "_FillValue": NODATA, "chunks": chunks}
    return ds, encoding


def _main_times(session) -> np.ndarray:
    import xarray as xr

    return xr.open_zarr(session.store, consolidated=False, chunks=None)["time"].values


def _read_old(cube, session):
    """The ``clouds`` group of the session's parent snapshot (zarr group), or None."""
    import zarr

    if cube is None:
        return None
    try:
        snap = session.snapshot_id
        store = cube.repository().readonly_session(snapshot_id=snap).store
        return zarr.open_group(store, path=GROUP, mode="r")
    except Exception:
        return None


def write_cloud_layers(
    session,
    request: Mapping[str, Any],
    ledger: Sequence[Mapping[str, Any]],
    times: Sequence[str] | None,
    settings: CloudSettings,
    *,
    cube=None,
    plan: CloudPlan | None = None,
    name: str = "cube",
    block: int = DEFAULT_BLOCK,
) -> dict[str, Any]:
    """Write the cloud layers of the steps ``times`` (None: every step lacking them) into the
    group ``clouds`` of an open writable session, on the cube's grid and time axis.

    Args:
        session: writable icechunk session of the cube (the main group already written).
        request: the cube's request record (grid, catalog, mission, bbox).
        ledger: the cube's ledger as it will be committed (one entry per step, time order).
        times: the steps to compute; steps whose layers exist for the same L2A scenes (and
            settings) are skipped.
        settings: the layer options (:class:`~stac2cube.clouds.CloudSettings`).
        cube: the :class:`~stac2cube.cube.Cube` (to copy unchanged steps from the parent
            snapshot when the group is rewritten).
        plan: a plan made beforehand (:func:`plan_cloud_layers`); made here otherwise.
        block: cube pixels per block side.

    Returns:
        ``{"computed": [times], "unmatched": {time: [L2A ids]}, "skipped": n}``; ``computed``
        is empty when there was nothing to do (nothing was written then).
    """
    import zarr

    log = get_logger()
    record = read_group_record(session)
    old_settings = CloudSettings.from_record(record["settings"]) if record else None
    grid = Grid.from_attrs(request["grid"])
    same = old_settings is not None and old_settings.same_pixels(settings, grid.resolution)
    steps_done = dict(record.get("steps", {})) if same else {}
    axis = [e["time"] for e in ledger]
    main = _main_times(session)
    if len(main) != len(axis):
        raise CloudLayerError(
            f"cube {name}: the ledger has {len(axis)} steps but the cube {len(main)}"
        )
    stale = set(stale_times(ledger, {"steps": steps_done}))
    wanted = set(axis) if times is None else set(times) & set(axis)
    todo = [t for t in axis if t in wanted and t in stale]
    old_axis = list(record.get("times", [])) if same else []
    if not todo and old_axis == axis:
        return {"computed": [], "unmatched": {}, "skipped": len(wanted)}
    if plan is None or any(t not in plan.pairings for t in todo):
        plan = plan_cloud_layers(request, ledger, todo, settings, name=name)
    steps_done = {t: v for t, v in steps_done.items() if t in set(axis) and t not in todo}

    root = zarr.open_group(session.store, mode="r+")
    append = same and GROUP in root and axis[: len(old_axis)] == old_axis
    if append and len(axis) > len(old_axis):
        _grow(root[GROUP], main, len(old_axis))
    elif not append:
        old = _read_old(cube, session) if same else None
        ids = [",".join(steps_done.get(t, {}).get("l1c", [])) for t in axis]
        ds, enc = _skeleton(main, ids, grid, settings)
        ds.to_zarr(session.store, group=GROUP, mode="w", compute=False, encoding=enc,
                   consolidated=False)  # fmt: skip
        if old is not None:
            _copy_steps(old, zarr.open_group(session.store, path=GROUP, mode="r+"),
                        list(record.get("times", [])), axis, steps_done)  # fmt: skip
    group = zarr.open_group(session.store, path=GROUP, mode="r+")
    unmatched: dict[str, list[str]] = {}
    for t in todo:
        pairing = plan.pairings[t]
        k = axis.index(t)
        offsets = l1c_offsets(pairing.l1c)
        sun = sun_angles(pairing.l1c)
        _clear_step(group, k, settings)
        if pairing.l1c:
            write_step(group, k, pairing, offsets, sun, plan, block=block)
        if pairing.unmatched:
            unmatched[t] = list(pairing.unmatched)
            log.warning("step %s: no scene for %s", t, ", ".join(pairing.unmatched))
        steps_done[t] = step_record(pairing, offsets, sun)
    ids = [",".join(steps_done.get(t, {}).get("l1c", [])) for t in axis]
    group["l1c_item_ids"][:] = np.asarray(ids, dtype=object)
    from stac2cube import __version__ as version
    from stac2cube.clouds import detector_version

    group.attrs[RECORD_ATTR] = json.dumps(
        {
            "settings": plan.record if plan is not None else settings.describe(grid.resolution),
            "s2cloudless_version": detector_version(),
            "stac2cube_version": version,
            "times": axis,
            "steps": steps_done,
        }
    )
    group.attrs.update(
        {
            "s2cloudless_version": detector_version(),
            "processing_resolution": plan.pgrid.resolution,
            "average_over_m": settings.average_over,
            "dilation_m": settings.dilation,
            "thresholds": list(settings.thresholds),
            "shadows": settings.shadows,
            "method": settings.method,
        }
    )
    if settings.method == "csmask":
        from stac2cube.clouds_csmask import csmask_version

        group.attrs["csmask_model_version"] = csmask_version()
    return {"computed": todo, "unmatched": unmatched, "skipped": len(wanted) - len(todo)}


def _grow(group, main_times: np.ndarray, start: int) -> None:
    """Resize the group's arrays along time to the cube's length; write the new times."""
    import pandas as pd

    n = len(main_times)
    for _name, array in group.arrays():
        dims = list(array.metadata.dimension_names or ())
        if "time" not in dims:
            continue
        shape = list(array.shape)
        shape[dims.index("time")] = n
        array.resize(tuple(shape))
    seconds = (pd.DatetimeIndex(main_times[start:]) - pd.Timestamp("1970-01-01")) // pd.Timedelta(
        seconds=1
    )
    group["time"][start:n] = np.asarray(seconds, "int64")


def _copy_steps(old, new, old_axis: list[str], axis: list[str], keep: Mapping[str, Any]) -> None:
    """Copy the stored layers of the steps ``keep`` from the old group, one step at a time."""
    for t in keep:
        if t not in old_axis:
            continue
        i, j = old_axis.index(t), axis.index(t)
        for name in ("cloud_prob", "shadow_mask"):
            if name in new and name in old:
                new[name][j] = old[name][i]
        if "cloud_mask" in old and old["cloud_mask"].shape[0] == new["cloud_mask"].shape[0]:
            new["cloud_mask"][:, j] = old["cloud_mask"][:, i]


def _clear_step(group, k: int, settings: CloudSettings) -> None:
    """Fill one step's layers with nodata (a replaced step without L1C match)."""
    group["cloud_prob"][k] = NODATA
    group["cloud_mask"][:, k] = NODATA
    if settings.shadows:
        group["shadow_mask"][k] = NODATA


def _stack(pairing: StepPairing, plan: CloudPlan):
    from stac2cube.load import stack_items
    from stac2cube.missions import get_mission

    if plan.settings.method == "csmask":
        from stac2cube.clouds_csmask import CSMASK_BANDS

        mission = get_mission("sentinel-2-l2a")
        bands = [mission.band(b) for b in CSMASK_BANDS]
    else:
        mission = get_mission("sentinel-2-l1c")
        bands = [mission.band(b) for b in S2CLOUDLESS_BANDS]
    return stack_items(
        list(pairing.l1c),
        bands,
        plan.pgrid,
        dtype="uint16",
        resampling=plan.resampling,
        chunksize=STACK_CHUNK,
        fill_value=0,
    )


def blocks(grid: Grid, block: int):
    """``(row0, row1, col0, col1)`` blocks of ``grid`` (aligned to multiples of ``block``)."""
    h, w = grid.shape
    for r0 in range(0, h, block):
        for c0 in range(0, w, block):
            yield r0, min(h, r0 + block), c0, min(w, c0 + block)


def write_step(
    group,
    k: int,
    pairing: StepPairing,
    offsets: list[dict[str, Any]],
    sun,
    plan: CloudPlan,
    *,
    block: int = DEFAULT_BLOCK,
) -> None:
    """Compute and write the layers of step ``k``, block by block with the halo they need."""
    stack = _stack(pairing, plan)
    offs = [o["offset"] for o in offsets]
    for r0, r1, c0, c1 in blocks(plan.grid, block):
        layers, fy, fx, wy0, wx0 = compute_block(stack, offs, sun, plan, (r0, r1, c0, c1))
        to_cube(group, k, layers, fy - wy0, fx - wx0, (r0, r1, c0, c1), plan)


def block_window(plan: CloudPlan, box, sun) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Fractional processing-grid positions of the block's cube pixel centres, and the
    processing window ``(y0, y1, x0, x1)`` (with halo, clipped to the grid) to read."""
    r0, r1, c0, c1 = box
    g, p = plan.grid, plan.pgrid
    xc = g.bounds[0] + (np.arange(c0, c1) + 0.5) * g.resolution
    yc = g.bounds[3] - (np.arange(r0, r1) + 0.5) * g.resolution
    fx = (xc - p.bounds[0]) / p.resolution - 0.5
    fy = (p.bounds[3] - yc) / p.resolution - 0.5
    top, bottom, left, right = halo(plan.settings, p.resolution, sun)
    ph, pw = p.shape
    y0 = max(0, math.floor(fy.min()) - top)
    y1 = min(ph, math.ceil(fy.max()) + 1 + bottom)
    x0 = max(0, math.floor(fx.min()) - left)
    x1 = min(pw, math.ceil(fx.max()) + 1 + right)
    return fy, fx, (y0, y1, x0, x1)


def compute_block(stack, offsets: Sequence[float], sun, plan: CloudPlan, box):
    """Read one block's window of the L1C stack and compute its layers (processing grid)."""
    fy, fx, (y0, y1, x0, x1) = block_window(plan, box, sun)
    dn = np.asarray(stack.isel(y=slice(y0, y1), x=slice(x0, x1)).values)
    toa = mosaic_toa(dn, offsets)
    layers = window_layers(toa, plan.settings, plan.pgrid.resolution, sun)
    return layers, fy, fx, y0, x0


def to_cube(group, k: int, layers, fy, fx, box, plan: CloudPlan) -> None:
    """Write a window's layers into the cube-grid block ``box`` of step ``k``."""
    r0, r1, c0, c1 = box
    if plan.pgrid == plan.grid:
        iy = np.round(fy).astype(int)
        ix = np.round(fx).astype(int)
        sl = np.ix_(iy, ix)
        percent = layers.percent[sl]
    else:
        percent = upsample_probability(layers.percent, fy, fx)
        sl = np.ix_(np.floor(fy + 0.5).astype(int), np.floor(fx + 0.5).astype(int))
    group["cloud_prob"][k, r0:r1, c0:c1] = percent
    group["cloud_mask"][:, k, r0:r1, c0:c1] = layers.masks[(slice(None), *sl)]
    if layers.shadow is not None:
        group["shadow_mask"][k, r0:r1, c0:c1] = layers.shadow[sl]


# --- settings and credentials of a run ---------------------------------------------------


def stored_settings(cube) -> CloudSettings | None:
    """The settings of the cube's ``clouds`` group as committed (None: no group)."""
    try:
        session = cube.repository().readonly_session("main")
    except Exception:
        return None
    return settings_of_group(session)


@contextmanager
def aws_credentials(block: str | None) -> Iterator[None]:
    """AWS credentials from a Prefect Secret block, in the environment for the run."""
    if not block:
        yield
        return
    from prefect.blocks.system import Secret

    value = Secret.load(block).get()
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict) or "aws_access_key_id" not in value:
        raise CloudLayerError(
            f"Secret block {block!r} must hold JSON with aws_access_key_id and "
            "aws_secret_access_key"
        )
    keys = {
        "AWS_ACCESS_KEY_ID": value["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": value.get("aws_secret_access_key", ""),
    }
    if value.get("aws_session_token"):
        keys["AWS_SESSION_TOKEN"] = value["aws_session_token"]
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_thresholds(values: Sequence[str] | None) -> list[float] | None:
    """Command-line thresholds as numbers (the flow checks the range)."""
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError:
        raise CloudLayerError(f"thresholds must be numbers 0-100, got {list(values)}") from None


def keep_cloud_layers(
    session, cube, record: Mapping[str, Any], ledger, times: Sequence[str], *, on: bool = False
) -> dict[str, Any] | None:
    """The build/update hook: cloud layers of the steps ``times`` a run wrote, in its session.

    A cube whose store has the group ``clouds`` keeps it current with the settings stored
    there; ``on`` (``--cloud-layers``) starts it with the default settings. Otherwise nothing.
    """
    settings = settings_of_group(session)
    if settings is None and not on:
        return None
    return write_cloud_layers(
        session,
        record,
        ledger,
        list(times),
        settings or CloudSettings.make(),
        cube=cube,
        name=cube.name,
    )
