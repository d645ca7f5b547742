"""Broken assets read as nodata, by choice (``errors_as_nodata``), and filled in later.

By default an asset that cannot be read (corrupt, truncated, missing: HTTP 404) fails the run,
naming its item and asset, and the store is left as it was. With ``errors_as_nodata`` on, the
run records such an asset instead, reads it as the fill value (stackstac leaves a pixel no
asset covers at the fill value) and completes:

* the write stage names the failing item and asset
  (:class:`~stac2cube.errors.AssetReadError`); the run is then written again from the start,
  in a fresh session, with that asset marked (:func:`without_broken`), so the load skips it.
  Which asset failed is known exactly, with the reader's reason, on any Dask cluster; a
  header probe would miss a truncated COG (its header reads fine). The cost: one more pass of
  the run's reads per broken asset, paid only when an asset is broken;
* the ledger entry of each step lists them (:func:`note_broken`): ``broken_assets``, a list of
  ``{"item", "asset", "reason"}``;
* a later build or update that finds the step in its search probes each listed asset over the
  cube's area (:func:`asset_problem`); a step with an asset that reads again is replaced
  (:func:`refill_keys`, the mechanism of a reprocessed scene), which clears its list; a step
  whose assets are all still broken stays as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stac2cube.steps import TimeStep

#: marks an asset (in a copy of its item) that the load skips: read as the fill value
BROKEN = "stac2cube:broken"

#: ``(item id, asset key) -> reason``
Broken = Mapping[tuple[str, str], str]


def without_broken(items: Sequence[dict[str, Any]], broken: Broken) -> list[dict[str, Any]]:
    """``items``, with copies of those holding a ``broken`` asset that mark it (:data:`BROKEN`).

    >>> items = [{"id": "a", "assets": {"red": {"href": "a.tif"}}}]
    >>> without_broken(items, {("a", "red"): "RasterioIOError: Read failed"})[0]["assets"]
    {'red': {'href': 'a.tif', 'stac2cube:broken': 'RasterioIOError: Read failed'}}
    """
    if not broken:
        return list(items)
    out = []
    for item in items:
        keys = [k for k in item.get("assets", {}) if (item["id"], k) in broken]
        if keys:
            item = copy.deepcopy(item)
            for key in keys:
                item["assets"][key][BROKEN] = broken[(item["id"], key)]
        out.append(item)
    return out


def note_broken(entries: Sequence[dict[str, Any]], steps: Sequence[TimeStep], broken: Broken):
    """List the ``broken`` assets of each step in its ledger entry (``broken_assets``; in
    place, only where a step has some)."""
    for entry, step in zip(entries, steps, strict=True):
        found = [
            {"item": item["id"], "asset": key, "reason": broken[(item["id"], key)]}
            for item in step.items
            for key in item.get("assets", {})
            if (item["id"], key) in broken
        ]
        if found:
            entry["broken_assets"] = found


def broken_list(broken: Broken) -> list[dict[str, str]]:
    """JSON-ready ``broken`` for the run's summary."""
    return [{"item": i, "asset": a, "reason": r} for (i, a), r in sorted(broken.items())]


def refill_keys(
    steps: Sequence[TimeStep],
    ledger: Iterable[Mapping[str, Any]],
    problem: Callable[[str], str | None],
    log: Callable[..., None] | None = None,
) -> set[str]:
    """Keys of the ``steps`` whose ledger entry lists a broken asset that ``problem(href)``
    (None: readable) now reads: to be written again.

    Only assets of steps in ``steps`` (the run's search) are probed; an asset the catalog no
    longer offers counts as still broken.
    """
    from stac2cube.plan import ledger_key

    listed = {ledger_key(e): e["broken_assets"] for e in ledger if e.get("broken_assets")}
    out = set()
    for step in steps:
        if step.key not in listed:
            continue
        items = {i["id"]: i for i in step.items}
        for record in listed[step.key]:
            asset = items.get(record["item"], {}).get("assets", {}).get(record["asset"])
            reason = "not in the catalog" if asset is None else problem(asset["href"])
            if log is not None:
                log(step.key, record, reason)
            if reason is None:
                out.add(step.key)
                break
    return out


def asset_problem(
    href: str,
    area: tuple[int, tuple[float, float, float, float]] | None = None,
    *,
    signer: Callable[[str], str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """None when the asset at ``href`` opens and its pixels over ``area`` (``(epsg, bounds)``,
    default: all) read; else the reason, one line.

    Reads in strips of 1024 rows, so memory stays small; a truncated COG fails here (its
    header alone reads fine).
    """
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    path = href.removeprefix("file://")
    if signer is not None:
        path = signer(path)
    try:
        with rasterio.Env(**dict(env or {})), rasterio.open(path) as src:
            full = Window(0, 0, src.width, src.height)
            window = full
            if area is not None and src.crs is not None:
                epsg, bounds = area
                box = transform_bounds(f"EPSG:{epsg}", src.crs, *bounds)
                window = from_bounds(*box, transform=src.transform)
                window = window.round_offsets("floor").round_lengths("ceil")
                try:
                    window = window.intersection(full)
                except Exception:  # the area misses the asset: nothing of it is read
                    return None
            row, end = int(window.row_off), int(window.row_off + window.height)
            while row < end:
                rows = min(1024, end - row)
                src.read(window=Window(window.col_off, row, window.width, rows))
                row += rows
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0].replace(f"{path}: ", "")
        return f"{type(exc).__name__}: {text}"[:300]
    return None
