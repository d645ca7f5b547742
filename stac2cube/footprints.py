"""The footprint map: every catalog's scene footprints drawn over the area (a PNG).

The drawing half of the availability check (:mod:`stac2cube.availability` searches and
tabulates); it needs only item dicts and the area, so any list of STAC items can be drawn.
matplotlib is imported when a map is drawn, not with this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stac2cube.errors import InvalidRequestError
from stac2cube.items import item_footprint

__all__ = ["footprint_map"]

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_LINESTYLES = ("-", "--", "-.", ":")


def _as_shape(area: Any):
    from shapely.geometry import box, shape
    from shapely.geometry.base import BaseGeometry

    if isinstance(area, BaseGeometry):
        return area
    if isinstance(area, Mapping):
        if area.get("type") == "Feature":
            return shape(area["geometry"])
        return shape(area)
    values = [float(v) for v in area]
    if len(values) != 4:
        raise InvalidRequestError(f"area must be GeoJSON or a bbox W S E N, got {area!r}")
    return box(*values)


def _rings(geom) -> list[Any]:
    """Exterior rings of a (multi)polygon, or the boundary parts of anything else."""
    parts = getattr(geom, "geoms", [geom])
    out = []
    for part in parts:
        if part.geom_type == "Polygon":
            out.append(part.exterior)
        elif hasattr(part, "geoms"):
            out.extend(_rings(part))
    return out


def footprint_map(
    items_by_catalog: Mapping[str, Sequence[Mapping[str, Any]]],
    aoi_geometry: Mapping[str, Any] | Sequence[float] | Any,
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Write a PNG of the scene footprints of each catalog over the area's outline.

    Every catalog has its own colour and line style (identical footprints of two catalogs stay
    visible); a footprint served several times (one tile on many days) is drawn once. The
    legend, below the map, gives each catalog's number of scenes (after de-duplication, as in
    the table) and of distinct footprints.

    Args:
        items_by_catalog: ``{catalog label: items}`` (:attr:`~stac2cube.availability.AvailabilitySearch.items_by_catalog`).
        aoi_geometry: The area: GeoJSON geometry or Feature, a shapely geometry or a bbox.
        path: Where to write the PNG (folders are created).
        title: Figure title (default: the number of scenes and catalogs).
        dpi: Resolution of the PNG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from stac2cube.steps import deduplicate

    aoi = _as_shape(aoi_geometry)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(8, 7), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles: list[Any] = []
    bounds = list(aoi.bounds)
    total = 0
    for k, (label, served) in enumerate(items_by_catalog.items()):
        items, dropped = deduplicate([dict(i) for i in served])
        colour = _COLOURS[k % len(_COLOURS)]
        style = _LINESTYLES[k % len(_LINESTYLES)]
        unique: dict[bytes, Any] = {}
        for item in items:
            geom = item_footprint(item)
            if geom is not None and not geom.is_empty:
                unique.setdefault(geom.normalize().wkb, geom)
        for geom in unique.values():
            for ring in _rings(geom):
                xs, ys = ring.xy
                ax.fill(xs, ys, color=colour, alpha=0.08, linewidth=0)
                ax.plot(xs, ys, color=colour, linestyle=style, linewidth=1.2)
            b = geom.bounds
            bounds = [*map(min, bounds[:2], b[:2]), *map(max, bounds[2:], b[2:])]
        total += len(items)
        text = f"{label}: {len(items)} scenes, {len(unique)} distinct footprints"
        if dropped:
            text += f" (+{len(dropped)} older processing{'s' if len(dropped) > 1 else ''})"
        handles.append(
            Patch(facecolor=colour, edgecolor=colour, alpha=0.6, linestyle=style, label=text)
        )
    for ring in _rings(aoi):
        xs, ys = ring.xy
        ax.plot(xs, ys, color="black", linewidth=2.2)
    handles.append(Line2D([], [], color="black", linewidth=2.2, label="area of interest"))

    west, south, east, north = bounds
    pad_x = (east - west) * 0.05 or 0.01
    pad_y = (north - south) * 0.05 or 0.01
    ax.set_xlim(west - pad_x, east + pad_x)
    ax.set_ylim(south - pad_y, north + pad_y)
    mid = max(-89.0, min(89.0, (south + north) / 2))
    ax.set_aspect(1 / math.cos(math.radians(mid)))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    fig.legend(handles=handles, loc="outside lower center", fontsize="small", frameon=False)
    n_cat = len(items_by_catalog)
    ax.set_title(
        title
        or f"{total} scenes from {n_cat} {'catalog' if n_cat == 1 else 'catalogs'}, "
        "footprints against the area"
    )
    fig.savefig(out, dpi=dpi, format="png")
    return out
