"""How the doubles answer a request that offers tools: a call to the first tool offered (or the
one a test names), with arguments a client can run, and, once the tool's result is back, a
reply that quotes it, so a test sees the whole round trip reach the model."""

from __future__ import annotations

import json
import uuid
from typing import Any

# The value a generated argument of each JSON Schema type gets.
SAMPLE_VALUES: dict[str, Any] = {
    "string": "Paris",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
}


def arguments_for(schema: Any) -> dict[str, Any]:
    """A value for each required property of a tool's parameters schema."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in schema.get("required") or []:
        kind = (properties.get(name) or {}).get("type", "string")
        kind = kind[0] if isinstance(kind, list) and kind else kind
        arguments[name] = SAMPLE_VALUES.get(str(kind), "Paris")
    return arguments


def chosen_tools(offered: list[dict[str, Any]], wanted: str | None, count: int) -> list[Any]:
    """The tools to call: the one named `wanted`, else the first `count` offered."""
    if wanted is not None:
        return [tool for tool in offered if tool.get("name") == wanted][:1]
    return offered[:count]


def tool_reply(output: Any) -> str:
    return f"The tool said: {output if isinstance(output, str) else json.dumps(output)}"


def call_id(prefix: str = "call") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"
