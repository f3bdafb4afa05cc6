"""Requests are checked as strictly as the spec types them. The hostile values are derived from
OpenAI's OpenAPI file (`tests/fixtures/specs/`): for each top-level parameter of
`CreateChatCompletionRequest` and `CreateResponse` that the gateway accepts and the spec types
as a number, an integer, a boolean or an enum, a value of the wrong JSON type, each side of its
range and a value outside its enum is refused with a 400 in OpenAI's shape that names the
parameter; a value the spec allows still passes. Anthropic's Messages API refuses in its own
envelope."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from anthropic.types import ErrorResponse as AnthropicError

from tests.support.specs import assert_conforms, assert_strict, openai_spec
from tests.support.stack import MASTER_KEY

# The default config's mock deployment: every valid request is answered.
MODEL = "demo"
MESSAGES = [{"role": "user", "content": "Say hi"}]
BASE = {
    "/v1/chat/completions": {"model": MODEL, "messages": MESSAGES},
    "/v1/responses": {"model": MODEL, "input": "Say hi"},
}
SCHEMAS = {"/v1/chat/completions": "CreateChatCompletionRequest", "/v1/responses": "CreateResponse"}
# Parameters the spec types simply that the gateway takes but this test leaves out: streams
# answer differently, and `model` is checked against the config.
LEFT_OUT = {"model", "stream"}
WRONG_TYPES: dict[str, list[Any]] = {
    "number": ["1", True, [1]],
    "integer": [1.5, "3", False],
    "boolean": ["true", 1, None],
    "string": [5, ["x"]],
}


def properties(schema: str) -> dict[str, Any]:
    """A request schema's top-level properties, through its allOf."""
    schemas = openai_spec()["components"]["schemas"]
    found: dict[str, Any] = {}

    def visit(node: dict[str, Any]) -> None:
        if "$ref" in node:
            visit(schemas[node["$ref"].rsplit("/", 1)[-1]])
        for part in node.get("allOf", []):
            visit(part)
        found.update(node.get("properties", {}))

    visit(schemas[schema])
    return found


def simple(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A property's schema where it is one scalar type (nullable or not), else None."""
    schemas = openai_spec()["components"]["schemas"]
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    if len(options) != 1:
        return None
    option = dict(options[0])
    kinds = option.get("type")
    kinds = [k for k in kinds if k != "null"] if isinstance(kinds, list) else [kinds]
    if len(kinds) != 1 or kinds[0] not in WRONG_TYPES:
        return None
    if kinds[0] == "string" and "enum" not in option:
        return None
    return {**option, "type": kinds[0], "nullable": schema is not option and len(kinds) == 1}


def cases() -> tuple[list[Any], list[Any]]:
    """(endpoint, parameter, hostile value) and (endpoint, parameter, valid value)."""
    hostile, valid = [], []
    for path, schema in SCHEMAS.items():
        for name, prop in sorted(properties(schema).items()):
            spec = simple(prop)
            if spec is None or name in LEFT_OUT:
                continue
            kind = spec["type"]
            bad = [v for v in WRONG_TYPES[kind] if v is not None or not spec["nullable"]]
            if kind == "boolean":
                bad = ["true", 1]
            low, high = spec.get("minimum"), spec.get("maximum")
            step = 1 if kind == "integer" else 0.5
            if low is not None:
                bad.append(low - step)
            if high is not None and abs(high) < 2**62:
                bad.append(high + step)
            if kind == "integer" and name == "seed":
                bad.append(2**64)
            if "enum" in spec:
                bad.append("not-a-" + name)
            hostile += [pytest.param(path, name, v, id=f"{path}-{name}-{v!r}") for v in bad]
            good = spec["enum"][0] if "enum" in spec else (low if low is not None else 1)
            if kind == "integer":
                # The spec prints seed's 64-bit bounds as rounded doubles, just past them.
                good = int(good) if abs(good) < 2**62 else 0
            if kind == "boolean":
                good = False
            valid.append(pytest.param(path, name, good, id=f"{path}-{name}-{good!r}"))
    return hostile, valid


HOSTILE, VALID = cases()


def post(url: str, path: str, body: Any, raw: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    content = raw if raw is not None else json.dumps(body)
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=30)


def refusal(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    assert_conforms("ErrorResponse", answer.json())
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_the_spec_gives_cases_for_both_endpoints() -> None:
    names = {(p.values[0], p.values[1]) for p in HOSTILE}
    for expected in [
        ("/v1/chat/completions", "temperature"),
        ("/v1/chat/completions", "n"),
        ("/v1/chat/completions", "logprobs"),
        ("/v1/chat/completions", "reasoning_effort"),
        ("/v1/responses", "temperature"),
        ("/v1/responses", "top_p"),
        ("/v1/responses", "max_output_tokens"),
        ("/v1/responses", "truncation"),
        ("/v1/responses", "store"),
        ("/v1/responses", "parallel_tool_calls"),
    ]:
        assert expected in names


@pytest.mark.parametrize(("path", "name", "value"), HOSTILE)
def test_a_hostile_value_is_refused_naming_the_parameter(
    gateway_url: str, path: str, name: str, value: Any
) -> None:
    error = refusal(post(gateway_url, path, {**BASE[path], name: value}))
    assert error["param"] == name
    assert error["code"] in ("invalid_value", "max_tokens_too_large")


@pytest.mark.parametrize(("path", "name", "value"), VALID)
def test_a_value_the_spec_allows_passes(gateway_url: str, path: str, name: str, value: Any) -> None:
    answer = post(gateway_url, path, {**BASE[path], name: value})
    if answer.status_code == 400:
        # Refused by the allow-list (a parameter the gateway does not take), never its type.
        assert answer.json()["error"]["code"] == "unsupported_parameter", answer.text
    else:
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("path", list(BASE))
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_number_that_is_not_finite_is_refused(gateway_url: str, path: str, number: str) -> None:
    raw = json.dumps(BASE[path])[:-1] + f', "temperature": {number}}}'
    error = refusal(post(gateway_url, path, None, raw=raw))
    assert error["param"] == "temperature"


@pytest.mark.parametrize(
    ("path", "field", "value", "param"),
    [
        ("/v1/responses", "max_output_tokens", 10**30, "max_output_tokens"),
        ("/v1/responses", "include", ["secrets"], "include.0"),
        ("/v1/responses", "reasoning", {"effort": "maximal"}, "reasoning.effort"),
        ("/v1/responses", "text", {"format": {"type": "yaml"}}, "text.format.type"),
        ("/v1/responses", "tool_choice", "sometimes", "tool_choice"),
        ("/v1/responses", "input", 42, "input"),
        ("/v1/responses", "input", ["not an item"], "input"),
        (
            "/v1/responses",
            "stream_options",
            {"include_usage": "yes"},
            "stream_options.include_usage",
        ),
        ("/v1/chat/completions", "n", 10**30, "n"),
        ("/v1/chat/completions", "stop", ["a", "b", "c", "d", "e"], "stop"),
        ("/v1/chat/completions", "tool_choice", "always", "tool_choice"),
        ("/v1/chat/completions", "logit_bias", {"50256": 500}, "logit_bias.50256"),
        ("/v1/chat/completions", "seed", 2**70, "seed"),
        ("/v1/embeddings", "encoding_format", "hex", "encoding_format"),
        ("/v1/embeddings", "dimensions", 1.5, "dimensions"),
    ],
)
def test_nested_and_shaped_values_are_refused_naming_where(
    gateway_url: str, path: str, field: str, value: Any, param: str
) -> None:
    base = BASE.get(path, {"model": "gpt-3.5-turbo", "input": "hi"})
    assert refusal(post(gateway_url, path, {**base, field: value}))["param"] == param


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("max_tokens", "64", "max_tokens"),
        ("max_tokens", 1.5, "max_tokens"),
        ("temperature", 1.5, "temperature"),
        ("stream", "yes", "stream"),
        ("top_k", -1, "top_k"),
        ("tool_choice", {"type": "sometimes"}, "tool_choice.type"),
    ],
)
def test_messages_refuse_in_anthropics_envelope(
    gateway_url: str, field: str, value: Any, param: str
) -> None:
    body = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES, field: value}
    answer = httpx.post(
        f"{gateway_url}/v1/messages",
        json=body,
        headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert_strict(AnthropicError, answer.json())
    assert answer.json()["error"]["param"] == param
