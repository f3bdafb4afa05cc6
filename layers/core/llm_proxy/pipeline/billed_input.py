"""What a provider bills as input, counted by the gateway: for the admission's reservation
before the call, for the count APIs, and for a stream that ended without the provider's usage.

Everything the provider is sent counts: the messages and the system prompt, the Responses API's
instructions and input (its stored conversation included), tool definitions, and images at
litellm's default size. litellm would otherwise fetch a client's image URL to measure it, a
request the gateway never makes on a client's behalf."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import litellm
from litellm.responses.litellm_completion_transformation.transformation import (
    LiteLLMCompletionResponsesConfig,
)

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest

# About four characters a token, for content a tokenizer cannot read.
CHARS_PER_TOKEN = 4


def count_chat_input(chat: dict[str, Any], model: str) -> int:
    """A chat request's prompt as litellm counts it for `model`: messages and tool
    definitions."""
    messages = chat.get("messages") or []
    try:
        return int(
            litellm.token_counter(
                model=model,
                messages=messages,
                tools=chat.get("tools") or None,
                use_default_image_token_count=True,
            )
        )
    except Exception:
        return rough_count(messages, chat.get("tools"))


def responses_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses API request as the chat request it becomes (instructions as the system
    message); litellm's translation raises on what it cannot read."""
    config = LiteLLMCompletionResponsesConfig
    messages = config.transform_responses_api_input_to_messages(body.get("input") or [], body)
    tools, _ = config.transform_responses_api_tools_to_chat_completion_tools(body.get("tools"))
    return {"messages": messages, "tools": tools or None}


def count_request_input(request: GatewayRequest, model: str | None = None) -> int:
    """The input tokens a request is billed for, whatever its API, by the tokenizer of
    `model` (the deployment's, where it is known; else the model asked for)."""
    body, model = request.body, model or request.model
    if request.api.name == "embeddings":
        return count_embedding_input(body.get("input"))
    if request.api.conversations:
        try:
            chat = responses_as_chat(body)
        except Exception:
            return rough_count(body.get("input"), body.get("instructions"), body.get("tools"))
        return count_chat_input(chat, model)
    return count_chat_input(body, model)


def count_embedding_input(value: Any) -> int:
    """Texts by the tokenizer; inputs already tokens (lists of integers) one each."""
    inputs = value if isinstance(value, list) and not is_tokens(value) else [value]
    total = 0
    for item in inputs:
        if is_tokens(item):
            total += len(item)
        elif isinstance(item, str):
            total += int(litellm.token_counter(text=item))
        else:
            total += rough_count(item)
    return total


def is_tokens(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, int) for item in value)


def rough_count(*parts: Any) -> int:
    return sum(len(json.dumps(part, default=str)) for part in parts if part) // CHARS_PER_TOKEN
