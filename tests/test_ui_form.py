"""The build-cube form as Prefect's UI renders it: the JSON schema of the flow's parameters.

Issue 17 items 1-3: the catalog field takes typed text (no anyOf of an enum and a string, which
the form turns into two tabs that flip back to the dropdown after the first key), required
inputs are required and optional ones open on an input of their type with their default (no
"Property is type None"), and bbox has a shape the form enforces. The schema is checked with
Prefect's own validator, the one its server and UI use on a run's parameters.
"""

from __future__ import annotations

import inspect

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate

from stac2cube.flows.build import get_stac_layers
from stac2cube.spec import RUN_FIELDS, SPEC_FIELDS

GOOD = {
    "mission": "sentinel-2-l2a",
    "bbox": [11.50, 48.10, 11.56, 48.14],
    "start": "2024-06-01",
    "store": "/data/cubes/munich.icechunk",
    "catalog": "http://127.0.0.1:8082/stac",
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return parameter_schema(get_stac_layers).model_dump()


def _errors(params: dict, schema: dict) -> list[str]:
    """Prefect's validation of run parameters (as with ``enforce_parameter_schema``), both
    ways the server and the UI call it."""
    out = []
    for allow_none in (False, True):
        errors = validate(params, schema, allow_none_with_default=allow_none)
        out += [f"{e.json_path}: {e.message}" for e in errors]
    return out


def test_catalog_is_one_plain_string_with_suggestions(schema):
    catalog = schema["properties"]["catalog"]
    assert "anyOf" not in catalog and "enum" not in catalog, catalog
    assert catalog["type"] == "string"
    assert catalog["default"] == "earth-search"
    assert {"earth-search", "planetary-computer", "terrabyte", "auto"} <= set(catalog["examples"])
    assert any(e.startswith("https://") for e in catalog["examples"])
    for typed in ("h", "http://127.0.0.1:8082/stac", "https://example.com/v1", "earth-search"):
        assert not _errors({**GOOD, "catalog": typed}, schema), typed


def test_no_field_is_an_any_of_with_an_enum(schema):
    """The other choice fields are one enum each (a dropdown), never an enum-or-string."""
    for name, prop in schema["properties"].items():
        for member in prop.get("anyOf", []):
            assert "enum" not in member, f"{name}: {prop}"


def test_store_is_required_and_nothing_else(schema):
    """store has no default (a relative default wrote UI runs into the worker's directory); the
    area (bbox or aoi) and the period (start or dates) are alternatives, so neither of a pair is
    required alone (their descriptions say so)."""
    assert schema["required"] == ["store"]
    assert "default" not in schema["properties"]["store"]
    assert schema["properties"]["store"]["minLength"] == 1
    assert "aoi" in schema["properties"]["bbox"]["description"]
    assert "dates" in schema["properties"]["start"]["description"]
    missing = _errors({k: v for k, v in GOOD.items() if k != "store"}, schema)
    assert any("store" in m for m in missing), missing
    assert any("store" in m for m in _errors({**GOOD, "store": ""}, schema))


def test_optional_fields_open_on_an_input_of_their_type(schema):
    """No property offers the null type (the form's "Property is type None"); an optional one
    carries the spec's default, or none at all where that is None (the form fills fields with
    their defaults and then refused a null one: "None is not of type 'array'")."""
    fields = {**SPEC_FIELDS, **RUN_FIELDS}
    for name, prop in schema["properties"].items():
        members = prop.get("anyOf", [prop])
        if name != "aoi":  # object or string: null stays a member (Prefect adds it to no union)
            assert all(m.get("type") != "null" for m in members), f"{name}: {prop}"
        default = fields[name].default
        if default is None or default is inspect.Parameter.empty:
            assert "default" not in prop, f"{name}: {prop}"
        else:
            assert prop["default"] == default, name
    # the flow itself still binds the None defaults
    flow_defaults = inspect.signature(get_stac_layers.fn).parameters
    assert flow_defaults["bbox"].default is None and flow_defaults["crs"].default is None
    assert schema["properties"]["bbox"]["type"] == "array"
    assert schema["properties"]["start"] == {
        **schema["properties"]["start"],
        "type": "string",
        "format": "date",
    }
    assert schema["properties"]["resolution"]["default"] == 10.0
    assert schema["properties"]["mission"]["default"] == "sentinel-2-l2a"


def test_an_empty_optional_field_is_valid(schema):
    """A field left empty in the form is not sent, or sent as null: both pass Prefect's
    validation (the UI's and the server's), and the run takes the default."""
    assert not _errors(GOOD, schema)
    assert not _errors({"store": "/data/cubes/a.icechunk"}, schema)
    nulls = {
        name: None for name in schema["properties"] if "default" not in schema["properties"][name]
    }
    nulls.pop("store")
    assert len(nulls) > 10
    assert not _errors({**GOOD, **nulls}, schema)


def test_bbox_is_four_numbers_in_range(schema):
    bbox = schema["properties"]["bbox"]
    assert (bbox["minItems"], bbox["maxItems"]) == (4, 4)
    assert bbox["items"] == {"type": "number", "minimum": -180, "maximum": 180}
    assert not _errors(GOOD, schema)
    for bad in ([11.5], [11.5, 48.1, 11.56], [11.5, 48.1, 11.56, 48.14, 1.0], [0, 0, 200, 1]):
        errors = _errors({**GOOD, "bbox": bad}, schema)
        assert errors, bad
    assert _errors({**GOOD, "bbox": ["a", 1, 2, 3]}, schema)


def test_the_flow_and_the_command_line_still_take_the_same_parameters():
    """The form types are only the signature's: the flow keeps one-line errors, the command
    line its options."""
    from stac2cube.cli_parser import build_parser
    from stac2cube.errors import InvalidRequestError
    from stac2cube.parameters import resolve_requests

    args = build_parser().parse_args(
        ["build", "--bbox", "11.5", "48.1", "11.56", "48.14", "--catalog", "http://h/stac"]
    )
    assert args.bbox == [11.5, 48.1, 11.56, 48.14] and args.catalog == "http://h/stac"
    with pytest.raises(InvalidRequestError, match="bbox"):
        resolve_requests({**GOOD, "bbox": [11.5]})
    ((request, store),) = resolve_requests({**GOOD, "catalog": "earth-search"}).values()
    assert store == GOOD["store"] and request.catalog.name == "earth-search"
    signature = inspect.signature(get_stac_layers)
    assert all(p.kind is p.KEYWORD_ONLY for p in signature.parameters.values())
