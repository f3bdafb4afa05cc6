"""Prompt-cache reads and writes metered on every endpoint, JSON and streamed, against doubles
that keep a prompt cache per deployment: the usage item's `prompt_tokens` holds the cache's
reads and writes, `cached_tokens` and `cache_write_tokens` are the provider's, `cost_usd` prices
each part at its own price (a missing cache price is the input price), and `/spend/report`
shows the agent the same cost and prompt tokens as its usage items."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from llm_proxy.accounting.totals import money

from tests.support.agent_sessions import (
    CONTEXT,
    INPUT,
    OUTPUT,
    READ,
    WRITE,
    Doubles,
    config_for,
    served_doubles,
)
from tests.support.gateway_http import post
from tests.support.stack import MASTER_KEY, usage_item


@pytest.fixture(scope="module")
def doubles() -> Iterator[Doubles]:
    with served_doubles() as served:
        yield served


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], doubles: Doubles) -> str:
    return gateway_for(config_for(doubles))


@pytest.fixture(scope="module")
def agent() -> str:
    return f"cache-meter-{uuid.uuid4().hex[:8]}"


def events(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def messages_usage(response: httpx.Response, stream: bool) -> dict[str, int]:
    """(uncached, read, written, completion) as the Messages API told the client."""
    if stream:
        start = next(e for e in events(response) if e["type"] == "message_start")
        delta = [e for e in events(response) if e["type"] == "message_delta"][-1]
        usage = {**start["message"]["usage"], "output_tokens": delta["usage"]["output_tokens"]}
    else:
        usage = response.json()["usage"]
    return {
        "uncached": usage["input_tokens"],
        "read": usage.get("cache_read_input_tokens") or 0,
        "written": usage.get("cache_creation_input_tokens") or 0,
        "completion": usage["output_tokens"],
    }


def openai_usage(response: httpx.Response, stream: bool, api: str) -> dict[str, int]:
    """The same from an OpenAI answer (chat or Responses), whose prompt count holds the reads
    (and, from an Anthropic deployment, the writes)."""
    if not stream:
        usage = response.json()["usage"]
    elif api == "chat":
        usage = next(e["usage"] for e in reversed(events(response)) if e.get("usage"))
    else:
        usage = next(
            e["response"]["usage"] for e in events(response) if e["type"] == "response.completed"
        )
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    read = details.get("cached_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return {
        "uncached": prompt - read - written,
        "read": read,
        "written": written,
        "completion": completion,
    }


def priced(item: dict[str, Any], told: dict[str, int], cache_prices: bool = True) -> Decimal:
    """The item holds what the client was told, at the formula's cost; that cost."""
    read, written = told["read"], told["written"]
    assert item["status"] == 200
    assert item["prompt_tokens"] == told["uncached"] + read + written
    assert (item["cached_tokens"], item["cache_write_tokens"]) == (read, written)
    assert item["completion_tokens"] == told["completion"]
    read_price, write_price = (READ, WRITE) if cache_prices else (INPUT, INPUT)
    expected = (
        told["uncached"] * INPUT
        + read * read_price
        + written * write_price
        + told["completion"] * OUTPUT
    )
    assert Decimal(str(item["cost_usd"])) == pytest.approx(expected, rel=Decimal("1e-9"))
    return Decimal(str(item["cost_usd"]))


def messages_body(model: str, stream: bool, context: str) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "system": [{"type": "text", "text": context, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Is this fine?"}],
    }


def chat_body(model: str, stream: bool, context: str) -> dict[str, Any]:
    system = {"type": "text", "text": context, "cache_control": {"type": "ephemeral"}}
    return {
        "model": model,
        "stream": stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
        "messages": [
            {"role": "system", "content": [system]},
            {"role": "user", "content": "Is this fine?"},
        ],
    }


def responses_body(model: str, stream: bool, context: str) -> dict[str, Any]:
    return {
        "model": model,
        "stream": stream,
        "instructions": context,
        "input": "Is this fine?",
        "store": False,
    }


CASES = [
    # (endpoint, body, model, cache prices of its own)
    ("/v1/messages", messages_body, "claude", True),
    ("/v1/messages", messages_body, "claude-plain", False),
    ("/v1/chat/completions", chat_body, "claude", True),
    ("/v1/chat/completions", chat_body, "codex", True),
    ("/v1/responses", responses_body, "codex", True),
]


def test_cache_reads_and_writes_are_metered_and_priced_on_every_endpoint(
    url: str, doubles: Doubles, aws: dict[str, str], agent: str
) -> None:
    costs, prompts = Decimal(0), 0
    for endpoint, body, model, cache_prices in CASES:
        for stream in (False, True):
            session = uuid.uuid4().hex
            headers = {"x-agent": agent, "x-claude-code-session-id": session}
            # A prompt of its own per case: no case reads what another wrote.
            sent = body(model, stream, f"{session} {CONTEXT}")
            if endpoint != "/v1/messages" and model == "codex":
                sent["prompt_cache_key"] = session
            told = []
            # The same prompt twice in one session: written to the cache, then read from it.
            for _ in range(2):
                response = post(url, endpoint, sent, key=MASTER_KEY, **headers)
                assert response.status_code == 200, response.text
                usage = (
                    messages_usage(response, stream)
                    if endpoint == "/v1/messages"
                    else openai_usage(
                        response, stream, "chat" if "chat" in endpoint else "responses"
                    )
                )
                item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
                costs += priced(item, usage, cache_prices)
                prompts += item["prompt_tokens"]
                told.append(usage)
            case = f"{endpoint} {model} stream={stream}"
            assert told[1]["read"] > 1000, case
            if model.startswith("claude"):
                assert told[0]["written"] > 1000 and told[1]["written"] == 0, case
    day = datetime.now(UTC).date().isoformat()
    report = httpx.get(
        f"{url}/spend/report?start={day}&end={day}",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert report.status_code == 200, report.text
    mine = report.json()["by_agent"][agent]
    assert mine["requests"] == 2 * 2 * len(CASES)
    assert (mine["cost_usd"], mine["prompt_tokens"]) == (money(costs), prompts)
