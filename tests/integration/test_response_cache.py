"""The opt-in response cache in DynamoDB: hits skip the provider, cost nothing, are marked in
the usage item and a header, and can be replayed as a stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import boto3
import httpx
import openai
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    gateway_config,
    openai_double,
)
from tests.support.stack import MASTER_KEY, usage_item

PRICED = openai_double(input_cost_per_token=0.001, output_cost_per_token=0.002)
SEED_FORM = gateway_config(
    PRICED,
    router_settings=NO_RETRIES,
    general_settings={
        **MASTER_KEY_FROM_SECRET,
        "cache": {"type": "redis", "host": "redis", "port": 6379, "ttl": 3600},
    },
)
LITELLM_FORM = gateway_config(
    PRICED,
    router_settings=NO_RETRIES,
    litellm_settings={"cache": True, "cache_params": {"type": "redis", "ttl": 600}},
    general_settings=MASTER_KEY_FROM_SECRET,
)


def fresh_messages() -> list[dict[str, str]]:
    # A question of its own per test, so earlier tests' answers are not in the cache.
    return [{"role": "user", "content": f"Explain caching ({uuid.uuid4().hex})"}]


@pytest.fixture(scope="module", params=["seed", "litellm"])
def url(request: pytest.FixtureRequest, gateway_for: Callable[..., str]) -> str:
    return gateway_for(SEED_FORM if request.param == "seed" else LITELLM_FORM)


def ask(url: str, body: dict[str, object], key: str = MASTER_KEY) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-3.5-turbo", **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_a_repeated_question_is_answered_from_the_cache_at_no_cost(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    messages = fresh_messages()
    first = ask(url, {"messages": messages})
    second = ask(url, {"messages": messages})
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-litellm-cache-hit"] == "false"
    assert second.headers["x-litellm-cache-hit"] == "true"
    assert len(upstream.requests) == 1
    assert second.json()["choices"][0]["message"]["content"] == upstream.reply

    missed = usage_item(aws["UsageTable"], first.headers["x-request-id"])
    hit = usage_item(aws["UsageTable"], second.headers["x-request-id"])
    assert (missed["cache_hit"], missed["cost_usd"] > 0) == (False, True)
    assert (hit["cache_hit"], hit["cost_usd"], hit["status"]) == (True, 0, 200)
    assert hit["completion_tokens"] == missed["completion_tokens"]


def test_the_cache_key_holds_the_callers_key_and_the_parameters(
    url: str, upstream: OpenAIUpstream
) -> None:
    messages = fresh_messages()
    ask(url, {"messages": messages})
    made = httpx.post(
        f"{url}/key/generate", json={}, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ).json()
    assert ask(url, {"messages": messages}, key=made["key"]).headers["x-litellm-cache-hit"] == (
        "false"
    )
    other = ask(url, {"messages": messages, "temperature": 0.1})
    assert other.headers["x-litellm-cache-hit"] == "false"
    assert ask(url, {"messages": messages}).headers["x-litellm-cache-hit"] == "true"
    assert len(upstream.requests) == 3


def test_no_cache_asks_the_provider_and_ttl_sets_the_entrys_lifetime(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    messages = fresh_messages()
    ask(url, {"messages": messages, "cache": {"ttl": 120}})
    entries = boto3.resource("dynamodb").Table(aws["CacheTable"]).scan()["Items"]
    lifetimes = [int(entry["expires_at"]) - time.time() for entry in entries]
    assert any(100 < left <= 120 for left in lifetimes)
    forced = ask(url, {"messages": messages, "cache": {"no-cache": True, "no-store": True}})
    assert forced.headers["x-litellm-cache-hit"] == "false"
    assert len(upstream.requests) == 2


def test_a_stream_is_answered_from_the_cache_as_sse(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    messages = fresh_messages()
    ask(url, {"messages": messages})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-litellm-cache-hit"] == "true"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == upstream.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert len(upstream.requests) == 1
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert (item["cache_hit"], item["cost_usd"], item["stream"]) == (True, 0, True)


def test_a_bad_cache_control_is_a_400(url: str) -> None:
    response = ask(url, {"messages": fresh_messages(), "cache": {"ttl": -5}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "cache.ttl"


def test_the_responses_api_is_cached_too_and_a_hit_streams_and_is_stored(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    question = f"Explain caching ({uuid.uuid4().hex})"
    first = client.responses.with_raw_response.create(model="gpt-3.5-turbo", input=question)
    second = client.responses.with_raw_response.create(model="gpt-3.5-turbo", input=question)
    assert (first.headers["x-litellm-cache-hit"], second.headers["x-litellm-cache-hit"]) == (
        "false",
        "true",
    )
    assert len([r for r in upstream.requests if r.path == "/v1/responses"]) == 1
    answered, cached = first.parse(), second.parse()
    assert cached.output_text == answered.output_text == upstream.reply
    assert cached.id != answered.id  # an answer of its own, stored under its own id
    assert client.responses.retrieve(cached.id).output_text == upstream.reply
    item = usage_item(aws["UsageTable"], second.headers["x-request-id"])
    assert (item["endpoint"], item["cache_hit"], item["cost_usd"]) == ("/v1/responses", True, 0)
    with client.responses.stream(model="gpt-3.5-turbo", input=question) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == upstream.reply
    assert len([r for r in upstream.requests if r.path == "/v1/responses"]) == 1
    # A follow-up with another question is not the cached one.
    follow = client.responses.create(
        model="gpt-3.5-turbo", input="And then?", previous_response_id=cached.id
    )
    assert follow.output_text == upstream.reply
    assert len([r for r in upstream.requests if r.path == "/v1/responses"]) == 2
