"""Write stage: compute the lazy time steps into an icechunk session, then commit once
(through the run's :class:`~stac2cube.cube.Cube`).

Pixels are read here (dask computes while writing). A read failure is reported naming the item
and asset; nothing is committed, so the cube stays at its previous snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import xarray as xr
from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.cube import Cube
from stac2cube.errors import AssetReadError, ReadError
from stac2cube.spec import DEFAULT_BATCH_SIZE
from stac2cube.store import rewrite_time_steps, write_time_steps

#: an exception's repr without quotes inside its message: ``RasterioIOError('...')``
_REPR = re.compile(r"(\w+(?:Error|Exception))\((['\"])([^'\"]*)\2\)")
_HREF = re.compile(r"(?:file|https?|s3)://[^\s'\"]+|/[^\s'\"]+\.(?:tif|tiff|jp2)")


def describe_read_error(exc: BaseException, assets: dict[str, tuple[str, str]]) -> str:
    """Name the item and asset behind a read failure, given ``href -> (item id, band)``."""
    return str(read_error(exc, assets))


def read_error(exc: BaseException, assets: dict[str, tuple[str, str]]) -> ReadError:
    """The :class:`ReadError` of a read failure: an :class:`AssetReadError` (item id, asset
    key, reason) when the failure names one of ``assets`` (``href -> (item id, band)``)."""
    text = " ".join(str(e) for e in _chain(exc))
    for href, (item_id, band) in assets.items():
        path = href.removeprefix("file://")
        if href in text or path in text:
            reason = _first_line(exc).replace(f"{path}: ", "")  # the href is named already
            message = f"cannot read item {item_id} asset {band} ({href}): {reason}"
            return AssetReadError(message, item_id, band, reason)
    hrefs = _HREF.findall(text)
    where = f" ({hrefs[0]})" if hrefs else ""
    return ReadError(f"cannot read an asset{where}: {_first_line(exc)}")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    """The reader's reason: the innermost error of the chain, as ``Type: message``.

    A Dask worker's exception that could not be unpickled arrives as its repr inside a plain
    ``Exception``; the innermost ``SomeError('...')`` in that text is the reason.

    >>> _first_line(Exception("RuntimeError(opening a.tif: RasterioIOError('a.tif: bad'))"))
    'RasterioIOError: a.tif: bad'
    """
    root = list(_chain(exc))[-1]
    text = (str(root).strip().splitlines() or [""])[0]
    inner = _REPR.findall(text)
    if inner:
        name, _, message = inner[-1]
        return f"{name}: {message}"[:400]
    return f"{type(root).__name__}: {text}"[:400]


def asset_index(items: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """``href -> (item id, asset key)`` for every asset of ``items``."""
    return {a["href"]: (i["id"], key) for i in items for key, a in i.get("assets", {}).items()}


def write_batch(
    session,
    ds: xr.Dataset,
    *,
    first: bool,
    items: Sequence[dict[str, Any]],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> None:
    """Compute ``ds`` into ``session``; a read failure becomes :class:`ReadError`."""
    with naming_read_errors(items):
        write_time_steps(session, ds, first=first, batch_size=batch_size)


@contextmanager
def naming_read_errors(items: Sequence[dict[str, Any]]):
    """Turn a failure to read an asset of ``items`` into a :class:`ReadError` naming it."""
    try:
        yield
    except ReadError:
        raise
    except Exception as exc:
        if _looks_like_read_error(exc):
            raise read_error(exc, asset_index(items)) from exc
        raise


def _looks_like_read_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return bool(names & {"RasterioIOError", "CPLE_OpenFailedError", "CPLE_AppDefinedError"}) or (
        "error opening" in text
        or "error reading" in text
        or "not recognized as" in text
        or ("tiff" in text and "error" in text)
    )


@task(name="write", cache_policy=NO_CACHE)
def write_task(
    session,
    ds: xr.Dataset,
    first: bool,
    items: list[dict[str, Any]],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Prefect task: :func:`write_batch`; returns the number of time steps written."""
    write_batch(session, ds, first=first, items=items, batch_size=batch_size)
    return int(ds.sizes["time"])


@task(name="rewrite", cache_policy=NO_CACHE)
def rewrite_task(
    session,
    base: xr.Dataset,
    new: xr.Dataset,
    replaced_times: dict[str, str],
    items: list[dict[str, Any]],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Prefect task: :func:`~stac2cube.store.rewrite_time_steps` (inserts and replacements)."""
    with naming_read_errors(items):
        return rewrite_time_steps(session, base, new, replaced_times, batch_size=batch_size)


@task(name="commit", cache_policy=NO_CACHE)
def commit_task(
    cube: Cube,
    session,
    record: dict[str, Any],
    ledger: list[dict[str, Any]],
    version: str,
    message: str,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Prefect task: :meth:`Cube.commit` (record and ledger stored, one commit); returns the
    snapshot id."""
    return cube.commit(
        session, message, record=record, ledger=ledger, version=version, metadata=metadata
    )
