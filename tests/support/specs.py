"""The published specs every answer is checked against: OpenAI's OpenAPI file
(`tests/fixtures/specs/`, JSON Schema 2020-12 component schemas) and the anthropic SDK's
types, validated strictly.

The OpenAPI document is loaded once per session (it is 3.4 MB); its `#/components/schemas/...`
references resolve through a `referencing.Registry` that holds the whole document."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support.paths import REPO

OPENAI_SPEC = REPO / "tests" / "fixtures" / "specs" / "openai-openapi.json"
SPEC_URI = "urn:openai-openapi"


def _null_allowed(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true`, which a few of the file's schemas still use, as JSON
    Schema says it (2020-12 ignores the keyword, and would refuse the null it allows)."""
    if isinstance(node, list):
        return [_null_allowed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {name: _null_allowed(value) for name, value in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    if isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


@functools.cache
def openai_spec() -> dict[str, Any]:
    document: dict[str, Any] = _null_allowed(json.loads(OPENAI_SPEC.read_text()))
    return document


@functools.cache
def _registry() -> Registry[Any]:
    resource = Resource.from_contents(openai_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


@functools.cache
def openai_validator(schema: str) -> Draft202012Validator:
    """A validator for one component schema (`CreateChatCompletionResponse`)."""
    if schema not in openai_spec()["components"]["schemas"]:
        raise KeyError(f"the spec has no component schema {schema!r}")
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}
    return Draft202012Validator(ref, registry=_registry())


def spec_errors(schema: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the schema, each with the path to the offending value."""
    found = openai_validator(schema).iter_errors(instance)
    return sorted(_described(error) for error in found)


def _described(error: Any) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(top)"
    # anyOf/oneOf failures hide the useful reason in their context.
    reasons = sorted(e.message for e in error.context or [])[:4]
    why = f" ({'; '.join(reasons)})" if reasons else ""
    return f"{where}: {error.message[:300]}{why}"


def assert_conforms(schema: str, instance: Any) -> None:
    errors = spec_errors(schema, instance)
    assert not errors, f"not a {schema}:\n" + "\n".join(errors) + f"\n{json.dumps(instance)}"


@functools.cache
def stream_event_schemas() -> dict[str, str]:
    """Each Responses API stream event's `type` and the variant of `ResponseStreamEvent` it
    names (`response.created` -> `ResponseCreatedEvent`)."""
    schemas = openai_spec()["components"]["schemas"]
    variants: dict[str, str] = {}
    for option in schemas["ResponseStreamEvent"]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[-1]
        for kind in _enum_of(schemas[name], schemas):
            variants.setdefault(kind, name)
    return variants


def _enum_of(schema: dict[str, Any], schemas: dict[str, Any]) -> Iterator[str]:
    for part in [schema, *schema.get("allOf", [])]:
        if "$ref" in part:
            yield from _enum_of(schemas[part["$ref"].rsplit("/", 1)[-1]], schemas)
        kind = (part.get("properties") or {}).get("type") or {}
        yield from kind.get("enum") or []


def assert_event_conforms(event: dict[str, Any], name: str | None = None) -> None:
    """A Responses API SSE event: its `event:` name is its type, and its data validates
    against the variant of `ResponseStreamEvent` that type names."""
    kind = event.get("type")
    assert name is None or name == kind, f"event line {name!r} for an event of type {kind!r}"
    variants = stream_event_schemas()
    assert kind in variants, f"the spec defines no stream event {kind!r}"
    assert_conforms(variants[kind], event)


def strict_errors(model: Any, instance: Any) -> list[str]:
    """Every way `instance` breaks an anthropic SDK type read strictly: pydantic's strict
    validation of the JSON, every required field present (the SDK's models fill in missing ones when
    built with `construct`, so required-ness is checked against `model_fields`), and no key
    the type does not define, at the top level and in the variant a union picks."""
    errors: list[str] = []
    try:
        parsed = TypeAdapter(model).validate_json(json.dumps(instance), strict=True)
    except Exception as exc:
        return [str(exc)[:2000]]
    if isinstance(parsed, BaseModel) and isinstance(instance, dict):
        fields = type(parsed).model_fields
        aliases = {info.alias or name for name, info in fields.items()}
        for name, info in fields.items():
            if info.is_required() and (info.alias or name) not in instance:
                errors.append(f"{type(parsed).__name__}: required field {name!r} is absent")
        errors.extend(
            f"{type(parsed).__name__}: key {key!r} is not defined"
            for key in instance
            if key not in aliases
        )
    return errors


def assert_strict(model: Any, instance: Any) -> None:
    errors = strict_errors(model, instance)
    assert not errors, f"not a {getattr(model, '__name__', model)}:\n" + "\n".join(errors)


def sse_events(text: str) -> Iterable[tuple[str | None, Any]]:
    """An SSE body as (event name or None, decoded data) pairs; `[DONE]` stays a string."""
    for frame in text.split("\n\n"):
        name, data = None, None
        for line in frame.splitlines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data = line.removeprefix("data:").strip()
        if data is None:
            continue
        yield name, data if data == "[DONE]" else json.loads(data)
