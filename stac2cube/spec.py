"""The cube spec: every parameter of a cube, defined once.

A :class:`CubeSpec` says what a cube is made of: the mission, and one section each for the area,
the period, the search, the grid, the layers (bands and radiometry), the step filters and the
products. Each field is declared here once, with its type, default and description; from these
declarations come

* the parameters of the build flow :func:`~stac2cube.flows.build.get_stac_layers` (its
  signature and docstring, hence the typed Prefect UI form with its choice lists, date pickers
  and descriptions) through :func:`spec_parameters`,
* the ``stac2cube build`` / ``availability`` command-line options (:func:`add_cli_options`),
* the flat ``parameters`` of ``<cube>.settings.json`` (:meth:`CubeSpec.parameters`), and the
  spec of an existing cube, from the record stored in it (:meth:`CubeSpec.from_record`).

A section is a frozen pydantic model (pydantic at the Prefect boundary); field names are unique
across sections, so a flat parameter name says which section it belongs to. What a *run* needs
besides the spec (the store, the batch size, per-feature builds) are run parameters
(:data:`RUN_FIELDS`), not part of a cube.

Example:
    >>> spec = CubeSpec.from_parameters({"mission": "sentinel-2-l2a", "bbox": [11, 48, 11.1, 48.1],
    ...                                  "start": "2024-01-01", "bands": ["red"]})
    >>> spec.area.bbox, spec.period.start, spec.layers.bands, spec.grid.resolution
    ([11.0, 48.0, 11.1, 48.1], datetime.date(2024, 1, 1), ['red'], 10.0)
    >>> spec.parameters()["max_cloud"]
    100.0
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import os
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from stac2cube.errors import InvalidRequestError

MissionName = Literal[
    "sentinel-2-l2a", "sentinel-2-l1c", "landsat-c2-l2", "sentinel-1-rtc", "cop-dem-glo-30"
]
CatalogChoice = Literal["earth-search", "planetary-computer", "terrabyte", "auto"]
ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]
SarScale = Literal["db", "linear"]
TileMode = Literal["mosaic", "separate"]
QuicklookFormat = Literal["none", "gif", "png"]
SuperresModelName = Literal["rgbn", "full", "rswir-x2"]
QaFlag = Literal[
    "fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow", "clear", "water"
]

DEFAULT_RESOLUTION = 10.0
DEFAULT_MAX_CLOUD = 100.0
DEFAULT_STORE = "cube.icechunk"
DEFAULT_BATCH_SIZE = 32


def _cli(**options: Any) -> dict[str, Any]:
    """Command-line details of a field (``metavar``, ``flag``), kept in its schema extras."""
    return {"cli": options}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _loose_input(cls, value: Any, info: ValidationInfo) -> Any:
        """Loose input normalised once, with the messages of :mod:`stac2cube.request`."""
        check = _CHECKS.get(info.field_name or "")
        return value if value is None or check is None else check(value)


class AreaSpec(_Section):
    """Where: a box or polygons, and whether pixels outside the polygons are kept."""

    bbox: list[Annotated[float, Field(ge=-180, le=180)]] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="Area as WGS 84 [west, south, east, north] in degrees (or give `aoi`).",
        json_schema_extra=_cli(metavar=("W", "S", "E", "N"), nargs=4),
    )
    aoi: dict[str, Any] | str | None = Field(
        None,
        description="Area as a GeoJSON geometry, Feature or FeatureCollection, or a vector file "
        "(GeoJSON, GeoPackage, Shapefile, KML); all features together form one area unless "
        "`per_feature` is set.",
    )
    clip: bool = Field(
        False,
        description="Set pixels outside the `aoi` polygon to nodata (the grid is still its bbox).",
    )


class PeriodSpec(_Section):
    """When: the days searched, and how scenes become time steps."""

    start: dt.date | None = Field(
        None,
        description="First day (UTC, inclusive), YYYY-MM-DD; may be left empty when `dates` "
        "are given.",
    )
    end: dt.date | None = Field(
        None,
        description="Last day (UTC, inclusive), YYYY-MM-DD; empty means today (or the last of "
        "`dates`).",
    )
    season: str | None = Field(
        None,
        description="Keep only these months of every year of the period: FROM-TO months such "
        "as 6-8 or 12-2 (across the new year), a season name DJF/MAM/JJA/SON, or a comma list "
        "4,5,9.",
    )
    dates: list[dt.date] | None = Field(
        None,
        description="Keep only scenes acquired on these days (UTC).",
        json_schema_extra=_cli(metavar="YYYY-MM-DD"),
    )
    tile_mode: TileMode = Field(
        "mosaic",
        description="mosaic (default): the tiles of a solar day form one time step; separate: "
        "one time step per tile, with a tile coordinate.",
    )


class SearchSpec(_Section):
    """Which catalog and collection, and the catalog-side cloud filter."""

    # a plain string (an enum-or-string anyOf is a form Prefect's UI cannot type into):
    # the known names are suggestions in `examples`
    catalog: str = Field(
        "earth-search",
        min_length=1,
        description="earth-search (default), planetary-computer, terrabyte, auto, or a STAC API "
        "URL such as https://earth-search.aws.element84.com/v1.",
        examples=[*typing.get_args(CatalogChoice), "https://earth-search.aws.element84.com/v1"],
    )
    collection: str | None = Field(
        None, description="Collection id; default: the catalog's collection for the mission."
    )
    max_cloud: float = Field(
        DEFAULT_MAX_CLOUD,
        description="Keep scenes whose catalog eo:cloud_cover is at most this percentage "
        "(default 100: all), before anything is read.",
    )


class GridSpec(_Section):
    """The pixel grid asked for (the cube's :class:`~stac2cube.grid.Grid` is made from it)."""

    resolution: float = Field(DEFAULT_RESOLUTION, description="Pixel size in metres (default 10).")
    crs: str | None = Field(
        None,
        description="Target CRS such as EPSG:32632; default: the UTM zone of the area's centre.",
    )
    anchor: list[float] | None = Field(
        None,
        description="Where pixel edges lie, [x, y] in metres of the CRS modulo the resolution; "
        "default: the mission's own pixel edges (Landsat: 15 m off multiples of 30 m, others: "
        "multiples of the resolution). An update keeps its cube's own.",
        json_schema_extra=_cli(metavar=("X", "Y"), nargs=2),
    )


class LayerSpec(_Section):
    """What is stored per time step: the bands, and how their pixels are made."""

    bands: list[str] | None = Field(
        None,
        description="Bands by ESA id (B04) or common name (red); default B02 B03 B04 B08.",
        json_schema_extra=_cli(metavar="BAND"),
    )
    resampling: ResamplingName = Field(
        "nearest",
        description="Resampling of continuous bands from 20/60 m (default nearest); "
        "classification bands always use nearest.",
    )
    mask_clouds: bool = Field(
        False,
        description="Mask clouds and shadows in each scene before mosaicking (Sentinel-2 L2A: "
        "SCL classes; Landsat: QA_PIXEL flags), so a clear scene of the same day fills in.",
    )
    scl_classes: list[int] | None = Field(
        None,
        description="SCL classes masked by `mask_clouds` and counted by `max_scene_cloud` "
        "(default 1 3 8 9 10).",
        json_schema_extra=_cli(metavar="CLASS"),
    )
    qa_flags: list[QaFlag] | None = Field(
        None,
        description="QA_PIXEL flags masked by `mask_clouds` and counted by `max_scene_cloud` "
        "(default dilated_cloud cirrus cloud cloud_shadow).",
    )
    sar_scale: SarScale = Field(
        "db", description="Sentinel-1 backscatter in dB (default) or linear gamma0."
    )

    def options(self) -> Any:
        """The :class:`~stac2cube.radiometry.ProcessingOptions` of this section."""
        from stac2cube.radiometry import ProcessingOptions

        names = [f.name for f in dataclasses.fields(ProcessingOptions)]
        return ProcessingOptions.from_record(self.model_dump(include=set(names)))


class FilterSpec(_Section):
    """Time steps dropped after loading, measured on the cube's grid inside the area."""

    min_coverage: float = Field(
        0.0,
        description="Drop time steps whose valid pixels cover less than this fraction (0-1) of "
        "the area (slivers at swath edges), after loading.",
        json_schema_extra=_cli(metavar="FRACTION"),
    )
    max_scene_cloud: float = Field(
        100.0,
        description="Drop time steps whose cloud fraction inside the area (SCL or QA_PIXEL, in "
        "percent of the valid pixels) is above this, after loading.",
        json_schema_extra=_cli(metavar="PERCENT"),
    )


class ProductSpec(_Section):
    """What is derived from the layers: indices, composites and the files beside a cube."""

    indices: list[str] | None = Field(
        None,
        description="Spectral indices stored like bands: NDVI NDWI MNDWI NDMI NBR SAVI EVI "
        "NDRE NDSI NDBI; Sentinel-1: VV_VH VH_VV RVI.",
        json_schema_extra=_cli(metavar="INDEX"),
    )
    composites: list[str] | None = Field(
        None,
        description="Temporal composites as STAT:PERIOD (median, mean, min, max over all, "
        "month, year, season), kept in the cube's group composites/<period>.",
        json_schema_extra=_cli(metavar="STAT:PERIOD"),
    )
    statistics: bool = Field(
        False,
        description="Also write <cube>.stats.csv with per-time-step valid and cloud fractions "
        "and band means.",
    )
    quicklook: QuicklookFormat = Field(
        "none",
        description="Write a true-colour time-lapse <cube>.quicklook.gif or a PNG grid.",
    )


class ReadSpec(_Section):
    """How unreadable assets are handled (:mod:`stac2cube.broken`)."""

    errors_as_nodata: bool = Field(
        False,
        description="Read a corrupt, truncated or missing (HTTP 404) asset as nodata instead of "
        "failing the run; the ledger entry of its time step lists it, and a later update that "
        "finds it readable fills it in. Kept by the cube's updates. Default: fail naming the "
        "item and asset, store untouched.",
    )


class CloudSpec(_Section):
    """Cloud layers (:mod:`stac2cube.clouds`): s2cloudless on the matching L1C scenes."""

    cloud_layers: bool = Field(
        False,
        description="Also write the cloud layers (s2cloudless on the matching Sentinel-2 L1C "
        "scenes: cloud_prob, cloud_mask, group clouds) of the time steps this run writes, in "
        "the same commit; a cube that has them keeps them current in every update, with the "
        "settings of `stac2cube clouds` (default: 60 m, threshold 40).",
    )


class CoregSpec(_Section):
    """Co-registration of the time steps (:mod:`stac2cube.coregistration`)."""

    coregister: bool = Field(
        False,
        description="Co-register every time step to the cube's stored reference with AROSICS "
        "(group coregistration; shifts in the coreg_* coordinates). A cube that has a "
        "reference stays co-registered on every build and update without this switch.",
    )


class SuperresSpec(_Section):
    """Super-resolution (SEN2SR) of a Sentinel-2 cube's bands, kept in its group ``superres``.

    Its fields are not part of the cube's identity: the stage's settings live in the group's
    attributes (:mod:`stac2cube.superres`), so updates keep a cube that has the group current.
    """

    superres: bool = Field(
        False,
        description="Also super-resolve the Sentinel-2 bands to 2.5 m with SEN2SR into the "
        "cube's group superres (needs the weights: superres_model_dir). A cube that has the "
        "group keeps it current in every build and update.",
    )
    superres_model_dir: str | None = Field(
        None,
        description="Folder of the SEN2SR weights in the mlstac layout (see the README, "
        "Super-resolution); default: the one the cube's superres group was made with.",
        json_schema_extra=_cli(metavar="DIR"),
    )
    superres_model: SuperresModelName = Field(
        "rgbn",
        description="SEN2SR model: rgbn (B04 B03 B02 B08 to 2.5 m), full (10 bands to 2.5 m) "
        "or rswir-x2 (B05 B06 B07 B8A B11 B12 to 10 m).",
    )


class CubeSpec(_Section):
    """Everything a cube is made of; see the module docs."""

    mission: MissionName = Field(
        "sentinel-2-l2a",
        description="Mission to build a cube of: sentinel-2-l2a, sentinel-2-l1c, landsat-c2-l2, "
        "sentinel-1-rtc or cop-dem-glo-30.",
        json_schema_extra=_cli(choices=False),  # the spec's own message names the missions
    )
    area: AreaSpec = AreaSpec()
    period: PeriodSpec = PeriodSpec()
    search: SearchSpec = SearchSpec()
    grid: GridSpec = GridSpec()
    layers: LayerSpec = LayerSpec()
    filters: FilterSpec = FilterSpec()
    products: ProductSpec = ProductSpec()
    reading: ReadSpec = ReadSpec()
    clouds: CloudSpec = CloudSpec()
    coregistration: CoregSpec = CoregSpec()
    superresolution: SuperresSpec = SuperresSpec()

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> CubeSpec:
        """The spec of flat parameters (flow keywords, settings, CLI); run parameters and
        None values are ignored (None means the default).

        Raises:
            InvalidRequestError: a parameter is unknown or of the wrong type (one line).
        """
        unknown = sorted(set(parameters) - set(SPEC_FIELDS) - set(RUN_FIELDS))
        if unknown:
            raise InvalidRequestError(
                f"unknown parameter(s) {unknown}; the parameters are "
                f"{sorted({*SPEC_FIELDS, *RUN_FIELDS})}"
            )
        nested: dict[str, Any] = {}
        for name, value in parameters.items():
            field = SPEC_FIELDS.get(name)
            if field is None or value is None:
                continue
            if field.section is None:
                nested[name] = value
            else:
                nested.setdefault(field.section, {})[name] = value
        return _validated(cls, nested)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CubeSpec:
        """The spec of an existing cube, from the record stored in it
        (:meth:`~stac2cube.request.CubeRequest.describe`).

        The grid is pinned by its CRS, resolution and anchor, the search by the catalog's URL
        and the collection, so a build with this spec lands on the same grid and scenes. A
        record written by an older version lacks some options: they take the defaults they
        had then.
        """
        from stac2cube.grid import Grid

        grid = Grid.from_attrs(record["grid"])
        options = dict(record.get("options") or {})
        parameters = {
            "mission": record["mission"],
            "bbox": list(record["bbox"]),
            "aoi": record.get("aoi"),
            "start": record["start"],
            "end": record["end"],
            "catalog": record["catalog_url"],
            "collection": record["collection"],
            "bands": list(record["bands"]),
            "resolution": grid.resolution,
            "crs": grid.crs,
            "anchor": list(grid.anchor),
            "max_cloud": record["max_cloud"],
            "resampling": record.get("resampling"),
            "season": ",".join(str(m) for m in record.get("months") or []) or None,
            "dates": list(record.get("dates") or []) or None,
            "clip": record.get("clip"),
            "tile_mode": record.get("tile_mode"),
            "min_coverage": record.get("min_coverage"),
            "max_scene_cloud": record.get("max_scene_cloud"),
            "indices": list(record.get("indices") or []) or None,
            "composites": list(record.get("composites") or []) or None,
            "statistics": record.get("statistics"),
            "quicklook": record.get("quicklook") or None,
            "errors_as_nodata": record.get("errors_as_nodata"),
            **{key: options.get(key) for key in ("mask_clouds", "scl_classes", "qa_flags")},
            "sar_scale": options.get("sar_scale") or None,
        }
        return cls.from_parameters(parameters)

    def parameters(self) -> dict[str, Any]:
        """The flat parameters of this spec (the inverse of :meth:`from_parameters`)."""
        out: dict[str, Any] = {}
        for name, field in SPEC_FIELDS.items():
            holder = self if field.section is None else getattr(self, field.section)
            out[name] = getattr(holder, name)
        return out

    def replace(self, **parameters: Any) -> CubeSpec:
        """A copy with some flat parameters changed (None restores a default).

        >>> CubeSpec().replace(resolution=20).grid.resolution
        20.0
        """
        return CubeSpec.from_parameters({**self.parameters(), **parameters})


@dataclass(frozen=True)
class SpecField:
    """One flat parameter: its section of :class:`CubeSpec` (None: top level) and its
    pydantic field (type, default, description)."""

    name: str
    section: str | None
    annotation: Any
    default: Any
    description: str
    cli: Mapping[str, Any]
    #: the annotation in the flow signature, hence the Prefect form (see :func:`form_annotation`)
    form: Any = None


def _fields() -> dict[str, SpecField]:
    out: dict[str, SpecField] = {}
    hints = typing.get_type_hints(CubeSpec)
    for name, info in CubeSpec.model_fields.items():
        kind = hints[name]
        if isinstance(kind, type) and issubclass(kind, _Section):
            inner = typing.get_type_hints(kind)
            for sub, sub_info in kind.model_fields.items():
                out[sub] = _field(sub, name, inner[sub], sub_info)
        else:
            out[name] = _field(name, None, kind, info)
    return out


def _field(name: str, section: str | None, annotation: Any, info: Any) -> SpecField:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return SpecField(
        name,
        section,
        annotation,
        info.default,
        info.description or "",
        extra.get("cli", {}),
        form_annotation(info.annotation, info),  # pydantic's keeps inner Annotated constraints
    )


def form_annotation(annotation: Any, info: Any = None) -> Any:
    """The type a flow signature gives a parameter, for Prefect's form (its JSON schema).

    ``None`` is dropped from an optional type of one kind (the form then opens on an input of
    the type, not on "Property is type None"; an empty input still means the default), and the
    field's constraints (``min_length``, ``ge``, ...) and ``examples`` are kept, so the form
    refuses, e.g., a bbox of one number.

    >>> form_annotation(int | None)
    <class 'int'>
    """
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        # one type left: drop None; a union (aoi: object or string) keeps it, since Prefect's
        # validator only adds null to a property with one "type"
        annotation = rest[0] if len(rest) == 1 else annotation
    metadata = list(getattr(info, "metadata", None) or [])
    if getattr(info, "examples", None):
        metadata.append(Field(examples=info.examples))
    return Annotated[(annotation, *metadata)] if metadata else annotation


#: every flat parameter of a cube spec, in declaration order
SPEC_FIELDS: dict[str, SpecField] = _fields()


def _run_field(
    name: str, annotation: Any, default: Any, description: str, form: Any = None, **cli: Any
):
    return SpecField(
        name, None, annotation, default, description, cli, form or form_annotation(annotation)
    )


#: parameters of a build run that are not part of the cube (the store, batching, features)
RUN_FIELDS: dict[str, SpecField] = {
    f.name: f
    for f in (
        # required (no default): a relative default wrote UI runs into the worker's directory
        _run_field(
            "store",
            str,
            inspect.Parameter.empty,
            "Path of the cube store to create, or to extend if it exists, e.g. "
            "/data/cubes/munich.icechunk (absolute: a deployment's run starts in a temporary "
            "directory). With `per_feature`, a pattern with {name} such as "
            "/data/cubes/{name}.icechunk, or a folder.",
            Annotated[str, Field(min_length=1, examples=["/data/cubes/munich.icechunk"])],
        ),
        _run_field("batch_size", int, DEFAULT_BATCH_SIZE, "Time steps read and written at a time."),
        _run_field(
            "pc_key_block",
            str | None,
            None,
            "Name of a Prefect Secret block holding a Planetary Computer subscription key "
            "(otherwise PC_SDK_SUBSCRIPTION_KEY); never logged or stored.",
        ),
        _run_field(
            "per_feature",
            bool,
            False,
            "Build one cube per feature of `aoi`, in parallel, in one flow run.",
        ),
        _run_field(
            "name_field",
            str | None,
            None,
            "With `per_feature`, the attribute naming each cube (default: its index).",
            metavar="ATTRIBUTE",
        ),
    )
}

#: the order of the build flow's parameters (the UI form): the spec's, then the run's
_FLOW_ORDER = (
    "mission", "bbox", "start", "end", "store", "catalog", "collection", "bands", "resolution",
    "crs", "anchor", "max_cloud", "aoi", "resampling", "batch_size", "mask_clouds", "scl_classes",
    "qa_flags", "sar_scale", "pc_key_block", "season", "dates", "clip", "tile_mode",
    "min_coverage", "max_scene_cloud", "indices", "composites", "statistics", "quicklook",
    "per_feature", "name_field", "cloud_layers", "coregister", "superres", "superres_model_dir",
    "superres_model", "errors_as_nodata",
)  # fmt: skip


def check_integer(value: Any, name: str, minimum: int) -> int:
    """``value`` when it is an integer of at least ``minimum``.

    >>> check_integer(8, "batch_size", 1)
    8
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidRequestError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_switch(value: Any, name: str) -> bool:
    """``value`` when it is True or False.

    >>> check_switch(False, "clip")
    False
    """
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false, got {value!r}")
    return value


def _switch(name: str) -> Callable[[Any], bool]:
    return lambda value: check_switch(value, name)


def _number(name: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{name} must be a number, got {value!r}") from None

    return check


def _choice(name: str, kind: Any) -> Callable[[Any], Any]:
    allowed = typing.get_args(kind)

    def check(value: Any) -> Any:
        if value not in allowed:
            raise InvalidRequestError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        return value

    return check


def _mission(value: Any) -> Any:
    from stac2cube.missions import get_mission

    return value if value in typing.get_args(MissionName) else get_mission(str(value)).id


def _date(name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        from stac2cube.request import parse_date

        return parse_date(value, name)

    return check


def _dates(value: Any) -> list[dt.date]:
    from stac2cube.request import parse_date

    if isinstance(value, (str, dt.date)):
        value = [value]
    return [parse_date(v, "dates") for v in value]


def _bbox(value: Any) -> list[float]:
    from stac2cube.request import parse_bbox

    return list(parse_bbox(value))


#: the checks of loose input, by field: they raise the messages users know from the CLI
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "mission": _mission,
    "bbox": _bbox,
    "aoi": lambda value: os.fspath(value) if isinstance(value, os.PathLike) else value,
    "start": _date("start"),
    "end": _date("end"),
    "dates": _dates,
    "resolution": _number("resolution"),
    "max_cloud": _number("max_cloud"),
    "min_coverage": _number("min_coverage"),
    "max_scene_cloud": _number("max_scene_cloud"),
    "clip": _switch("clip"),
    "superres": _switch("superres"),
    "mask_clouds": _switch("mask_clouds"),
    "statistics": _switch("statistics"),
    "cloud_layers": _switch("cloud_layers"),
    "errors_as_nodata": _switch("errors_as_nodata"),
    "resampling": _choice("resampling", ResamplingName),
    "tile_mode": _choice("tile_mode", TileMode),
    "sar_scale": _choice("sar_scale", SarScale),
}


def _validated(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    """The first problem of a pydantic error, named by its flat parameter."""
    err = exc.errors()[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, InvalidRequestError):
        return str(original)
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    name = next((p for p in reversed(loc) if p in SPEC_FIELDS), loc[-1] if loc else "?")
    return f"{name}: {err['msg'].lower()}, got {err.get('input')!r}"


def spec_parameters(names: Iterable[str] | None = None) -> list[inspect.Parameter]:
    """``inspect.Parameter`` objects of the flat parameters ``names`` (default: the build
    flow's, in form order), for a flow signature: keyword-only (a required one, such as
    ``store``, may follow optional ones), typed for the form (:func:`form_annotation`)."""
    fields = {**SPEC_FIELDS, **RUN_FIELDS}
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=fields[name].default,
            annotation=fields[name].form or fields[name].annotation,
        )
        for name in (names or _FLOW_ORDER)
    ]


def with_spec_parameters(
    names: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a ``def f(**parameters)`` the flat parameters as its signature and their
    descriptions as the ``Args:`` of its docstring (where ``{args}`` stands), before Prefect's
    ``@flow`` reads both.
    """
    params = spec_parameters(names)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        fn.__doc__ = (fn.__doc__ or "").replace("{args}", args_doc(p.name for p in params))
        return fn

    return decorate


def with_form_defaults(flow_object: Any) -> Any:
    """Give a Prefect flow made from :func:`with_spec_parameters` the signature its form is made
    from: optional parameters whose default is None get *no* default in the JSON schema.

    Prefect's run form fills every field with its schema default and then validates the values:
    a ``"default": null`` on a typed field (a list, a date) failed as "None is not of type
    'array'", and a nullable type opened on "Property is type None" (issue 17 item 2). Without
    a default, the form opens on an empty input of the type and leaves it out when empty, and
    Prefect's validator accepts an explicit null for such a field. The flow's function keeps the
    None defaults, so calls bind exactly as before; only ``inspect.signature(flow)`` (what
    ``prefect deploy`` and ``parameter_schema`` read) changes. Needs pydantic's ``MISSING``
    (2.12+); without it the flow is left as it is.
    """
    try:
        from pydantic import MISSING
    except ImportError:  # pragma: no cover - older pydantic: schema defaults stay null
        return flow_object
    signature = inspect.signature(flow_object.fn)
    params = [
        p.replace(default=MISSING) if p.default is None else p
        for p in signature.parameters.values()
    ]
    flow_object.__signature__ = signature.replace(parameters=params)
    return flow_object


def bound_parameters(fn: Callable[..., Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` of a call of ``fn`` (made by :func:`with_spec_parameters`) with the
    defaults of those not given (a direct ``fn.fn(...)`` call passes only what it names).

    Raises:
        InvalidRequestError: a parameter ``fn`` does not take.
    """
    signature = inspect.signature(fn.fn if hasattr(fn, "fn") else fn)
    unknown = sorted(set(parameters) - set(signature.parameters))
    if unknown:
        raise InvalidRequestError(
            f"unknown parameter(s) {unknown}; the parameters are {sorted(signature.parameters)}"
        )
    bound = signature.bind_partial(**parameters)
    bound.apply_defaults()
    return dict(bound.arguments)


def args_doc(names: Iterable[str], indent: int = 8) -> str:
    """Google-style ``Args:`` lines of the flat parameters ``names``."""
    fields = {**SPEC_FIELDS, **RUN_FIELDS}
    lines = []
    for name in names:
        text = textwrap.fill(
            f"{name}: {fields[name].description}",
            width=96 - indent,
            subsequent_indent="    ",
        )
        lines.append(textwrap.indent(text, " " * indent))
    return "\n".join(lines).lstrip()


def add_cli_options(
    parser: Any, names: Iterable[str], *, required: bool = False, note: str = ""
) -> None:
    """Add ``--name`` options for the flat parameters ``names`` to an argparse ``parser`` (or
    group): lists take several values, booleans are switches, choices come from the types.
    Unset options stay None, so the spec's defaults (defined once, here) apply. ``note`` is
    added to each option's help.
    """
    fields = {**SPEC_FIELDS, **RUN_FIELDS}
    for name in names:
        field = fields[name]
        kwargs: dict[str, Any] = {"help": _cli_help(field.description) + note, "default": None}
        if required:
            kwargs["required"] = True
        kind, many = _scalar(field.annotation)
        if kind is bool:
            kwargs.update(action="store_true", default=None)
        else:
            choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
            if choices and field.cli.get("choices", True):
                kwargs["choices"] = list(choices)
            if kind in (int, float):
                kwargs["type"] = kind
            if many:
                kwargs["nargs"] = field.cli.get("nargs", "+")
            if "metavar" in field.cli:
                kwargs["metavar"] = field.cli["metavar"]
        parser.add_argument(field.cli.get("flag", "--" + name.replace("_", "-")), **kwargs)


def _scalar(annotation: Any) -> tuple[Any, bool]:
    """The element type of a parameter's annotation, and whether it is a list."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if any(typing.get_origin(a) is Literal for a in args):  # a choice or any string
            return str, False
        return _scalar(args[0])
    if typing.get_origin(annotation) is list:
        return _scalar(args[0])[0], True
    return annotation, False


def _cli_help(description: str) -> str:
    """A field's description as command-line help (``name`` becomes ``--name``)."""
    return re.sub(r"`(\w+)`", lambda m: "--" + m.group(1).replace("_", "-"), description)
