"""Mosaic stage: the scenes of a time step become one layer, in the step's order.

The first scene with a valid pixel provides it. Masking happens per item before the mosaic (see
:mod:`stac2cube.masks`), so a cloud in the first scene lets the next scene show through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import xarray as xr

if TYPE_CHECKING:
    from stac2cube.steps import TimeStep


def step_positions(steps: Sequence[TimeStep]) -> list[list[int]]:
    """The positions along ``item`` of each step's items, the items stacked in step order."""
    positions, k = [], 0
    for step in steps:
        positions.append(list(range(k, k + len(step.items))))
        k += len(step.items)
    return positions


def mosaic_first_valid(
    data: xr.DataArray,
    steps: Sequence[Sequence[int]],
    *,
    nodata: float | int | None = None,
    valid: xr.DataArray | None = None,
) -> xr.DataArray:
    """Combine the items of each step (positions along ``item``): first valid value wins.

    Valid means not NaN (``nodata=None``) or not equal to ``nodata``; with ``valid`` (a boolean
    ``(item, ...)`` array) an item's pixel counts only where ``valid`` is true as well, and
    where no item is valid the first value that is not nodata is kept (so a classification
    layer shows why a masked pixel is empty).
    """

    def present(pos: int) -> xr.DataArray:
        layer = data.isel(item=pos)
        return layer.notnull() if nodata is None else layer != nodata

    out = []
    for positions in steps:
        acc = data.isel(item=positions[0])
        have = present(positions[0])
        if valid is not None:
            have = have & valid.isel(item=positions[0])
        for pos in positions[1:]:
            cand = present(pos) if valid is None else present(pos) & valid.isel(item=pos)
            take = ~have & cand
            acc = xr.where(take, data.isel(item=pos), acc, keep_attrs=True)
            have = have | cand
        if valid is not None:
            fallback = mosaic_first_valid(data, [positions], nodata=nodata).isel(time=0)
            acc = xr.where(have, acc, fallback, keep_attrs=True)
        out.append(acc.drop_vars("item", errors="ignore").astype(data.dtype))
    return xr.concat(out, dim="time", coords="minimal", join="exact")
