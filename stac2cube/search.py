"""Search: query a STAC API with pystac-client and return plain item dicts (no Prefect).

Transient failures (HTTP 429/5xx, connection resets, read timeouts) are retried with exponential
backoff; after the last try the error names the catalog and the status. Item dicts are returned
as the API served them (``items_as_dicts``), so ``proj:epsg`` survives for stackstac.

Per mission: static products (the DEM) are searched without a date filter (their items carry
the production date, not an acquisition date); ``--max-cloud`` applies only to missions whose
items have ``eo:cloud_cover`` (not Sentinel-1 or the DEM). A collection entry ``a,b,c`` searches
several collections at once (terrabyte's three Landsat collections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from urllib3.util.retry import Retry

from stac2cube.catalogs import split_collections
from stac2cube.errors import CatalogError, EmptySearchError
from stac2cube.request import SearchRequest

RETRY_STATUS = (429, 500, 502, 503, 504)


def make_retry(max_retries: int = 4, backoff: float = 0.5) -> Retry:
    """urllib3 retry policy: transient errors only, exponential backoff, honours Retry-After."""
    return Retry(
        total=max_retries,
        connect=min(max_retries, 2),
        read=max_retries,
        status=max_retries,
        backoff_factor=backoff,
        backoff_max=20,
        status_forcelist=RETRY_STATUS,
        allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def open_client(
    url: str,
    *,
    timeout: float = 20.0,
    max_retries: int = 4,
    modifier: Callable[[Any], Any] | None = None,
):
    """Open the STAC API at ``url`` with retries and timeouts, or raise :class:`CatalogError`."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    io = StacApiIO(timeout=(min(timeout, 10.0), timeout), max_retries=make_retry(max_retries))
    try:
        client = Client.open(url, stac_io=io, modifier=modifier)
    except Exception as exc:
        raise CatalogError(f"catalog {url} did not answer: {_reason(exc)}") from exc
    # stac-fastapi advertises the v1.1 sort URI that pystac-client 0.9 does not know
    client.add_conforms_to("SORT")
    client.add_conforms_to("QUERY")
    return client


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if status:
        return f"HTTP {status}: {text[:200]}"
    return f"{type(exc).__name__}: {text[:300]}"


def _normalise_proj(fields: dict[str, Any]) -> None:
    code = fields.get("proj:code")
    if (
        fields.get("proj:epsg") is None
        and isinstance(code, str)
        and code.upper().startswith("EPSG:")
    ):
        fields["proj:epsg"] = int(code.split(":", 1)[1])
    transform = fields.get("proj:transform")
    if isinstance(transform, list) and len(transform) == 9:
        fields["proj:transform"] = transform[:6]  # the 3x3 form some APIs serve


def normalise_item(item: dict[str, Any]) -> dict[str, Any]:
    """Make ``proj:epsg`` present where the item only has ``proj:code`` (STAC projection v2).

    Also trims 9-element (3x3) ``proj:transform`` to the 6 coefficients stackstac reads. Items
    without any projection metadata are left alone: the load stage then places each asset by
    the item's WGS 84 ``bbox`` and GDAL reads its real georeferencing.
    """
    _normalise_proj(item.setdefault("properties", {}))
    for asset in item.get("assets", {}).values():
        _normalise_proj(asset)
    return item


def search_items(
    request: SearchRequest,
    *,
    page_size: int = 100,
    client=None,
    allow_empty: bool = False,
) -> list[dict[str, Any]]:
    """All items matching ``request`` (collection, area, dates, cloud cover), across pages.

    ``request`` is a :class:`~stac2cube.request.SearchRequest` (a ``CubeRequest`` is one).

    Raises:
        CatalogError: the catalog cannot be reached or answers with an error.
        EmptySearchError: nothing matched (unless ``allow_empty``).
    """
    url = request.catalog.url
    client = client or open_client(url)
    params = search_parameters(request, page_size=page_size)
    intervals = request.search_intervals if "datetime" in params else [None]
    items: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for interval in intervals:  # a season or explicit dates: one search per window
        if interval is not None:
            params["datetime"] = interval
        try:
            found = list(client.search(**params).items_as_dicts())
        except Exception as exc:
            raise CatalogError(
                f"search on catalog {url} (collection {request.collection}) failed: {_reason(exc)}"
            ) from exc
        for item in found:
            key = (item.get("collection", ""), item["id"])
            if key not in seen:
                seen.add(key)
                items.append(normalise_item(item))
    if not items and not allow_empty:
        cloud = f", cloud cover <= {request.max_cloud:g}%" if "query" in params else ""
        when = f", {_describe_when(request)}" if "datetime" in params else ""
        raise EmptySearchError(
            f"no {request.collection} scenes on {url} for bbox {list(request.bbox)}{when}{cloud}"
        )
    return items


def _describe_when(request: SearchRequest) -> str:
    text = f"{request.start} to {request.end}"
    if request.dates:
        return f"on the dates {', '.join(d.isoformat() for d in request.dates)}"
    if request.months:
        return f"{text}, months {', '.join(str(m) for m in request.months)}"
    return text


def search_parameters(request: SearchRequest, *, page_size: int = 100) -> dict[str, Any]:
    """The pystac-client ``search`` parameters for ``request`` (see the module docs)."""
    mission = request.mission
    params: dict[str, Any] = {
        "collections": split_collections(request.collection),
        "limit": page_size,
    }
    if mission.time_series:
        params["datetime"] = request.datetime_range
    if request.intersects is not None:
        params["intersects"] = request.intersects
    else:
        params["bbox"] = list(request.bbox)
    if request.max_cloud < 100 and mission.time_series and mission.cloud_cover:
        params["query"] = {"eo:cloud_cover": {"lte": request.max_cloud}}
    return params
