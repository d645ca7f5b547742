"""Fault injection for tests: an HTTP proxy on loopback that breaks some of the requests it
forwards, and a small range-capable file server to put behind it (COGs over HTTP).

Fault kinds (:data:`FAULTS`):

================  ==============================================================================
``429``           ``429 Too Many Requests`` without ``Retry-After``
``429-retry``     ``429`` with ``Retry-After: <retry_after>`` (seconds)
``500`` ``502``   that status, empty body
``503``
``reset``         the connection is reset (TCP RST) before any response byte
``stall``         nothing is answered for ``stall_s`` seconds, then the connection is closed
``truncate``      the upstream response with its full ``Content-Length``, cut off half-way
================  ==============================================================================

A :class:`FaultPlan` says which requests fail: a share of them (``rate``, drawn from a seeded
generator), chosen ones (``on_requests``: the N-th request, counting from 1) or all of them
(``always``), optionally only requests whose path contains ``match``. Every request is recorded
in :attr:`FaultProxy.log` (number, method, path, fault or None, status sent).

Example:
    >>> from stac2cube.testing.faults import FaultPlan, FaultProxy, FileServer
    >>> files = FileServer("/tmp").start()  # doctest: +SKIP
    >>> proxy = FaultProxy(files.url, FaultPlan(rate=0.2, seed=1)).start()  # doctest: +SKIP
    >>> proxy.url  # doctest: +SKIP
    'http://127.0.0.1:43121'
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

FAULTS = ("429", "429-retry", "500", "502", "503", "reset", "stall", "truncate")
#: faults a client cannot tell from a dead server: fine at a rate, never ``always`` in fast tests
SLOW_FAULTS = ("stall",)
_STATUS = {"429": 429, "429-retry": 429, "500": 500, "502": 502, "503": 503}


@dataclass
class FaultPlan:
    """Which requests a :class:`FaultProxy` breaks, and how (see the module docs)."""

    rate: float = 0.0
    kinds: Sequence[str] = FAULTS
    on_requests: dict[int, str] = field(default_factory=dict)
    always: str | None = None
    match: str | None = None
    seed: int = 0
    retry_after: float = 1  #: seconds (an integer, as RFC 9110 says; a fraction tests clients)
    stall_s: float = 30.0

    def __post_init__(self) -> None:
        for kind in [*self.kinds, *self.on_requests.values(), self.always]:
            if kind is not None and kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULTS)}")


@dataclass(frozen=True)
class Request:
    """One request the proxy saw."""

    n: int
    method: str
    path: str
    fault: str | None
    status: int | None
    t: float = 0.0  #: when it arrived (``time.monotonic()``)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    """A threaded HTTP server on 127.0.0.1 (``start``/``stop``, context manager)."""

    handler: type[http.server.BaseHTTPRequestHandler]

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (self.handler,), {"owner": self})
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FileServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        root = self.owner.root
        path = (root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        if root not in path.parents or not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        start, end, status = 0, len(data) - 1, 200
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].split(",")[0].partition("-")
            if first:
                start, end = int(first), min(int(last) if last else end, end)
            else:
                start = max(0, len(data) - int(last))
            status = 206
        if start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])


class FileServer(_Base):
    """Serves the files under ``root`` over HTTP with byte ranges (what GDAL's /vsicurl/ needs)."""

    handler = _FileHandler

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve()
        super().__init__(host, port)

    def href(self, path: str | Path) -> str:
        """The URL of the file at ``path`` (under ``root``)."""
        return f"{self.url}/{Path(path).resolve().relative_to(self.root).as_posix()}"


_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else None
        arrived = time.monotonic()
        n, fault = proxy._decide(self.path)
        status: int | None = None
        try:
            if fault in _STATUS:
                status = _STATUS[fault]
                self.send_response(status)
                if fault == "429-retry":
                    self.send_header("Retry-After", f"{proxy.plan.retry_after:g}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif fault == "reset":
                self._reset()
            elif fault == "stall":
                proxy.stopping.wait(proxy.plan.stall_s)
                self.close_connection = True
            else:
                status = self._forward(payload, truncate=fault == "truncate")
        finally:
            proxy._record(Request(n, self.command, self.path, fault, status, arrived))

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _forward(self, payload: bytes | None, truncate: bool) -> int:
        up = urlsplit(self.owner.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        try:
            conn.request(self.command, up.path.rstrip("/") + self.path, payload, headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        head = self.command == "HEAD"
        for key, value in resp.getheaders():
            if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                self.send_header(key, value)
        if not head:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return resp.status
        if truncate and len(body) > 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(body)
        return resp.status


class FaultProxy(_Base):
    """Forwards requests to ``upstream`` (an ``http://host:port[/prefix]`` URL), breaking those
    the :class:`FaultPlan` picks. The ``Host`` header is passed on unchanged, so a STAC API
    behind it writes its links with the proxy's address."""

    handler = _ProxyHandler

    def __init__(
        self, upstream: str, plan: FaultPlan | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan()
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._count = 0
        self._rng = random.Random(self.plan.seed)
        super().__init__(host, port)

    def set_plan(self, plan: FaultPlan) -> None:
        """Use ``plan`` from the next request on (the request count restarts at 1)."""
        with self._lock:
            self.plan, self._count, self._rng = plan, 0, random.Random(plan.seed)

    def _decide(self, path: str) -> tuple[int, str | None]:
        with self._lock:
            plan = self.plan
            if plan.match and plan.match not in path:
                return 0, None
            self._count += 1
            n = self._count
            if plan.always:
                return n, plan.always
            if n in plan.on_requests:
                return n, plan.on_requests[n]
            if plan.rate > 0 and self._rng.random() < plan.rate:
                return n, self._rng.choice(list(plan.kinds))
            return n, None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def faults(self) -> Counter:
        """How many requests got each fault."""
        with self._lock:
            return Counter(r.fault for r in self.log if r.fault)

    def clear(self) -> None:
        with self._lock:
            self.log.clear()


def http_catalog(items: Sequence[dict], root: str | Path, base_url: str, collection: str):
    """Copies of ``items`` (``file://`` hrefs under ``root``) in ``collection`` with their assets
    served at ``base_url`` (a :class:`FileServer` of ``root``, or a proxy in front of it)."""
    import copy

    root = Path(root).resolve()
    out = []
    for item in items:
        new = copy.deepcopy(item)
        new["collection"] = collection
        for asset in new.get("assets", {}).values():
            href = str(asset.get("href", ""))
            if href.startswith("file://"):
                rel = Path(href.removeprefix("file://")).resolve().relative_to(root)
                asset["href"] = f"{base_url.rstrip('/')}/{rel.as_posix()}"
        out.append(new)
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = [
    "FAULTS",
    "FaultPlan",
    "FaultProxy",
    "FileServer",
    "Request",
    "free_port",
    "http_catalog",
]
