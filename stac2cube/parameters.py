"""The flows' parameters, checked before anything starts.

Every function here is plain Python: no Prefect, no Dask. The command line calls them before it
starts a Prefect server or a Dask cluster, and the flows call them first thing, so a bad
parameter gives the same one-line :class:`~stac2cube.errors.InvalidRequestError` from the CLI,
a Python call, a ``.fn()`` call and a deployment run (the flows skip Prefect's own parameter
validation, whose errors span many lines).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stac2cube.errors import InvalidRequestError, StoreError
from stac2cube.request import CubeRequest, make_request, parse_date
from stac2cube.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STORE,
    SPEC_FIELDS,
    CubeSpec,
    check_integer,
    check_switch,
)

#: schemes of a Dask scheduler address a runner may name
_SCHEMES = ("tcp", "tls")


def resolve_requests(params: dict[str, Any]) -> dict[str | None, tuple[CubeRequest, str]]:
    """Validate ``get_stac_layers`` parameters into ``{feature name: (request, store)}``.

    One entry (named None) for a plain build; one per feature of the AOI with ``per_feature``.
    Nothing is searched or written: every bad parameter fails here.
    """
    params = dict(params)
    check_integer(params.get("batch_size", DEFAULT_BATCH_SIZE), "batch_size", 1)
    check_switch(params.get("per_feature", False), "per_feature")
    spec = CubeSpec.from_parameters(params)
    common = request_arguments(spec)
    store = params.get("store") or DEFAULT_STORE
    if not isinstance(store, str | Path):
        raise InvalidRequestError(f"store must be a path, got {store!r}")
    if params.get("per_feature"):
        if spec.area.bbox is not None:
            raise InvalidRequestError("per_feature builds take their areas from aoi, not bbox")
        return feature_requests(spec.area.aoi, params.get("name_field"), str(store), common)
    request = make_request(bbox=spec.area.bbox, aoi=spec.area.aoi, **common)
    return {None: (request, str(store))}


def request_arguments(spec: CubeSpec) -> dict[str, Any]:
    """:func:`~stac2cube.request.make_request` keywords of ``spec``, its area (``bbox``,
    ``aoi``) apart: the processing options as one object."""
    layers = {name for name, f in SPEC_FIELDS.items() if f.section == "layers"}
    arguments = {
        name: value
        for name, value in spec.parameters().items()
        if name not in ("bbox", "aoi")
        and (name not in layers or name in ("bands", "resampling"))
        and SPEC_FIELDS[name].section != "superresolution"  # a stage's, not the request's
    }
    arguments["options"] = spec.layers.options()
    return arguments


def check_build(params: dict[str, Any]) -> dict[str | None, tuple[CubeRequest, str]]:
    """:func:`resolve_requests`, and every existing store checked against its request.

    Nothing is searched or written; a store that is not a cube, or a cube the request does not
    match, fails here.
    """
    requests = resolve_requests(params)
    from stac2cube.store import check_compatible, read_state

    for request, store in requests.values():
        state = read_state(store)
        if state is not None:
            check_compatible(state, request.describe())
    return requests


def feature_requests(
    aoi: Any, name_field: str | None, store: str, common: dict[str, Any]
) -> dict[str, tuple[CubeRequest, str]]:
    """One validated request and store path per feature of ``aoi`` (nothing searched yet)."""
    from stac2cube.aoi import read_features

    if aoi is None:
        raise InvalidRequestError("per_feature needs an aoi: a vector file or FeatureCollection")
    features = read_features(aoi, name_field)
    return {
        f.name: (make_request(aoi=f.geometry, **common), feature_store(store, f.name))
        for f in features
    }


def feature_store(pattern: str, name: str) -> str:
    """The store of feature ``name``: ``pattern`` with ``{name}`` filled in, or a folder.

    >>> feature_store("cubes/{name}.icechunk", "lake"), feature_store("cubes", "lake")
    ('cubes/lake.icechunk', 'cubes/lake.icechunk')
    """
    if "{name}" in pattern:
        return pattern.replace("{name}", name)
    if pattern == "cube.icechunk":  # the flow's default store
        return f"{name}.icechunk"
    return str(Path(pattern) / f"{name}.icechunk")


def update_window(
    state_request: dict[str, Any], last_time: str | None, end: dt.date, lookback_days: int
) -> tuple[dt.date, dt.date]:
    """The search window of an update: from ``lookback_days`` before the cube's last step.

    The look-back catches scenes the catalog published late and recent reprocessings; it never
    starts before the cube's own start date.

    >>> update_window({"start": "2024-01-01"}, "2024-03-10T10:30:21", dt.date(2024, 4, 1), 30)
    (datetime.date(2024, 2, 9), datetime.date(2024, 4, 1))
    """
    first = dt.date.fromisoformat(state_request["start"])
    if last_time is None:
        return first, end
    start = dt.date.fromisoformat(last_time[:10]) - dt.timedelta(days=lookback_days)
    return max(first, start), end


def update_parameters(
    store: str | Path,
    end: Any = None,
    lookback_days: Any = 30,
    batch_size: Any = DEFAULT_BATCH_SIZE,
) -> tuple[int, dict[str, Any] | None]:
    """The ``get_stac_layers`` parameters of an update of the cube at ``store``.

    Everything but the window comes from the request recorded in the cube.

    Returns:
        ``(time steps in the cube, parameters)``; the parameters are None when there is
        nothing to search (a cube of explicit dates, none of them in the window).
    """
    from stac2cube.settings import build_parameters
    from stac2cube.store import read_state

    if not isinstance(store, str | Path):
        raise InvalidRequestError(f"store must be a path, got {store!r}")
    end_d = parse_date(end, "end") or dt.datetime.now(dt.UTC).date()
    lookback = check_integer(lookback_days, "lookback_days", 0)
    batch = check_integer(batch_size, "batch_size", 1)
    state = read_state(store)
    if state is None:
        raise StoreError(f"no cube at {store}; create it with `stac2cube build` first")
    req = state.request
    start, end_d = update_window(req, state.times[-1] if state.times else None, end_d, lookback)
    if end_d < start:
        raise InvalidRequestError(f"end {end_d} is before the update window's start {start}")
    params = build_parameters(req, store)
    params.update(start=start, end=end_d, batch_size=batch)
    if params["dates"]:  # a cube of explicit dates only grows by those in the window
        params["dates"] = [
            d for d in params["dates"] if start.isoformat() <= d <= end_d.isoformat()
        ]
        if not params["dates"]:
            return len(state.ledger), None
    return len(state.ledger), params


def resolve_runner(runner: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """Turn ``auto|local|threads|slurm|tcp://host:port`` into ``local``, ``threads``,
    ``slurm`` or an address.

    ``auto`` is ``slurm`` inside a SLURM allocation and ``threads`` elsewhere: on a laptop or a
    workstation, dask's threaded scheduler in the flow's process builds a cube faster than a
    ``LocalCluster`` (no scheduler, no session forks to merge; ``bench/RESULTS.md``). A flow
    given a ``DaskCluster`` block turns that ``threads`` into the block's local cluster
    (:func:`stac2cube.flows.runner.task_runner_for`).

    Args:
        runner: The requested runner.
        environ: Environment to look at for ``auto`` (default ``os.environ``).

    Returns:
        ``"local"``, ``"threads"``, ``"slurm"``, or the scheduler address (``tcp://host:port``).

    Raises:
        InvalidRequestError: ``runner`` is none of these.
    """
    key = (runner or "").strip()
    if key == "auto":
        env = os.environ if environ is None else environ
        return "slurm" if env.get("SLURM_JOB_ID") else "threads"
    if key in ("local", "threads", "slurm"):
        return key
    parsed = urlparse(key)
    if parsed.scheme in _SCHEMES and parsed.hostname:
        try:
            port = parsed.port
        except ValueError:
            port = None
        if port:
            return key
    raise InvalidRequestError(
        f"unknown runner {runner!r}; use auto, local, threads, slurm or a Dask scheduler address "
        "such as tcp://127.0.0.1:8786"
    )
