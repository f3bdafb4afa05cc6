"""Anthropic's Messages API over the chat path, for agents built on the Anthropic SDK.

A `/v1/messages` request is translated to OpenAI's chat format with litellm's adapter, routed
and metered like any chat completion (so every deployment, not only Anthropic's, can answer),
and the answer is translated back: a message object, or Anthropic's SSE events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from litellm.llms.anthropic.messages.adapters.transformation import AnthropicAdapter

from llm_proxy.errors import ProxyError, invalid_request

if TYPE_CHECKING:
    from llm_proxy.pipeline.streams import ChatStream

_ADAPTER = AnthropicAdapter()


def to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    try:
        translated = _ADAPTER.translate_completion_input_params(dict(body))
    except (ValueError, TypeError, KeyError) as exc:
        raise invalid_request(
            f"The Messages request cannot be translated: {exc}", code="invalid_messages_request"
        ) from None
    if translated is None:
        raise invalid_request(
            "The Messages request cannot be translated.", code="invalid_messages_request"
        )
    chat = dict(translated)
    chat["model"] = body.get("model")
    return chat


def to_message(response: Any, model: str) -> dict[str, Any]:
    message = dict(_ADAPTER.translate_completion_output_params(response) or {})
    message["model"] = model
    return message


def error_event(error: ProxyError) -> bytes:
    body = {"type": "error", "error": {"type": error.error_type, "message": error.message}}
    return f"event: error\ndata: {json.dumps(body)}\n\n".encode()


async def message_events(stream: ChatStream) -> AsyncIterator[bytes]:
    """Anthropic's event sequence (message_start ... message_stop) from a metered chat stream."""
    events = _ADAPTER.translate_completion_output_params_streaming(
        stream.chunks(), model=stream.model
    )
    try:
        async for event in events:  # type: ignore[union-attr]
            yield event if isinstance(event, bytes) else str(event).encode()
    except ProxyError as error:
        yield error_event(error)
