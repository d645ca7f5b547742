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
* a later build or update that finds the step in its search reads each listed asset again over
  the cube's grid (:func:`asset_problem`); a step with an asset that reads again is replaced
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


def holds_broken(step: TimeStep, broken: Broken) -> bool:
    """Whether an asset of ``step`` is in ``broken`` (such a step the coverage or cloud filters
    drop is not recorded as rejected: the next run reads it again)."""
    return any((i["id"], k) in broken for i in step.items for k in i.get("assets", {}))


def broken_list(broken: Broken) -> list[dict[str, str]]:
    """JSON-ready ``broken`` for the run's summary."""
    return [{"item": i, "asset": a, "reason": r} for (i, a), r in sorted(broken.items())]


def refill_keys(
    steps: Sequence[TimeStep],
    ledger: Iterable[Mapping[str, Any]],
    problem: Callable[[dict[str, Any], str], str | None],
    log: Callable[..., None] | None = None,
) -> set[str]:
    """Keys of the ``steps`` whose ledger entry lists a broken asset that now reads
    (``problem(item, asset key)`` is None): to be written again.

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
            item = items.get(record["item"])
            if item is None or record["asset"] not in item.get("assets", {}):
                reason = "not in the catalog"
            else:
                reason = problem(item, record["asset"])
            if log is not None:
                log(step.key, record, reason)
            if reason is None:
                out.add(step.key)
                break
    return out


def asset_problem(
    request: Any, item: dict[str, Any], asset: str, *, signer: Callable[[str], str] | None = None
) -> str | None:
    """None when asset ``asset`` of ``item`` reads over the cube's grid, else the reason (one
    line).

    It is read the way a build reads it (:func:`stac2cube.load.stack_items`: the same reader,
    signing, GDAL options and retries, the cube's window), so a truncated COG fails here too
    (its header alone reads fine). An asset no band of ``request`` uses counts as readable.
    """
    from stac2cube.load import load_groups, stack_items
    from stac2cube.missions import find_asset

    for group in load_groups(request):
        for band in group.bands:
            if find_asset(item, band) != asset:
                continue
            data = stack_items(
                [item], [band], request.grid, dtype=group.dtype, resampling=group.resampling,
                fill_value=group.fill_value, signer=signer,
            )  # fmt: skip
            try:
                data.compute(scheduler="threads")
            except Exception as exc:
                return _reason(exc)
    return None


def _reason(exc: BaseException) -> str:
    """The innermost error of ``exc``'s chain, ``Type: first line``."""
    seen = set()
    while id(exc) not in seen and (exc.__cause__ or exc.__context__) is not None:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]
