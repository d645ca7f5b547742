"""Per-step metadata: the coordinates along ``time`` that describe each step's scenes.

Per time step, besides ``n_scenes``, ``item_ids``, ``radiometry_rule`` and ``processing_baseline``
(:func:`step_coords`), these coordinates describe the scenes (several scenes of a step:
comma-joined distinct strings, means of numbers; NaN or empty where the items do not say):

======================  ======================================================================
``datetimes``           acquisition datetimes (UTC, ISO) of the step's scenes
``platform``            ``sentinel-2a``, ``landsat-9``, ...
``relative_orbit``      ``sat:relative_orbit``; Sentinel-2 ``R065`` of the product name;
                        Landsat WRS-2 path
``orbit_state``         ``ascending``/``descending`` (``sat:orbit_state``, Sentinel-1)
``sun_elevation``       degrees (``view:sun_elevation``, or 90 - ``s2:mean_solar_zenith``)
``sun_azimuth``         degrees (``view:sun_azimuth`` or ``s2:mean_solar_azimuth``)
``view_angle``          degrees (``view:incidence_angle``, else ``view:off_nadir``)
``eo_cloud_cover``      the catalog's whole-scene cloud cover, percent
``valid_fraction``      share of the area's pixels (inside the AOI polygon, else the grid)
                        where the step has data (first requested band)
``cloud_fraction``      share of those valid pixels the QA layer flags as cloud (SCL classes
                        or QA_PIXEL flags of the processing options); NaN where the QA
                        band is not read (see ``bands_to_load``).
                        With cloud masking, masked pixels are not valid, so this is what
                        the mask left
``tile``                the step's tile (``tile_mode="separate"`` only; always there then)
======================  ======================================================================

``valid_fraction`` and ``cloud_fraction`` (:func:`stac2cube.masks.step_fractions`) are lazy:
written with the pixels, or computed first when a coverage or scene-cloud filter needs them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stac2cube.items import item_datetime

if TYPE_CHECKING:
    from stac2cube.radiometry import Radiometry
    from stac2cube.steps import TimeStep


def _joined(values: Iterable[Any]) -> str:
    return ",".join(dict.fromkeys("" if v is None else str(v) for v in values))


def step_coords(
    steps: Sequence[TimeStep], radiometry: Sequence[Sequence[Radiometry]]
) -> dict[str, tuple[str, np.ndarray]]:
    """``n_scenes``, ``item_ids``, ``radiometry_rule`` and ``processing_baseline`` of each step
    (``radiometry``: the decisions of each step's items)."""
    return {
        "n_scenes": ("time", np.array([len(s.items) for s in steps], "int16")),
        "item_ids": ("time", np.array([_joined(s.item_ids) for s in steps], object)),
        "radiometry_rule": (
            "time",
            np.array([_joined(r.rule for r in sr) for sr in radiometry], object),
        ),
        "processing_baseline": (
            "time",
            np.array([_joined(r.baseline for r in sr) for sr in radiometry], object),
        ),
    }


_ORBIT_IN_NAME = re.compile(r"_R(\d{3})_")


def relative_orbit(item: dict[str, Any]) -> str | None:
    """Relative orbit (track) of an item: ``sat:relative_orbit``, the ``R065`` of a Sentinel-2
    product name, or the WRS-2 path of Landsat."""
    props = item.get("properties", {})
    if props.get("sat:relative_orbit") is not None:
        return str(int(props["sat:relative_orbit"]))
    if props.get("landsat:wrs_path") is not None:
        return str(int(props["landsat:wrs_path"]))
    for text in (props.get("s2:product_uri"), props.get("s2:granule_id"), item.get("id")):
        match = _ORBIT_IN_NAME.search(text or "")
        if match:
            return str(int(match.group(1)))
    return None


def _angles(item: dict[str, Any]) -> tuple[float, float, float]:
    """(sun elevation, sun azimuth, view angle) in degrees from ``view:`` or ``s2:`` fields."""
    p = item.get("properties", {})

    def num(*keys: str) -> float:
        for key in keys:
            if p.get(key) is not None:
                return float(p[key])
        return math.nan

    elevation = num("view:sun_elevation")
    if math.isnan(elevation) and p.get("s2:mean_solar_zenith") is not None:
        elevation = 90.0 - float(p["s2:mean_solar_zenith"])
    azimuth = num("view:sun_azimuth", "s2:mean_solar_azimuth")
    view = num("view:incidence_angle", "view:off_nadir")
    return elevation, azimuth, view


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def scene_coords(
    steps: Sequence[TimeStep], *, tiles: bool = False
) -> dict[str, tuple[str, np.ndarray]]:
    """Per-step scene metadata coordinates (see the module docs) from the items' properties.

    ``tile`` is added when ``tiles`` (a ``tile_mode="separate"`` cube: every batch written to
    it must have the same coordinates) or when some step has a tile.
    """

    def joined(fn) -> np.ndarray:
        return np.array([_joined(fn(i) for i in s.items) for s in steps], object)

    def mean(fn) -> np.ndarray:
        return np.array([_mean([fn(i) for i in s.items]) for s in steps], "float32")

    def prop(key: str):
        return lambda i: i.get("properties", {}).get(key)

    cloud = prop("eo:cloud_cover")
    out = {
        "datetimes": joined(lambda i: item_datetime(i).isoformat()),
        "platform": joined(lambda i: (prop("platform")(i) or "").lower() or None),
        "relative_orbit": joined(relative_orbit),
        "orbit_state": joined(prop("sat:orbit_state")),
        "sun_elevation": mean(lambda i: _angles(i)[0]),
        "sun_azimuth": mean(lambda i: _angles(i)[1]),
        "view_angle": mean(lambda i: _angles(i)[2]),
        "eo_cloud_cover": mean(lambda i: math.nan if cloud(i) is None else float(cloud(i))),
    }
    if tiles or any(s.tile is not None for s in steps):
        out["tile"] = np.array([s.tile or "" for s in steps], object)
    return {name: ("time", values) for name, values in out.items()}
