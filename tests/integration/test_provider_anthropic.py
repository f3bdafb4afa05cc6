"""Anthropic models through the gateway: the official openai SDK talks to the gateway, litellm
translates to Anthropic's Messages API, and a double on loopback answers in Anthropic's wire
format. Usage items are read back from DynamoDB (moto)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream, Fault
from devstack.server import serving
from tests.support.configs import deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

ANTHROPIC_KEY = PROVIDER_KEYS["ANTHROPIC_API_KEY"]
OPENAI_KEY = PROVIDER_KEYS["OPENAI_API_KEY"]
SYSTEM = "You are a terse assistant."
QUESTION = "Write a haiku about gateways"
MESSAGES: list[Any] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]
INPUT_TOKENS = 10  # the double counts one token per word: 5 in SYSTEM, 5 in QUESTION
MAX_TOKENS = 256
MILLION = Decimal(1_000_000)

# The seed's Anthropic example: model_name -> Anthropic model id.
SEED_MODELS = {
    "claude-3-haiku": "claude-3-haiku-20240307",
    "claude-3-sonnet": "claude-3-sonnet-20240229",
    "claude-3-opus": "claude-3-opus-20240229",
}
# The seed's price table, USD per 1M tokens (input, output).
SEED_PRICES = {
    "claude-3-haiku": (Decimal("0.25"), Decimal("1.25")),
    "claude-3-sonnet": (Decimal("3.00"), Decimal("15.00")),
    "claude-3-opus": (Decimal("15.00"), Decimal("75.00")),
}


def seed_catalogue(api_base: str, *, prefix: str = "anthropic/") -> str:
    """The seed's three Claude entries, pointed at the double; keys from the secret."""
    anthropic = {"api_base": api_base, "api_key": "os.environ/ANTHROPIC_API_KEY"}
    haiku = "anthropic/claude-3-haiku-20240307"
    seed = [
        deployment(name, f"{prefix}{model}", **anthropic) for name, model in SEED_MODELS.items()
    ]
    return gateway_config(
        *seed,
        deployment(
            "claude-3-haiku-wrong-key",
            haiku,
            api_base=api_base,
            api_key="os.environ/OPENAI_API_KEY",
        ),
        deployment(
            "claude-3-haiku-priced",
            haiku,
            **anthropic,
            input_cost_per_token=0.00000025,
            output_cost_per_token=0.00000125,
        ),
        deployment(
            "claude-3-haiku-capped", haiku, **anthropic, model_info={"max_output_tokens": 4096}
        ),
        router_settings={"num_retries": 0, "cooldown_time": 0},
    )


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=ANTHROPIC_KEY)) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh_anthropic(anthropic: AnthropicUpstream) -> None:
    anthropic.reset()


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str], anthropic: AnthropicUpstream) -> str:
    return gateway_for(seed_catalogue(anthropic.base_url))


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=MASTER_KEY, max_retries=0)


def seed_cost(model_name: str, input_tokens: int, output_tokens: int) -> Decimal:
    input_price, output_price = SEED_PRICES[model_name]
    return (input_tokens * input_price + output_tokens * output_price) / MILLION


def text_of(content: Any) -> str:
    """Anthropic accepts `system` and message content as a string or a list of text blocks."""
    if isinstance(content, list):
        return "".join(block["text"] for block in content if block.get("type") == "text")
    return str(content)


def chat(gateway: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json=body,
        timeout=30,
    )


def test_the_double_enforces_anthropic_rules(anthropic: AnthropicUpstream) -> None:
    url = f"{anthropic.base_url}/v1/messages"
    good = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": SEED_MODELS["claude-3-haiku"], "max_tokens": 16, "messages": MESSAGES[1:]}

    wrong_key = httpx.post(url, headers={**good, "x-api-key": OPENAI_KEY}, json=body)
    assert wrong_key.status_code == 401
    assert wrong_key.json()["type"] == "error"
    assert wrong_key.json()["error"]["type"] == "authentication_error"
    no_version = httpx.post(url, headers={"x-api-key": ANTHROPIC_KEY}, json=body)
    assert no_version.status_code == 400
    assert "anthropic-version" in no_version.json()["error"]["message"]
    openai_shaped = httpx.post(url, headers=good, json={**body, "messages": MESSAGES})
    assert openai_shaped.status_code == 400
    too_long = httpx.post(url, headers=good, json={**body, "max_tokens": 128_000})
    assert too_long.status_code == 400
    ok = httpx.post(url, headers=good, json=body)
    assert ok.status_code == 200
    assert ok.json()["usage"] == {"input_tokens": 5, "output_tokens": anthropic.output_tokens}


def test_completion_is_openai_shaped_and_the_upstream_gets_anthropic_messages(
    client: openai.OpenAI, anthropic: AnthropicUpstream, aws: dict[str, str]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude-3-haiku", messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == anthropic.reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        INPUT_TOKENS,
        anthropic.output_tokens,
    )

    [sent] = anthropic.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"]
    assert sent.body["model"] == SEED_MODELS["claude-3-haiku"]
    assert text_of(sent.body["system"]) == SYSTEM
    assert [m["role"] for m in sent.body["messages"]] == ["user"]
    assert text_of(sent.body["messages"][0]["content"]) == QUESTION
    assert sent.body["max_tokens"] == MAX_TOKENS

    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["status"] == 200
    assert item["model_requested"] == "claude-3-haiku"
    assert item["deployment_model"] == "anthropic/claude-3-haiku-20240307"
    assert item["provider"] == "anthropic"
    assert (item["prompt_tokens"], item["completion_tokens"], item["total_tokens"]) == (
        INPUT_TOKENS,
        anthropic.output_tokens,
        INPUT_TOKENS + anthropic.output_tokens,
    )


def test_stream_is_assembled_from_anthropic_events_with_usage_last(
    client: openai.OpenAI, anthropic: AnthropicUpstream, aws: dict[str, str]
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="claude-3-sonnet",
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == anthropic.reply
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        INPUT_TOKENS,
        anthropic.output_tokens,
    )
    [sent] = anthropic.requests
    assert sent.body["stream"] is True
    assert text_of(sent.body["system"]) == SYSTEM

    item = usage_item(aws["UsageTable"], request_id)
    assert item["stream"] is True
    assert item["status"] == 200
    assert item["provider"] == "anthropic"
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        INPUT_TOKENS,
        anthropic.output_tokens,
    )
    assert item["ttft_ms"] > 0


def test_stream_hides_usage_unless_asked(gateway: str, anthropic: AnthropicUpstream) -> None:
    response = chat(
        gateway,
        {"model": "claude-3-opus", "messages": MESSAGES, "max_tokens": 64, "stream": True},
    )
    events = [event for event in response.text.split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)
    assert '"usage"' not in response.text
    assert anthropic.reply.split()[-1] in response.text


@pytest.mark.parametrize(
    ("model_name", "stream"),
    [
        ("claude-3-haiku", False),
        ("claude-3-sonnet", False),
        ("claude-3-opus", False),
        ("claude-3-haiku", True),
    ],
)
def test_usage_cost_follows_the_seed_price_table(
    client: openai.OpenAI,
    anthropic: AnthropicUpstream,
    aws: dict[str, str],
    model_name: str,
    stream: bool,
) -> None:
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model_name, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
        ) as response:
            request_id = response.headers["x-request-id"]
            list(response.parse())
    else:
        raw = client.chat.completions.with_raw_response.create(
            model=model_name, messages=MESSAGES, max_tokens=MAX_TOKENS
        )
        request_id = raw.headers["x-request-id"]
    item = usage_item(aws["UsageTable"], request_id)
    assert item["provider"] == "anthropic"
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        INPUT_TOKENS,
        anthropic.output_tokens,
    )
    assert item["cost_usd"] == seed_cost(model_name, INPUT_TOKENS, anthropic.output_tokens)


@pytest.mark.parametrize("stream", [False, True])
def test_seed_prices_set_on_the_deployment_give_the_exact_cost(
    client: openai.OpenAI, anthropic: AnthropicUpstream, aws: dict[str, str], stream: bool
) -> None:
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="claude-3-haiku-priced", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
        ) as response:
            request_id = response.headers["x-request-id"]
            list(response.parse())
    else:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-3-haiku-priced", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
        request_id = raw.headers["x-request-id"]
    item = usage_item(aws["UsageTable"], request_id)
    assert item["cost_usd"] == seed_cost("claude-3-haiku", INPUT_TOKENS, anthropic.output_tokens)
    assert item["cost_usd"] == Decimal("0.00000875")


def test_the_seed_entries_load_unchanged(
    gateway_for: Callable[..., str], anthropic: AnthropicUpstream
) -> None:
    url = gateway_for(seed_catalogue(anthropic.base_url, prefix=""))
    seed_client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    reply = seed_client.chat.completions.create(
        model="claude-3-haiku", messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    assert reply.choices[0].message.content == anthropic.reply
    assert anthropic.requests[-1].body["model"] == SEED_MODELS["claude-3-haiku"]


def test_a_request_without_max_tokens_is_accepted_upstream(
    client: openai.OpenAI, anthropic: AnthropicUpstream
) -> None:
    reply = client.chat.completions.create(model="claude-3-haiku", messages=MESSAGES)
    assert reply.choices[0].message.content == anthropic.reply
    assert 0 < anthropic.requests[-1].body["max_tokens"] <= 4096


def test_max_output_tokens_in_model_info_becomes_the_default_max_tokens(
    client: openai.OpenAI, anthropic: AnthropicUpstream
) -> None:
    reply = client.chat.completions.create(model="claude-3-haiku-capped", messages=MESSAGES)
    assert reply.choices[0].message.content == anthropic.reply
    assert anthropic.requests[-1].body["max_tokens"] == 4096


def test_invalid_provider_key_is_502_naming_the_model_never_the_key(
    client: openai.OpenAI, anthropic: AnthropicUpstream, aws: dict[str, str]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="claude-3-haiku-wrong-key", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
    assert caught.value.status_code == 502
    text = caught.value.response.text
    assert "claude-3-haiku-wrong-key" in caught.value.body["message"]  # type: ignore[index]
    assert caught.value.body["code"] == "provider_authentication_failed"  # type: ignore[index]
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
    # The double really was handed the wrong key, in Anthropic's header.
    assert anthropic.requests[-1].headers["x-api-key"] == OPENAI_KEY
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["status"] == 502
    assert item["error_code"] == "provider_authentication_failed"


def test_upstream_429_is_429_with_retry_after(
    client: openai.OpenAI, anthropic: AnthropicUpstream
) -> None:
    anthropic.fail_next(Fault(status=429, message="Number of requests exceeded", retry_after="7"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="claude-3-haiku", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
    assert caught.value.status_code == 429
    assert caught.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert "claude-3-haiku" in caught.value.body["message"]  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(anthropic.requests) == 1


def test_upstream_retry_after_value_reaches_the_client(
    client: openai.OpenAI, anthropic: AnthropicUpstream
) -> None:
    anthropic.fail_next(Fault(status=429, message="Number of requests exceeded", retry_after="7"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="claude-3-haiku", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
    assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=529, message="Overloaded"),
        Fault(status=500, message="Internal server error"),
        Fault(malformed=True),
    ],
    ids=["529-overloaded", "500-api-error", "malformed-json"],
)
def test_upstream_failures_are_502_and_metered(
    client: openai.OpenAI, anthropic: AnthropicUpstream, aws: dict[str, str], fault: Fault
) -> None:
    anthropic.fail_next(fault)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="claude-3-opus", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert "claude-3-opus" in caught.value.body["message"]  # type: ignore[index]
    assert ANTHROPIC_KEY not in caught.value.response.text
    assert len(anthropic.requests) == 1
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["status"] == 502
    assert item["error_type"] == "upstream_error"
    assert item["model_requested"] == "claude-3-opus"


@pytest.mark.parametrize(
    "fault",
    [Fault(error_event=True, status=529, message="Overloaded"), Fault(cut_stream=True)],
    ids=["error-event", "connection-cut"],
)
def test_stream_broken_midway_ends_with_an_openai_error_and_is_metered(
    gateway: str, anthropic: AnthropicUpstream, aws: dict[str, str], fault: Fault
) -> None:
    anthropic.fail_next(fault)
    response = chat(
        gateway,
        {"model": "claude-3-haiku", "messages": MESSAGES, "max_tokens": 64, "stream": True},
    )
    events = [event for event in response.text.split("\n\n") if event]
    assert anthropic.reply.split()[0] in events[0]
    assert anthropic.reply.split()[-1] not in response.text
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "upstream_error"
    assert "claude-3-haiku" in error["message"]
    assert "data: [DONE]" not in events
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    assert item["status"] == 502
    assert item["stream"] is True
