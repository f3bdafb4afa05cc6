"""An upstream that speaks Anthropic's Messages API wire format, with fault injection.

`POST /v1/messages` checks `x-api-key` and `anthropic-version`, validates the body the way
the real API does (`max_tokens` required and within the model's output limit, no "system"
role inside `messages`), answers a `message` object or the SSE event sequence
(message_start, content_block_start, content_block_delta per word, content_block_stop,
message_delta, message_stop), and records every request it received. Token counts are one
per word of text, so tests can assert exact numbers and costs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from devstack.doubles.base import RecordedRequest, UpstreamDouble

# The error `type` Anthropic sends with each HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# The most output tokens each model accepts as `max_tokens`; Anthropic answers 400 above it.
MAX_OUTPUT_TOKENS = {
    "claude-3-haiku-20240307": 4096,
    "claude-3-sonnet-20240229": 4096,
    "claude-3-opus-20240229": 4096,
}


@dataclass
class Fault:
    """What the next matching request gets instead of a normal answer."""

    status: int = 500
    message: str = "upstream failure"
    error_type: str | None = None  # defaults to Anthropic's type for `status`
    retry_after: str | None = None
    delay_s: float = 0.0
    malformed: bool = False
    cut_stream: bool = False  # drop the connection halfway through the text deltas
    error_event: bool = False  # send an `event: error` halfway through the stream


@dataclass(kw_only=True)
class AnthropicUpstream(UpstreamDouble[Fault]):
    api_key: str
    reply: str = "Hello from the Anthropic double."

    @property
    def output_tokens(self) -> int:
        return len(self.reply.split())

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/messages")
        async def messages(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return _error(400, "invalid_request_error", "There was an issue with the body.")
            self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
            if request.headers.get("x-api-key") != self.api_key:
                return _error(401, "authentication_error", "invalid x-api-key")
            if not request.headers.get("anthropic-version"):
                return _error(400, "invalid_request_error", "anthropic-version: header is required")
            problem = _invalid_body(body)
            if problem:
                return _error(400, "invalid_request_error", problem)
            fault = self.next_fault()
            if fault and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault and fault.malformed:
                return Response("{not json", media_type="application/json")
            if fault and not (fault.cut_stream or fault.error_event):
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                error_type = fault.error_type or ERROR_TYPES.get(fault.status, "api_error")
                return _error(fault.status, error_type, fault.message, headers)
            input_tokens = count_input_tokens(body)
            message_id = f"msg_{uuid.uuid4().hex[:24]}"
            if body.get("stream"):
                return StreamingResponse(
                    self._events(message_id, body["model"], input_tokens, fault),
                    media_type="text/event-stream",
                    headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
                )
            return JSONResponse(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": self.reply}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": self.output_tokens},
                },
                headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
            )

        return api

    async def _events(
        self, message_id: str, model: str, input_tokens: int, fault: Fault | None
    ) -> AsyncIterator[bytes]:
        words = self.reply.split()

        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        yield event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
        )
        yield event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield event("ping", {"type": "ping"})
        for index, word in enumerate(words):
            if fault and index == len(words) // 2:
                if fault.cut_stream:
                    raise ConnectionResetError("stream cut by fault injection")
                error_type = fault.error_type or ERROR_TYPES.get(fault.status, "api_error")
                yield event(
                    "error",
                    {"type": "error", "error": {"type": error_type, "message": fault.message}},
                )
                return
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word if index == 0 else f" {word}"},
                },
            )
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        )
        yield event("message_stop", {"type": "message_stop"})


def count_input_tokens(body: dict[str, Any]) -> int:
    """A deterministic stand-in for a tokenizer: one token per word of text, `system` included."""
    total = len(_text(body.get("system")).split())
    for message in body.get("messages", []):
        total += len(_text(message.get("content")).split())
    return total


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content or "")


def _invalid_body(body: Any) -> str | None:
    """The checks Anthropic makes that an OpenAI-shaped body would fail."""
    if not isinstance(body, dict):
        return "body: Input should be an object"
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return "max_tokens: Input should be a positive integer"
    limit = MAX_OUTPUT_TOKENS.get(str(body["model"]))
    if limit is not None and body["max_tokens"] > limit:
        return (
            f"max_tokens: {body['max_tokens']} > {limit}, which is the maximum allowed number "
            f"of output tokens for {body['model']}"
        )
    if not isinstance(body["messages"], list) or not body["messages"]:
        return "messages: at least one message is required"
    for index, message in enumerate(body["messages"]):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return (
                f'messages.{index}.role: Unexpected role "{role}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
    return None


def _error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)
