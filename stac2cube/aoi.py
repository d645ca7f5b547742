"""Areas of interest: bboxes, GeoJSON and vector files (GeoJSON, GeoPackage, Shapefile, KML).

Everything becomes WGS 84 GeoJSON polygons. A file or FeatureCollection with several features
can be read either as one area (their union, :func:`load_aoi`) or as one area per feature
(:func:`read_features`, for one cube per feature). :func:`polygon_mask` rasterises an area on a
cube's grid (for clipping, and for coverage and cloud fractions inside the polygon).

Example:
    >>> square = {"type": "Polygon", "coordinates": [[[11, 48], [11.1, 48], [11.1, 48.1],
    ...           [11, 48.1], [11, 48]]]}
    >>> [f.name for f in read_features({"type": "FeatureCollection", "features": [
    ...     {"type": "Feature", "properties": {"field": "a"}, "geometry": square}]},
    ...     name_field="field")]
    ['a']
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stac2cube.errors import InvalidRequestError
from stac2cube.grid import Grid

#: file suffixes read with GDAL/OGR (pyogrio); ``.json``/``.geojson`` are read as GeoJSON text
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".kml", ".zip")
POLYGON_TYPES = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class AoiFeature:
    """One area of a vector file: a safe name and its WGS 84 GeoJSON polygon."""

    name: str
    geometry: dict[str, Any]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        from shapely.geometry import shape

        return tuple(float(v) for v in shape(self.geometry).bounds)  # type: ignore[return-value]


def safe_name(value: Any) -> str:
    """A file-name-safe version of a feature's name (letters, digits, ``-``, ``_``, ``.``).

    >>> safe_name("Lake Constance / west")
    'Lake_Constance_west'
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("._")
    return text or "aoi"


def _features_from_mapping(aoi: Mapping[str, Any]) -> list[tuple[dict | None, dict]]:
    """``(geometry, properties)`` of a GeoJSON geometry, Feature or FeatureCollection."""
    kind = aoi.get("type")
    if kind == "FeatureCollection":
        return [(f.get("geometry"), f.get("properties") or {}) for f in aoi.get("features", [])]
    if kind == "Feature":
        return [(aoi.get("geometry"), aoi.get("properties") or {})]
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString", *POLYGON_TYPES):
        return [(dict(aoi), {})]
    raise InvalidRequestError(
        f"AOI must be a GeoJSON Polygon, Feature or FeatureCollection, got {kind!r}"
    )


def _features_from_file(path: Path) -> list[tuple[dict | None, dict]]:
    """``(geometry, properties)`` of every feature of a vector file, reprojected to WGS 84."""
    if not path.is_file():
        raise InvalidRequestError(f"AOI file not found: {path}")
    if path.suffix.lower() in (".json", ".geojson"):
        try:
            return _features_from_mapping(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"AOI file {path} is not GeoJSON: {exc}") from None
    try:
        import pyogrio
        from shapely.geometry import mapping

        frame = pyogrio.read_dataframe(path)
    except Exception as exc:
        raise InvalidRequestError(f"cannot read AOI file {path}: {exc}") from None
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    out = []
    for row in frame.itertuples(index=False):
        geom = getattr(row, frame.geometry.name)
        props = {c: getattr(row, c) for c in columns}
        out.append((None if geom is None else mapping(geom), props))
    return out


def _raw_features(aoi: str | Path | Mapping[str, Any]) -> list[tuple[dict | None, dict]]:
    if isinstance(aoi, str | Path):
        text = str(aoi).lstrip()
        if text.startswith("{"):  # GeoJSON text (a settings file or a Prefect form)
            try:
                return _features_from_mapping(json.loads(text))
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"AOI text is not GeoJSON: {exc}") from None
        return _features_from_file(Path(aoi))
    if isinstance(aoi, Mapping):
        return _features_from_mapping(aoi)
    raise InvalidRequestError(f"AOI must be GeoJSON or a vector file path, got {type(aoi)}")


def _polygon(geometry: dict | None, where: str) -> dict[str, Any]:
    """A valid WGS 84 polygon geometry, or a clear error naming ``where``."""
    from shapely.geometry import mapping, shape
    from shapely.validation import make_valid

    if geometry is None:
        raise InvalidRequestError(f"{where} has no geometry")
    try:
        geom = shape(geometry)
    except Exception as exc:
        raise InvalidRequestError(f"{where}: invalid geometry ({exc})") from None
    if geom.geom_type not in POLYGON_TYPES:
        raise InvalidRequestError(
            f"{where} is a {geom.geom_type}; AOIs must be polygons (buffer points and lines first)"
        )
    if not geom.is_valid:
        geom = make_valid(geom)
    if geom.is_empty or geom.area == 0:
        raise InvalidRequestError(f"{where} is an empty polygon")
    w, s, e, n = geom.bounds
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise InvalidRequestError(
            f"{where} is not in WGS 84 degrees (bounds {[w, s, e, n]}); give the file a CRS"
        )
    return mapping(geom)


def read_features(
    aoi: str | Path | Mapping[str, Any], name_field: str | None = None
) -> list[AoiFeature]:
    """Every polygon feature of a vector file or GeoJSON object, named for one cube each.

    Args:
        aoi: a GeoJSON dict (geometry, Feature, FeatureCollection), GeoJSON text, or the path
            of a vector file GDAL reads (GeoJSON, GeoPackage, Shapefile, KML).
        name_field: attribute whose value names each feature; default: its index
            (``feature-000``, ``feature-001``, ...).

    Raises:
        InvalidRequestError: no features, a feature that is not a polygon, a missing
            ``name_field``, or two features with the same name.
    """
    raw = _raw_features(aoi)
    if not raw:
        raise InvalidRequestError(f"AOI {_label(aoi)} has no features")
    out: list[AoiFeature] = []
    for k, (geometry, props) in enumerate(raw):
        where = f"AOI feature {k} of {_label(aoi)}"
        if name_field is None:
            name = f"feature-{k:03d}"
        else:
            if name_field not in props:
                fields = ", ".join(sorted(props)) or "none"
                raise InvalidRequestError(
                    f"AOI {_label(aoi)} has no attribute {name_field!r} (attributes: {fields})"
                )
            name = safe_name(props[name_field])
        out.append(AoiFeature(name, _polygon(geometry, where)))
    names = [f.name for f in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidRequestError(
            f"AOI features share the name(s) {dupes} in attribute {name_field!r}; "
            "each cube needs its own name"
        )
    return out


def load_aoi(aoi: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """One WGS 84 GeoJSON (Multi)Polygon: the union of every feature of ``aoi``.

    >>> load_aoi({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]})["type"]
    'Polygon'
    """
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    features = read_features(aoi)
    if len(features) == 1:
        return features[0].geometry
    return mapping(unary_union([shape(f.geometry) for f in features]))


def _label(aoi: Any) -> str:
    if isinstance(aoi, str | Path) and not str(aoi).lstrip().startswith("{"):
        return str(aoi)
    return "(GeoJSON)"


def is_vector_file(aoi: Any) -> bool:
    """Whether ``aoi`` names a file (rather than being GeoJSON)."""
    return isinstance(aoi, str | Path) and not str(aoi).lstrip().startswith("{")


def polygon_mask(grid: Grid, geometry: Mapping[str, Any]) -> np.ndarray:
    """``(y, x)`` boolean: True where a cube pixel's centre lies inside the WGS 84 ``geometry``.

    Example:
        >>> from stac2cube.grid import grid_for_bbox
        >>> g = grid_for_bbox((11.0, 48.0, 11.01, 48.01), 100.0)
        >>> m = polygon_mask(g, {"type": "Polygon", "coordinates": [[[11, 48], [11.01, 48],
        ...                     [11.01, 48.01], [11, 48.01], [11, 48]]]})
        >>> m.shape == g.shape, bool(m.any()), bool(m.all())
        (True, True, False)
    """
    return _polygon_mask(grid, json.dumps(geometry, sort_keys=True)).copy()


@functools.lru_cache(maxsize=8)
def _polygon_mask(grid: Grid, geometry_json: str) -> np.ndarray:
    """:func:`polygon_mask`, computed once per grid and polygon (every batch of a build asks)."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import shape
    from shapely.ops import transform as shapely_transform

    to_grid = Transformer.from_crs("EPSG:4326", f"EPSG:{grid.epsg}", always_xy=True)
    projected = shapely_transform(to_grid.transform, shape(json.loads(geometry_json)))
    shapely.prepare(projected)
    xs, ys = grid.x, grid.y
    mask = np.zeros(grid.shape, bool)
    rows = max(1, 4_000_000 // max(len(xs), 1))  # a few million points at a time
    for k in range(0, len(ys), rows):
        yy = ys[k : k + rows]
        mask[k : k + rows] = shapely.contains_xy(projected, xs[None, :], yy[:, None])
    return mask
