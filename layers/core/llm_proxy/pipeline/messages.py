"""Anthropic's Messages API over the chat path, for agents built on the Anthropic SDK.

A `/v1/messages` request is translated to OpenAI's chat format with litellm's adapter, routed
and metered like any chat completion (so every deployment, not only Anthropic's, can answer),
and the answer is translated back: a message object, or Anthropic's SSE events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from litellm.llms.anthropic.messages.adapters.transformation import AnthropicAdapter

from llm_proxy.errors import INVALID_MESSAGES_REQUEST, ProxyError, anthropic_body
from llm_proxy.pipeline.anthropic_native import NativeParts, native_parts
from llm_proxy.pipeline.billed_input import count_chat_input

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest
    from llm_proxy.pipeline.streams import MeteredStream

_ADAPTER = AnthropicAdapter()


def to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    try:
        translated = _ADAPTER.translate_completion_input_params(dict(body))
    except (ValueError, TypeError, KeyError) as exc:
        raise INVALID_MESSAGES_REQUEST(
            f"The Messages request cannot be translated: {exc}"
        ) from None
    if translated is None:
        raise INVALID_MESSAGES_REQUEST("The Messages request cannot be translated.")
    chat = dict(translated)
    chat["model"] = body.get("model")
    return chat


def translate_message(
    sent: dict[str, Any], headers: Mapping[str, str]
) -> tuple[dict[str, Any], NativeParts]:
    """A Messages request as a chat request, and what only Anthropic deployments get as sent."""
    return to_chat_request(sent), native_parts(headers, sent)


def translate_count(
    sent: dict[str, Any], headers: Mapping[str, str]
) -> tuple[dict[str, Any], None]:
    """A count_tokens request as the chat request its message would be."""
    return to_chat_request({**sent, "max_tokens": 1}), None


def message_id(chat_id: str | None) -> str:
    """Anthropic's `msg_` id for a chat completion's id."""
    plain = str(chat_id or "").removeprefix("chatcmpl-").removeprefix("msg_")
    suffix = plain.replace("-", "") or uuid.uuid4().hex
    return f"msg_{suffix}"


def to_message(response: Any, model: str) -> dict[str, Any]:
    message = dict(_ADAPTER.translate_completion_output_params(response) or {})
    message["model"] = model
    message["id"] = message_id(getattr(response, "id", None))
    return message


def message_answer(response: Any, request: GatewayRequest) -> Any:
    return to_message(response, str((request.sent or {}).get("model")))


def count_answer(response: Any, request: GatewayRequest) -> Any:
    """The anthropic SDK's `messages.count_tokens`: counted by litellm's tokenizer for the
    model; nothing is called and nothing is spent."""
    return {"input_tokens": count_chat_input(request.body, request.model)}


def error_event(error: ProxyError) -> bytes:
    return f"event: error\ndata: {json.dumps(anthropic_body(error))}\n\n".encode()


async def message_events(stream: MeteredStream, request: GatewayRequest) -> AsyncIterator[bytes]:
    """Anthropic's event sequence (message_start ... message_stop) from a metered chat stream;
    `message_start` carries the `msg_` id and the prompt's tokens: the provider's where it
    reported them as its stream began (Anthropic), else counted by the gateway."""
    events = _ADAPTER.translate_completion_output_params_streaming(
        stream.items(), model=stream.model
    )

    def count_input() -> int:
        return count_chat_input(request.body, request.model)

    try:
        async for event in events:  # type: ignore[union-attr]
            raw = event if isinstance(event, bytes) else str(event).encode()
            if raw.startswith(b"event: message_start"):
                raw = _started(raw, prompt_usage(stream.opening_usage, count_input))
            yield raw
    except ProxyError as error:
        yield error_event(error)


def prompt_usage(usage: Any, count_input: Callable[[], int]) -> dict[str, int]:
    """Anthropic's prompt counts from a chat usage (whose prompt tokens include the cache's
    reads and writes), or the gateway's own count without one."""
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    if not prompt:
        return {"input_tokens": count_input()}
    read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
    written = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    return {
        "input_tokens": max(prompt - read - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def _started(raw: bytes, prompt: dict[str, int]) -> bytes:
    head, _, data = raw.decode().partition("data: ")
    event = json.loads(data)
    message = event.get("message") or {}
    message["id"] = message_id(message.get("id"))
    message.setdefault("usage", {}).update(prompt)
    event["message"] = message
    return f"{head}data: {json.dumps(event)}\n\n".encode()
