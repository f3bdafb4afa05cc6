"""POST /v1/messages in Anthropic's format, in and out, with the official anthropic SDK as
the client: any configured deployment answers (here the OpenAI-format double and the mock)."""

from __future__ import annotations

import anthropic
import pytest

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY, usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]


@pytest.fixture
def client(gateway_url: str) -> anthropic.Anthropic:
    # The SDK sends the key as `x-api-key`, which the gateway accepts like a Bearer key.
    return anthropic.Anthropic(base_url=gateway_url, api_key=MASTER_KEY, max_retries=0)


def test_message_in_anthropic_format_is_routed_and_metered(
    client: anthropic.Anthropic, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    raw = client.messages.with_raw_response.create(
        model="priced",
        max_tokens=64,
        system="Answer in one line.",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "priced"
    assert message.content[0].type == "text"
    assert message.content[0].text == upstream.reply
    assert message.stop_reason == "end_turn"
    # "Answer in one line." (4 words + 1) and the user message (5 words + 1).
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 5)

    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body["messages"][0] == {"role": "system", "content": "Answer in one line."}
    assert sent.body["max_tokens"] == 64

    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["endpoint"] == "/v1/messages"
    assert (item["prompt_tokens"], item["completion_tokens"]) == (11, 5)
    assert float(item["cost_usd"]) == pytest.approx(11 * 0.001 + 5 * 0.002)


def test_streamed_message_is_anthropic_events(
    client: anthropic.Anthropic, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    with client.messages.stream(
        model="gpt-3.5-turbo",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    assert "".join(block.text for block in final.content if block.type == "text") == (
        upstream.reply
    )
    assert final.usage.output_tokens == 5
    item = usage_item(aws["UsageTable"], request_id)
    assert item["stream"] is True and item["completion_tokens"] == 5


def test_messages_errors_use_anthropics_envelope(
    client: anthropic.Anthropic, upstream: OpenAIUpstream
) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-9", max_tokens=8, messages=MESSAGES)  # type: ignore[arg-type]
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert "Available models" in missing.value.body["error"]["message"]  # type: ignore[index]

    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="priced",
            max_tokens=8,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"api_base": "http://127.0.0.1:9"},
        )
    assert refused.value.body["error"]["code"] == "unsupported_parameter"  # type: ignore[index]

    bad_key = anthropic.Anthropic(base_url=client.base_url, api_key="sk-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad_key.messages.create(model="priced", max_tokens=8, messages=MESSAGES)  # type: ignore[arg-type]

    upstream.fail_next(Fault(status=500))
    with pytest.raises(anthropic.APIStatusError) as failed:
        client.messages.create(model="priced", max_tokens=8, messages=MESSAGES)  # type: ignore[arg-type]
    assert failed.value.status_code == 502


def test_missing_max_tokens_is_400_naming_the_field(gateway_url: str) -> None:
    import httpx

    response = httpx.post(
        f"{gateway_url}/v1/messages",
        headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
        json={"model": "priced", "messages": MESSAGES},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
