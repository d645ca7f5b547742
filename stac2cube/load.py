"""Load: the scenes of some time steps as lazy dask arrays on the cube's fixed grid.

stackstac reads each asset window-by-window with GDAL; nothing is read until the write stage
computes. Items are fed as raw dicts with ``proj:epsg`` (stackstac 0.5 ignores ``proj:code``),
raw values are kept (``rescale=False``: radiometry is decided per item in preprocess), and
pixel-centre coordinates are used (``xy_coords="center"``).

Bands are stacked by kind, one array each (see :class:`~stac2cube.missions.BandSpec`):

==============  ========  ==========  ===============================================
kind            dtype     fill        resampling
==============  ========  ==========  ===============================================
reflectance     uint16    0           the request's (default ``nearest``)
temperature     uint16    0           the request's
classification  uint8     0           always ``nearest`` (SCL)
bitfield        uint16    1 (fill)    always ``nearest`` (Landsat QA_PIXEL)
backscatter     float32   NaN         the request's (Sentinel-1 linear gamma0)
elevation       float32   NaN         the request's (DEM, reprojected from EPSG:4326)
==============  ========  ==========  ===============================================

Catalog access: Planetary Computer hrefs are signed when the reader opens them (see
:mod:`stac2cube.signing`); ``file://`` hrefs (terrabyte) are read directly; for ``s3://`` hrefs
in requester-pays buckets (Earth Search Landsat and L1C) GDAL gets
``AWS_REQUEST_PAYER=requester``, for public ones without AWS credentials
``AWS_NO_SIGN_REQUEST=YES``.

Remote reads (``http(s)://``, ``s3://``) are retried: GDAL itself retries HTTP 429/5xx, resets
and time-outs (:data:`HTTP_GDAL_ENV`: 4 retries, 0.5 s doubling; GDAL 3.10 does not read
``Retry-After``), and the reader retries a whole window read or open that still fails, e.g. on a
body cut off half-way, which GDAL does not retry and keeps in its cache (:data:`READ_RETRIES`
tries, the later ones bypassing GDAL's cache of that file; logged by ``stac2cube.load`` at
WARNING). A read that fails for good names the item and asset. A missing
asset (HTTP 404) is an error, never silently nodata (stackstac's default); with the request's
``errors_as_nodata`` the run records such assets and reads them as nodata
(:mod:`stac2cube.broken`).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from stackstac.rio_reader import AutoParallelRioReader

from stac2cube.broken import BROKEN
from stac2cube.errors import ReadError
from stac2cube.grid import Grid
from stac2cube.missions import BandSpec, MissionSpec, find_asset
from stac2cube.radiometry import ProcessingOptions
from stac2cube.request import CubeRequest
from stac2cube.signing import Signer, SigningReader, make_signer

log = logging.getLogger("stac2cube.load")

#: tries of one window read (or open) of a remote asset before the run fails
READ_RETRIES = 3
#: GDAL options for remote assets: retries with backoff, time-outs (see the module docs)
HTTP_GDAL_ENV = {
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
}
#: errors not worth another try here: an HTTP status (GDAL has retried 429/5xx already) and
#: missing or forbidden assets
_PERMANENT = ("HTTP response code:",)

#: S3 buckets known to be requester-pays when the asset does not say so itself.
REQUESTER_PAYS_BUCKETS = frozenset({"usgs-landsat", "sentinel-s2-l1c", "sentinel-s2-l2a"})
_AWS_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")

#: kind -> (dtype or None for the mission's, fill value, follows the request's resampling)
_KIND_LOADING: dict[str, tuple[str | None, float, bool]] = {
    "reflectance": (None, 0, True),
    "temperature": (None, 0, True),
    "classification": ("uint8", 0, False),
    "bitfield": ("uint16", 1, False),
    "backscatter": ("float32", math.nan, True),
    "elevation": ("float32", math.nan, True),
}


@dataclass(frozen=True)
class LoadGroup:
    """Bands read into one stack: same dtype, fill value and resampling."""

    kind: str
    bands: tuple[BandSpec, ...]
    dtype: str
    fill_value: float
    resampling: str


def options_of(request: CubeRequest, options: ProcessingOptions | None) -> ProcessingOptions:
    """The processing options: the given ones, else the request's."""
    return options or request.options


def bands_to_load(request: CubeRequest, options: ProcessingOptions | None = None) -> list[BandSpec]:
    """The request's bands, the bands its indices read, and the mission's QA band (SCL,
    QA_PIXEL); the extra bands are read, not written.

    The QA band is read only when something uses it: cloud masking and the scene-cloud filter
    (then every item must have it), and the statistics CSV's cloud fraction (then it is
    optional: an item without it reads as nodata). Otherwise ``cloud_fraction`` is NaN unless
    the QA band is one of the requested bands.
    """
    from dataclasses import replace

    from stac2cube.indices import index_bands

    options = options_of(request, options)
    bands = list(request.bands)
    mission = request.mission
    for band in index_bands(mission, request.indices):
        if band not in bands:
            bands.append(band)
    if mission.qa_band:
        qa = mission.band(mission.qa_band)
        needed = options.mask_clouds or request.max_scene_cloud < 100
        if qa not in bands and (needed or request.statistics):
            bands.append(qa if needed else replace(qa, optional=True))
    return bands


def load_groups(request: CubeRequest, options: ProcessingOptions | None = None) -> list[LoadGroup]:
    """How the bands of ``request`` are stacked (see the module docs)."""
    mission: MissionSpec = request.mission
    groups: dict[str, list[BandSpec]] = {}
    for band in bands_to_load(request, options):
        groups.setdefault(band.kind, []).append(band)
    out = []
    for kind, bands in groups.items():
        dtype, fill, follows = _KIND_LOADING[kind]
        dtype = dtype or mission.band_dtype(bands[0])
        if kind == "bitfield":
            fill = mission.band_nodata(bands[0])
        out.append(
            LoadGroup(kind, tuple(bands), dtype, fill, request.resampling if follows else "nearest")
        )
    return out


def canonical_items(
    items: Sequence[dict[str, Any]], bands: Sequence[BandSpec]
) -> list[dict[str, Any]]:
    """Copies of ``items`` whose assets are keyed by canonical band name (``B04``).

    Optional bands (Landsat ``lwir11`` of L2SR items) an item lacks are left out: stackstac
    then fills that item's pixels with the fill value; so are assets marked broken
    (:data:`~stac2cube.broken.BROKEN`, ``errors_as_nodata``).

    Raises:
        ReadError: an item lacks one of the (non-optional) bands.
    """
    out = []
    for item in items:
        assets = {}
        for band in bands:
            key = find_asset(item, band)
            if key is not None and BROKEN in item["assets"][key]:
                continue  # unreadable, read as nodata by choice (stac2cube.broken)
            if key is None:
                if band.optional:
                    continue
                raise ReadError(
                    f"item {item.get('id')} has no asset for band {band.name} "
                    f"(assets: {', '.join(sorted(item.get('assets', {})))})"
                )
            assets[band.name] = copy.deepcopy(item["assets"][key])
        new = {k: v for k, v in item.items() if k != "assets"}
        new["properties"] = dict(item.get("properties", {}))
        new["assets"] = assets
        out.append(new)
    return out


def gdal_env_for(items: Sequence[dict[str, Any]], environ: dict[str, str] | None = None):
    """GDAL options for reading ``items`` (a stackstac ``LayeredEnv``), or None for defaults.

    ``AWS_REQUEST_PAYER=requester`` when an ``s3://`` asset is requester-pays (its
    ``storage:requester_pays``, or a bucket of :data:`REQUESTER_PAYS_BUCKETS`);
    ``AWS_NO_SIGN_REQUEST=YES`` when all ``s3://`` assets are public and no AWS credentials are
    configured.
    """
    from stackstac.rio_reader import DEFAULT_GDAL_ENV

    env = os.environ if environ is None else environ
    s3, requester_pays = False, False
    for item in items:
        for asset in item.get("assets", {}).values():
            href = str(asset.get("href", ""))
            if not href.startswith("s3://"):
                continue
            s3 = True
            bucket = href[5:].split("/", 1)[0]
            if asset.get("storage:requester_pays") or bucket in REQUESTER_PAYS_BUCKETS:
                requester_pays = True
    if requester_pays:
        return DEFAULT_GDAL_ENV.updated(always={"AWS_REQUEST_PAYER": "requester"})
    if s3 and not any(env.get(k) for k in _AWS_CREDENTIAL_ENV):
        return DEFAULT_GDAL_ENV.updated(always={"AWS_NO_SIGN_REQUEST": "YES"})
    return None


def http_gdal_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """:data:`HTTP_GDAL_ENV` with the time-outs (``STAC2CUBE_HTTP_TIMEOUT``, default 30 s)."""
    env = os.environ if environ is None else environ
    try:
        timeout = float(env.get("STAC2CUBE_HTTP_TIMEOUT") or 30.0)
    except ValueError:
        timeout = 30.0
    return {
        **HTTP_GDAL_ENV,
        "GDAL_HTTP_TIMEOUT": f"{max(1, round(timeout))}",
        "GDAL_HTTP_CONNECTTIMEOUT": f"{max(1, round(min(timeout, 10)))}",
    }


def _remote(items: Sequence[dict[str, Any]]) -> bool:
    return any(
        str(a.get("href", "")).startswith(("http://", "https://", "s3://"))
        for i in items
        for a in i.get("assets", {}).values()
    )


def aligned_offset(vrt_params: dict[str, Any], ds) -> tuple[int, int] | None:
    """``(columns, rows)`` from the asset's pixel grid to the cube grid's origin where the grid
    (stackstac's ``vrt_params``: crs, transform) lies on the asset's own pixels (same CRS, same
    north-up pixel size, origin a whole number of pixels away); None otherwise.

    Example:
        >>> from types import SimpleNamespace
        >>> from affine import Affine
        >>> from rasterio.crs import CRS
        >>> ds = SimpleNamespace(crs=CRS.from_epsg(32632), transform=Affine(10, 0, 600000, 0, -10, 5300000))
        >>> grid = {"crs": 32632, "transform": Affine(10, 0, 600500, 0, -10, 5299000)}
        >>> aligned_offset(grid, ds)
        (50, 100)
        >>> aligned_offset({**grid, "transform": Affine(10, 0, 600505, 0, -10, 5299000)}, ds) is None
        True
    """
    t, g = ds.transform, vrt_params["transform"]
    if ds.crs is None or ds.crs.to_epsg() != vrt_params["crs"]:
        return None
    if (t.b, t.d, g.b, g.d) != (0, 0, 0, 0) or (t.a, t.e) != (g.a, g.e):
        return None
    dx, dy = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    return round(dx), round(dy)


class _AlignedWindows:
    """A stackstac dataset wrapper (no warped VRT) reading windows of the cube grid from the
    asset's own pixels, shifted by :func:`aligned_offset`; masked outside the asset, like the
    VRT's alpha band."""

    def __init__(self, inner, offset: tuple[int, int], size: tuple[int, int]) -> None:
        self.inner, self.offset, self.size = inner, offset, size
        self.scale_offset = inner.scale_offset

    def read(self, window, **kwargs) -> np.ma.MaskedArray:
        from rasterio.windows import Window

        (dx, dy), (width, height) = self.offset, self.size
        c0, r0 = int(window.col_off) + dx, int(window.row_off) + dy
        w, h = int(window.width), int(window.height)
        a0, b0 = max(c0, 0), max(r0, 0)
        a1, b1 = min(c0 + w, width), min(r0 + h, height)
        dtype = kwargs.get("out_dtype")
        out = np.ma.masked_all((1, h, w), dtype=dtype)
        if a1 > a0 and b1 > b0:
            part = self.inner.read(window=Window(a0, b0, a1 - a0, b1 - b0), **kwargs)
            out[:, b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = part
        return out

    def close(self) -> None:
        self.inner.close()


class RetryingReader(AutoParallelRioReader):
    """stackstac's reader that tries a failing open or window read of a remote asset again (at most
    :data:`READ_RETRIES` tries in all, 0.5 s doubling, reopening the asset), logging each retry.
    An HTTP status error is not retried here: GDAL has retried 429/5xx already
    (:data:`HTTP_GDAL_ENV`), and a missing or forbidden asset stays so.

    Where the cube grid lies on the asset's own pixels (:func:`aligned_offset`: a sub-area of a
    tile in its UTM zone at its resolution) windows are read from the asset directly, not
    through a warped VRT: the same pixels (nearest on an aligned grid copies them), cheaper.
    """

    def _open(self):
        dataset = super()._open()
        local = getattr(dataset, "_threadlocal", dataset)  # thread-local or single-threaded
        vrt, ds = getattr(local, "vrt", None), getattr(local, "ds", None)
        if vrt is None or ds is None:  # stackstac reads the asset directly (or a nodata reader)
            return dataset
        offset = aligned_offset(self.spec.vrt_params, ds)
        if offset is None:
            return dataset
        size = (ds.width, ds.height)
        if hasattr(dataset, "_vrt_params"):  # per-thread copies: open the asset, no VRT
            dataset._vrt_params = None
            dataset._threadlocal.vrt = None
        else:
            dataset.vrt = None
        vrt.close()
        return _AlignedWindows(dataset, offset, size)

    def read(self, window, **kwargs):
        for attempt in range(1, READ_RETRIES + 1):
            try:
                return super().read(window, **kwargs)
            except Exception as exc:
                text = f"{exc} {exc.__cause__ or ''}"
                remote = str(self.url).startswith(("http://", "https://", "s3://", "/vsi"))
                if not remote or attempt == READ_RETRIES or any(p in text for p in _PERMANENT):
                    raise
                wait = 0.5 * 2 ** (attempt - 1)
                log.warning(
                    "reading %s failed (%s); try %d of %d in %.1f s",
                    _redacted(self.url), _short(exc), attempt + 1, READ_RETRIES, wait,
                )  # fmt: skip
                # reopen, bypassing GDAL's cache of this file: GDAL keeps a response cut off
                # half-way in its /vsicurl/ cache and would fail again without a request
                self.close()
                self.gdal_env = self.gdal_env.updated(
                    always={"CPL_VSIL_CURL_NON_CACHED": f"/vsicurl/{self.url}"}
                )
                time.sleep(wait)
        raise AssertionError("unreachable")


class RetryingSigningReader(RetryingReader, SigningReader):
    """:class:`RetryingReader` for hrefs signed at open time (Planetary Computer)."""


def _short(exc: BaseException) -> str:
    from stac2cube.signing import redact

    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return redact(text)[:200]


def _redacted(url: str) -> str:
    return url.split("?")[0]


def stack_items(
    items: Sequence[dict[str, Any]],
    bands: Sequence[BandSpec],
    grid: Grid,
    *,
    dtype: str,
    resampling: str = "nearest",
    chunksize: int = 512,
    fill_value: float = 0,
    signer: Signer | None = None,
) -> xr.DataArray:
    """A lazy ``(item, band, y, x)`` array of raw values on ``grid``; ``fill_value`` where no
    asset covers a pixel."""
    import stackstac
    from rasterio.enums import Resampling

    canon = canonical_items(items, bands)
    names = [b.name for b in bands]
    dtype_ = np.dtype(dtype)
    fill = dtype_.type(fill_value)
    if not any(i["assets"] for i in canon):  # e.g. lwir11 when every item is L2SR
        return _filled(len(items), names, grid, dtype_, fill, chunksize)
    # positional ids: stackstac drops items (and bands) it finds no asset for; they are put
    # back below as fill, so the item axis always matches ``items``
    keys = [f"{k:06d}" for k in range(len(canon))]
    for key, item in zip(keys, canon, strict=True):
        item["id"] = key
    kwargs: dict[str, Any] = {"errors_as_nodata": ()}  # a missing asset fails (not 404 = nodata)
    if signer is not None:
        kwargs["reader"] = functools.partial(RetryingSigningReader, signer=signer)
    else:
        kwargs["reader"] = RetryingReader
    gdal_env = gdal_env_for(canon)
    if _remote(canon):
        from stackstac.rio_reader import DEFAULT_GDAL_ENV

        gdal_env = (gdal_env or DEFAULT_GDAL_ENV).updated(always=http_gdal_env())
    if gdal_env is not None:
        kwargs["gdal_env"] = gdal_env
    data = stackstac.stack(
        canon,
        assets=[b.name for b in bands],
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=grid.bounds,
        snap_bounds=False,
        xy_coords="center",
        rescale=False,
        dtype=dtype_,
        fill_value=fill,
        resampling=Resampling[resampling],
        chunksize=chunksize,
        properties=False,
        band_coords=False,
        sortby_date=False,
        **kwargs,
    )
    kept = [str(v) for v in data["id"].values]
    data = data.drop_vars([c for c in data.coords if c not in ("band", "y", "x")])
    data = data.rename(time="item").assign_coords(item=kept)
    if kept != keys or [str(b) for b in data.band.values] != names:
        data = data.reindex(item=keys, band=names, fill_value=fill)
    data.attrs = {}  # stackstac's RasterSpec etc.: the cube records its own grid
    # stackstac's centres are computed in float; pin them to the grid's exact values
    return data.assign_coords(item=np.arange(len(items)), x=grid.x, y=grid.y)


def _filled(n_items: int, names: list[str], grid: Grid, dtype, fill, chunksize: int):
    """A lazy ``(item, band, y, x)`` array holding only ``fill``."""
    import dask.array as da

    chunks = (1, 1, min(chunksize, grid.height), min(chunksize, grid.width))
    data = da.full((n_items, len(names), grid.height, grid.width), fill, dtype=dtype, chunks=chunks)
    return xr.DataArray(
        data,
        dims=("item", "band", "y", "x"),
        coords={"item": np.arange(n_items), "band": names, "y": grid.y, "x": grid.x},
    )


def load_raw(
    request: CubeRequest,
    items: Sequence[dict[str, Any]],
    chunksize: int = 512,
    *,
    options: ProcessingOptions | None = None,
    signer: Signer | None = None,
    subscription_key: str | None = None,
) -> dict[str, xr.DataArray]:
    """Raw stacks of ``items`` for the request's bands, one array per band kind.

    Args:
        request: the validated request (grid, bands, resampling, catalog).
        items: the items of the time steps to load, in step order.
        chunksize: dask chunk size in pixels.
        options: processing options (cloud masking adds the QA band).
        signer: signs hrefs at read time; default: Planetary Computer signing where the
            catalog or the hrefs need it (see :func:`stac2cube.signing.make_signer`).
        subscription_key: Planetary Computer key for the default signer (else the
            environment's); never logged.

    Returns:
        ``{kind: (item, band, y, x) DataArray}``, e.g. ``{"reflectance": uint16,
        "classification": uint8}`` for Sentinel-2 L2A; each key present only when the request
        has bands of that kind.
    """
    if signer is None:
        signer = make_signer(request.catalog, items, key=subscription_key)
    out = {}
    for group in load_groups(request, options):
        out[group.kind] = stack_items(
            items,
            group.bands,
            request.grid,
            dtype=group.dtype,
            resampling=group.resampling,
            chunksize=chunksize,
            fill_value=group.fill_value,
            signer=signer,
        )
    return out
