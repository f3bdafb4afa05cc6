"""pipeline.messages: Anthropic's Messages API over the chat path. A message request becomes a
chat request (and what only Anthropic deployments get as sent), a chat answer becomes a
message with a `msg_` id, and the prompt's counts come out in Anthropic's terms."""

from __future__ import annotations

from types import SimpleNamespace

import litellm
import pytest
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.messages import (
    message_id,
    prompt_usage,
    to_message,
    translate_count,
    translate_message,
)


def test_a_message_request_becomes_a_chat_request_and_its_native_parts() -> None:
    sent = {
        "model": "claude",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"name": "read", "input_schema": {"type": "object"}, "defer_loading": True}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    headers = {"anthropic-beta": "a,b", "anthropic-version": "2023-06-01", "x-other": "no"}
    chat, native = translate_message(sent, headers)
    assert chat["model"] == "claude" and chat["max_tokens"] == 64
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][-1]["role"] == "user"
    assert native.headers == {"anthropic-beta": "a,b", "anthropic-version": "2023-06-01"}
    assert native.tools == sent["tools"] and native.thinking == sent["thinking"]


def test_count_tokens_is_translated_as_its_message_would_be() -> None:
    chat, native = translate_count(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}, {}
    )
    assert native is None and chat["max_tokens"] == 1 and chat["model"] == "m"


def test_a_message_that_cannot_be_translated_is_400() -> None:
    with pytest.raises(ProxyError) as refused:
        translate_message({"model": "m", "max_tokens": 1, "messages": "not a list"}, {})
    assert (refused.value.status, refused.value.code) == (400, "invalid_messages_request")


@pytest.mark.parametrize(
    ("chat_id", "expected"),
    [("chatcmpl-abc-123", "msg_abc123"), ("msg_xyz", "msg_xyz"), ("plain", "msg_plain")],
)
def test_message_ids_carry_one_msg_prefix(chat_id: str, expected: str) -> None:
    assert message_id(chat_id) == expected
    assert message_id(None).startswith("msg_") and len(message_id(None)) > 10


def test_a_chat_answer_becomes_a_message_under_the_model_asked_for() -> None:
    answer = litellm.ModelResponse(
        id="chatcmpl-1",
        model="provider-model",
        choices=[{"index": 0, "message": {"role": "assistant", "content": "Hello"}}],
        usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    )
    message = to_message(answer, "claude")
    assert (message["id"], message["model"], message["type"]) == ("msg_1", "claude", "message")
    assert message["content"][0] == {"type": "text", "text": "Hello"}
    assert message["usage"]["input_tokens"] == 5


def test_prompt_counts_in_anthropics_terms() -> None:
    usage = SimpleNamespace(
        prompt_tokens=100, cache_read_input_tokens=60, cache_creation_input_tokens=30
    )
    assert prompt_usage(usage, lambda: 0) == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 60,
    }
    assert prompt_usage(None, lambda: 7) == {"input_tokens": 7}
