"""Metering and budgets hold on every API and every ending: the findings of the second
hostile-client review, each replayed against a served gateway (moto for AWS, the OpenAI-format
double upstream) and asserting the secure behaviour.

One accounting rule: whatever the endpoint and however a stream ends, usage is metered for
what the provider produced. One reservation rule: everything the provider bills as input plus
the longest answer the request allows, at the dearest deployment it may reach."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import serving
from tests.support.configs import MASTER_KEY_FROM_SECRET, deployment, gateway_config, openai_double
from tests.support.gateway_http import new_key, post
from tests.support.stack import PROVIDER_KEYS, usage_item

INPUT_PRICE, OUTPUT_PRICE = 0.001, 0.002
CONFIG = gateway_config(
    openai_double(
        "priced",
        "openai/house-model",
        input_cost_per_token=INPUT_PRICE,
        output_cost_per_token=OUTPUT_PRICE,
        model_info={"max_output_tokens": 1000},
    ),
    # No price anywhere: worth nothing alone, but a request that may fall back to "priced"
    # is reserved at its price.
    openai_double("unpriced", "openai/unpriced-model"),
    router_settings={"num_retries": 0, "cooldown_time": 0},
    general_settings=MASTER_KEY_FROM_SECRET,
)
QUESTION = [{"role": "user", "content": "Say hi"}]
# About 5,000 tokens of definitions: $5 of input at the priced model's price.
LONG_TEXT = "word " * 5000


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


@pytest.fixture
def double(upstream: OpenAIUpstream) -> Iterator[OpenAIUpstream]:
    # A longer answer than the double's own, so that a cut stream has streamed some of it
    # (the double is reset after each test that uses it: tests/conftest.py).
    upstream.reply = "One two three four five six seven eight nine ten, a whole answer."
    yield upstream


def spend_of(url: str, key: str) -> float:
    response = httpx.get(f"{url}/key/info", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, response.text
    return float(response.json()["info"]["spend"])


def refused_as(response: httpx.Response, code: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def hang_up_before_completed(url: str, key: str, body: dict[str, Any]) -> httpx.Response:
    """Read a Responses stream up to its last output event and hang up before
    `response.completed`; the response (its id in `x-request-id`)."""
    with httpx.stream(
        "POST",
        f"{url}/v1/responses",
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        if response.status_code != 200:
            response.read()
            return response
        for line in response.iter_lines():
            if line == "event: response.output_item.done":
                break
    return response


# -- High: a Responses stream hung up before response.completed was free ----------------------


def test_a_responses_stream_cut_before_completed_is_charged(
    url: str, double: OpenAIUpstream, aws: dict[str, str]
) -> None:
    double.chunk_delay_s = 2.0  # the provider's response.completed comes late
    key = new_key(url, max_budget=0.10)
    body = {"model": "priced", "input": "Say hi", "max_output_tokens": 30}
    cut = hang_up_before_completed(url, key, body)
    assert cut.status_code == 200
    item = usage_item(aws["UsageTable"], cut.headers["x-request-id"], timeout_s=10)
    assert item["status"] == 499
    assert int(item["prompt_tokens"]) > 0 and int(item["completion_tokens"]) > 5
    expected = int(item["prompt_tokens"]) * INPUT_PRICE + int(item["completion_tokens"]) * (
        OUTPUT_PRICE
    )
    assert float(item["cost_usd"]) == pytest.approx(expected)
    assert spend_of(url, key) == pytest.approx(expected)


def test_cut_responses_streams_cannot_outrun_a_budget(url: str, double: OpenAIUpstream) -> None:
    double.chunk_delay_s = 1.0
    key = new_key(url, max_budget=0.10)
    body = {"model": "priced", "input": "Say hi", "max_output_tokens": 30}
    served = 0
    for _ in range(8):
        cut = hang_up_before_completed(url, key, body)
        if cut.status_code != 200:
            # What is left of the budget no longer covers the request's worst case.
            refused_as(cut, "request_exceeds_limit")
            break
        served += 1
    # Each cut answer is charged (its prompt and some 15 output tokens) and reserved at its
    # worst case ($0.06 of output): the budget runs out after a few, not after all of them.
    assert 1 <= served < 8
    assert 0.03 < spend_of(url, key) <= 0.10


# -- High: /v1/responses reserved no output ------------------------------------------------------


def test_responses_reserve_max_output_tokens_or_the_models_longest_answer(
    url: str, double: OpenAIUpstream
) -> None:
    key = new_key(url, max_budget=0.05)
    big = post(
        url, "/v1/responses", {"model": "priced", "input": "hi", "max_output_tokens": 500}, key
    )
    refused_as(big, "request_exceeds_limit")
    # No max_output_tokens: the model's longest answer, 1,000 tokens ($2).
    unbounded = post(url, "/v1/responses", {"model": "priced", "input": "hi"}, key)
    refused_as(unbounded, "request_exceeds_limit")
    assert double.requests == []
    bounded = post(
        url, "/v1/responses", {"model": "priced", "input": "hi", "max_output_tokens": 16}, key
    )
    assert bounded.status_code == 200, bounded.text


def test_parallel_responses_stay_within_the_budget(url: str, double: OpenAIUpstream) -> None:
    double.chunk_delay_s = 0.3
    budget = 0.20
    key = new_key(url, max_budget=budget)
    body = {"model": "priced", "input": "Say hi", "max_output_tokens": 60, "stream": True}

    def one(_: int) -> int:
        with httpx.stream(
            "POST",
            f"{url}/v1/responses",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as response:
            response.read()
            return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(8)))
    assert 200 in statuses and set(statuses) <= {200, 400, 429}
    assert spend_of(url, key) <= budget


# -- Medium: fallbacks, tool definitions and instructions in the reservation -------------------


def test_a_messages_fallback_is_reserved_at_its_price(url: str, double: OpenAIUpstream) -> None:
    key = new_key(url, max_budget=0.05)
    body = {
        "model": "unpriced",
        "max_tokens": 1000,
        "messages": QUESTION,
        "fallbacks": ["priced"],
    }
    refused_as(post(url, "/v1/messages", body, key), "request_exceeds_limit")
    assert double.requests == []
    # Without the fallback the unpriced model costs nothing and is served.
    del body["fallbacks"]
    assert post(url, "/v1/messages", body, key).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {
                "messages": QUESTION,
                "max_tokens": 5,
                "tools": [
                    {"type": "function", "function": {"name": "f", "description": LONG_TEXT}}
                ],
            },
        ),
        (
            "/v1/messages",
            {
                "messages": QUESTION,
                "max_tokens": 5,
                "tools": [
                    {"name": "f", "description": LONG_TEXT, "input_schema": {"type": "object"}}
                ],
            },
        ),
        ("/v1/messages", {"messages": QUESTION, "max_tokens": 5, "system": LONG_TEXT}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 16, "instructions": LONG_TEXT}),
        (
            "/v1/responses",
            {
                "input": "hi",
                "max_output_tokens": 16,
                "tools": [{"type": "function", "name": "f", "description": LONG_TEXT}],
            },
        ),
    ],
    ids=[
        "chat-tools",
        "messages-tools",
        "messages-system",
        "responses-instructions",
        "responses-tools",
    ],
)
def test_what_the_provider_bills_as_input_is_reserved(
    url: str, double: OpenAIUpstream, path: str, body: dict[str, Any]
) -> None:
    key = new_key(url, max_budget=0.50)
    refused_as(post(url, path, {"model": "priced", **body}, key), "request_exceeds_limit")
    assert double.requests == []


# -- Low: count_tokens ignored rpm and wrote no usage --------------------------------------------


def test_count_tokens_counts_against_rpm_and_is_metered(
    url: str, double: OpenAIUpstream, aws: dict[str, str]
) -> None:
    key = new_key(url, rpm_limit=2)
    body = {"model": "priced", "messages": QUESTION}
    counted = [post(url, "/v1/messages/count_tokens", body, key) for _ in range(3)]
    assert [response.status_code for response in counted] == [200, 200, 429]
    assert counted[2].json()["type"] == "error"  # Anthropic's envelope
    item = usage_item(aws["UsageTable"], counted[0].headers["x-request-id"])
    assert item["status"] == 200 and float(item["cost_usd"]) == 0.0
    assert double.requests == []


# -- Medium: paid server tools were reserved at nothing ------------------------------------------


def test_the_searches_a_request_allows_are_reserved(gateway_for: Callable[..., str]) -> None:
    """50 web searches at $0.01 may cost $0.50: more than a $0.10 budget, refused before the
    provider is called."""
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as anthropic:
        search = {"server_tools": ["web_search"], "search_context_cost_per_query": 0.01}
        url = gateway_for(
            gateway_config(
                deployment(
                    "claude-search",
                    "anthropic/claude-3-haiku-20240307",
                    model_info=search,
                    api_base=anthropic.base_url,
                    api_key="os.environ/ANTHROPIC_API_KEY",
                ),
                general_settings=MASTER_KEY_FROM_SECRET,
            )
        )
        key = new_key(url, max_budget=0.10)
        tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 50}
        body = {"model": "claude-search", "max_tokens": 64, "messages": QUESTION, "tools": [tool]}
        refused_as(post(url, "/v1/messages", body, key), "request_exceeds_limit")
        assert anthropic.requests == []
        tool["max_uses"] = 2
        assert post(url, "/v1/messages", body, key).status_code == 200
