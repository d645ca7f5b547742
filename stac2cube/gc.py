"""Housekeeping: expire old snapshots of a cube and delete what no snapshot needs any more.

``stac2cube gc PATH --keep-days N`` (under the cube's write lock, so no stac2cube run of this
machine writes meanwhile):

1. removes staging directories of first builds whose process is gone (``.NAME.partial-PID``);
2. expires the snapshots older than ``N`` days (icechunk ``Repository.expire_snapshots``): they
   leave the history; the head of ``main`` and every tag (``before-rollback-...``) stay, with
   everything they reference;
3. garbage-collects (icechunk ``Repository.garbage_collect``) every chunk, manifest, snapshot
   and transaction log no branch or tag reaches: the expired snapshots' data and the chunks of
   runs killed before their commit.

The store's size on disk before and after is reported. ``N = 0`` keeps only the head and the
tags.

Example:
    >>> from stac2cube.gc import collect_garbage
    >>> collect_garbage("munich.icechunk", keep_days=30)["bytes_after"]  # doctest: +SKIP
    1234567
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from stac2cube.cube import Cube, as_cube
from stac2cube.errors import StoreError


def store_size(path: str | Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def collect_garbage(
    store: str | Path | Cube, *, keep_days: float = 30.0, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Expire snapshots older than ``keep_days`` and delete unreachable objects (module docs).

    Returns:
        ``store``, ``head``, ``tags``, ``expired_snapshots``, the icechunk GC counts
        (``chunks_deleted``, ``manifests_deleted``, ``snapshots_deleted``,
        ``transaction_logs_deleted``, ``bytes_deleted``), ``staging_removed`` and
        ``bytes_before``/``bytes_after`` (the store's files).

    Raises:
        StoreError: no cube there, another run holds the lock, or ``keep_days`` < 0.
    """
    if keep_days < 0:
        raise StoreError(f"--keep-days must be >= 0, not {keep_days:g}")
    cube = as_cube(store)
    now = now or dt.datetime.now(dt.UTC)
    with cube.lock():
        cube.require()
        staging = list(cube.path.parent.glob(f".{cube.path.name}.partial-*"))
        cube._remove_stale_staging()
        staging_removed = sum(not p.exists() for p in staging)
        repo = cube.repository()
        head = repo.lookup_branch("main")
        tags = {t: repo.lookup_tag(t) for t in repo.list_tags()}
        before = store_size(cube.path)
        expired = repo.expire_snapshots(now - dt.timedelta(days=keep_days))
        # under the lock nothing of ours is being written: every unreachable object can go
        summary = repo.garbage_collect(now)
        if (
            repo.lookup_branch("main") != head
            or {t: repo.lookup_tag(t) for t in repo.list_tags()} != tags
        ):  # pragma: no cover (icechunk guarantees it; checked to be sure)
            raise StoreError(f"gc of {cube.name} moved the head or a tag; please report this")
        after = store_size(cube.path)
    return {
        "store": cube.name,
        "head": head,
        "tags": sorted(tags),
        "expired_snapshots": len(expired),
        "chunks_deleted": summary.chunks_deleted,
        "manifests_deleted": summary.manifests_deleted,
        "snapshots_deleted": summary.snapshots_deleted,
        "transaction_logs_deleted": summary.transaction_logs_deleted,
        "bytes_deleted": summary.bytes_deleted,
        "staging_removed": staging_removed,
        "bytes_before": before,
        "bytes_after": after,
    }


def describe(result: dict[str, Any]) -> str:
    """The ``stac2cube gc`` report: one line of counts, one of sizes."""

    def mb(n: int) -> str:
        return f"{n / 1e6:.2f} MB"

    return (
        f"{result['store']}: expired {result['expired_snapshots']} snapshots; deleted "
        f"{result['chunks_deleted']} chunks, {result['manifests_deleted']} manifests, "
        f"{result['snapshots_deleted']} snapshots, {result['transaction_logs_deleted']} "
        f"transaction logs, {result['staging_removed']} staging directories; head "
        f"{result['head']} and {len(result['tags'])} tags kept\n"
        f"size: {mb(result['bytes_before'])} before, {mb(result['bytes_after'])} after"
    )
