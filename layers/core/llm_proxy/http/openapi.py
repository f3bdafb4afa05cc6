"""What the OpenAPI schema documents beyond the routes: every error in OpenAI's shape, streams
as Server-Sent Events, and no FastAPI 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from llm_proxy.http.schemas import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request: the message and `param` name the field",
        401: "Missing, unknown, expired or blocked key",
        403: "The key may not use this model, or the route needs the master key",
        404: "Unknown model or route",
        413: "Body too large",
        429: "Rate or budget limit, with Retry-After (and x-ratelimit-* for rate limits)",
        502: "Provider error",
        503: "A dependency or the gateway's configuration is unavailable",
        504: "Provider timeout",
    }.items()
}

# With `"stream": true` the answer is Server-Sent Events instead of one JSON body.
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["data"],
}
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer; with `stream: true`, Server-Sent Events",
        "content": {"application/json": {}, "text/event-stream": {"schema": SSE_EVENT}},
    }
}


def openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """Validation failures are 400 in OpenAI's shape here, never FastAPI's 422."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema
