"""Independent expectations: what a cube pixel must hold, computed from the COGs themselves.

Nothing here calls stac2cube's loading or radiometry code: DN are read from the COG files with
rasterio and converted by the documented formulas.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI (``CI=true``): a missing server or package never skips there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must run this test but: {reason}")
    pytest.skip(reason)


def dn_on_grid(href: str, xs: np.ndarray, ys: np.ndarray, epsg: int):
    """DN of the COG at ``href`` under each cube pixel centre (nearest = containing pixel).

    Returns ``(dn, safe)``: ``dn`` 0 outside the COG; ``safe`` False where the centre lies within
    5% of a source pixel edge (where a reprojecting reader may round either way).
    """
    from mission_helpers import raw_on_grid

    dn, _, safe = raw_on_grid(href, xs, ys, epsg, margin=0.05)
    return dn, safe


def reflectance(dn: np.ndarray, offset_dn: int) -> np.ndarray:
    """The documented formula: reflectance = (DN + offset) / 10000, NaN where DN == 0."""
    out = (dn.astype("float64") + offset_dn) / 10000.0
    return np.where(dn == 0, np.nan, out)


def mosaic_first_valid(layers: list[np.ndarray]) -> np.ndarray:
    """First non-NaN value along the list."""
    out = np.full(layers[0].shape, np.nan)
    for layer in layers:
        out = np.where(np.isnan(out), layer, out)
    return out


def tree_digest(path: Path) -> str:
    """A hash of every file (name and bytes) under ``path``: equal digests, an untouched store."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def small_bbox() -> list[float]:
    """A 400 m x 400 m WGS 84 box inside tile A (the seasons collection's scenes)."""
    from pyproj import Transformer

    from stac2cube.testing.synthetic import TILE_A

    tr = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    x0, y1 = TILE_A[2]
    w, s = tr.transform(x0 + 100, y1 - 500)
    e, n = tr.transform(x0 + 500, y1 - 100)
    return [w, s, e, n]


def start_sas_server(sig: str):
    """A local stand-in for the Planetary Computer SAS token API on 127.0.0.1.

    Returns ``(server, url, seen)``: ``seen`` lists ``(path, subscription key)`` of every token
    request; the tokens it hands out end in ``sig=<sig>``. Stop it with ``server.shutdown()``.
    """
    import http.server
    import json
    import threading

    seen: list[tuple[str, str | None]] = []
    token = f"st=2024&se=2099&sp=rl&sig={sig}"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Ocp-Apim-Subscription-Key")))
            body = json.dumps({"msft:expiry": "2099-01-01T00:00:00Z", "token": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/api/sas/v1/token", seen
