"""Search: query a STAC API with pystac-client and return plain item dicts (no Prefect).

Transient failures (HTTP 429/5xx, connection resets, read timeouts, bodies cut off half-way)
are retried with exponential backoff (0.5 s, 1 s, 2 s, 4 s), a ``Retry-After`` header is honoured
up to :data:`RETRY_AFTER_MAX` seconds, and every retry is logged (logger ``stac2cube.search``,
WARNING); after the last try the error names the catalog and the status. The read time-out is
20 s (``STAC2CUBE_HTTP_TIMEOUT`` sets another), the connect time-out 10 s at most. Item dicts are returned
as the API served them (``items_as_dicts``), so ``proj:epsg`` survives for stackstac.

Per mission: static products (the DEM) are searched without a date filter (their items carry
the production date, not an acquisition date); ``--max-cloud`` applies only to missions whose
items have ``eo:cloud_cover`` (not Sentinel-1 or the DEM). A collection entry ``a,b,c`` searches
several collections at once (terrabyte's three Landsat collections).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from urllib3.util.retry import Retry

from stac2cube.catalogs import split_collections
from stac2cube.errors import CatalogError, EmptySearchError
from stac2cube.request import SearchRequest

RETRY_STATUS = (429, 500, 502, 503, 504)
#: the longest ``Retry-After`` honoured (seconds); a longer one is cut to this
RETRY_AFTER_MAX = 60.0
#: read time-out of catalog requests (seconds) unless ``STAC2CUBE_HTTP_TIMEOUT`` says otherwise
DEFAULT_TIMEOUT = 20.0

log = logging.getLogger("stac2cube.search")


def http_timeout(default: float = DEFAULT_TIMEOUT) -> float:
    """The read time-out of HTTP requests: ``STAC2CUBE_HTTP_TIMEOUT`` (seconds) or ``default``."""
    value = os.environ.get("STAC2CUBE_HTTP_TIMEOUT", "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        return default


class LoggedRetry(Retry):
    """urllib3's :class:`Retry` that logs each retry and caps ``Retry-After``."""

    def get_backoff_time(self) -> float:
        """0.5 s, 1 s, 2 s, 4 s, ... (urllib3 2 waits nothing before the first retry)."""
        consecutive = 0
        for entry in reversed(self.history):
            if entry.redirect_location is not None:
                break
            consecutive += 1
        if consecutive == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (consecutive - 1)))

    def parse_retry_after(self, retry_after: str) -> float:
        """Seconds to wait; a malformed value (``0.5``, garbage) counts as no header."""
        try:
            return super().parse_retry_after(retry_after)
        except Exception:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return 0.0

    def get_retry_after(self, response) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, RETRY_AFTER_MAX)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, **kw):
        new = super().increment(method, url, response, error, _pool, **kw)
        if response is not None and response.status:
            why = f"HTTP {response.status}"
            after = self.get_retry_after(response) if self.respect_retry_after_header else None
            wait = after if after is not None else new.get_backoff_time()
        else:
            why = type(error).__name__ if error is not None else "error"
            wait = new.get_backoff_time()
        host = f"{_pool.host}:{_pool.port}" if _pool is not None else "?"
        done = len(new.history)
        log.warning(
            "catalog request %s %s%s failed (%s); retry %d of %d in %.1f s",
            method, host, (url or "").split("?")[0], why, done, new._limit(), wait,
        )  # fmt: skip
        return new

    def _limit(self) -> int:
        """How many retries this policy allows in all (the ones done included)."""
        return int(self.total if isinstance(self.total, int) else 0) + len(self.history)


def make_retry(max_retries: int = 4, backoff: float = 0.5) -> Retry:
    """urllib3 retry policy: transient errors only, exponential backoff, honours Retry-After
    (capped at :data:`RETRY_AFTER_MAX`), each retry logged."""
    return LoggedRetry(
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


def _retrying_io(timeout: float, max_retries: int):
    """pystac-client's ``StacApiIO`` with :func:`make_retry`, which also retries a response
    whose body is cut off (urllib3 retries only until the headers have arrived)."""
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO
    from requests.exceptions import ChunkedEncodingError, ContentDecodingError

    class RetryingStacApiIO(StacApiIO):
        def request(self, href, method=None, headers=None, parameters=None):
            for attempt in range(max_retries + 1):
                try:
                    return super().request(href, method, headers, parameters)
                except APIError as exc:
                    cause = exc.__context__
                    if attempt == max_retries or not isinstance(
                        cause, (ChunkedEncodingError, ContentDecodingError)
                    ):
                        raise
                    wait = 0.5 * 2**attempt
                    log.warning(
                        "catalog request %s %s: body cut off (%s); retry %d of %d in %.1f s",
                        (method or "GET").upper(), href.split("?")[0], type(cause).__name__,
                        attempt + 1, max_retries, wait,
                    )  # fmt: skip
                    time.sleep(wait)
            raise AssertionError("unreachable")

    return RetryingStacApiIO(
        timeout=(min(timeout, 10.0), timeout), max_retries=make_retry(max_retries)
    )


def open_client(
    url: str,
    *,
    timeout: float | None = None,
    max_retries: int = 4,
    modifier: Callable[[Any], Any] | None = None,
):
    """Open the STAC API at ``url`` with retries and timeouts, or raise :class:`CatalogError`.

    ``timeout`` is the read time-out in seconds (default :func:`http_timeout`); the connect
    time-out is the smaller of it and 10 s.
    """
    from pystac_client import Client

    io = _retrying_io(http_timeout() if timeout is None else timeout, max_retries)
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
        return f"HTTP {status}" + (f": {text[:200]}" if text != type(exc).__name__ else "")
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
