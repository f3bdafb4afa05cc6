"""A max_tokens over the model's output limit, as OpenCode, Kilo Code and Cline send it (32000
for gpt-4o, whose limit is 16384): served with the limit by default, on every API, reserved
at the limit; refused where the operator sets LLM_PROXY__OUTPUT_TOKENS_OVER_LIMIT=refuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import NO_RETRIES, gateway_config, openai_double
from tests.support.stack import MASTER_KEY

# gpt-4o's output limit in litellm's model map, and what the agent CLIs ask for.
GPT_4O_LIMIT = 16384
ASKED = 32000
QUESTION = [{"role": "user", "content": "hi"}]
# Each API, with the output-token parameter its body names.
APIS: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat max_tokens": ("/v1/chat/completions", {"messages": QUESTION}, "max_tokens"),
    "chat max_completion_tokens": (
        "/v1/chat/completions",
        {"messages": QUESTION},
        "max_completion_tokens",
    ),
    "messages": ("/v1/messages", {"messages": QUESTION}, "max_tokens"),
    "responses": ("/v1/responses", {"input": "hi"}, "max_output_tokens"),
}


def config() -> str:
    return gateway_config(openai_double("gpt-4o"), router_settings=NO_RETRIES)


@pytest.fixture(scope="module")
def capping(gateway_for: Callable[..., str]) -> str:
    return gateway_for(config())


@pytest.fixture(scope="module")
def refusing(gateway_for: Callable[..., str]) -> str:
    return gateway_for(config(), LLM_PROXY__OUTPUT_TOKENS_OVER_LIMIT="refuse")


def post(url: str, path: str, body: dict[str, Any], key: str = MASTER_KEY) -> httpx.Response:
    return httpx.post(
        f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


@pytest.mark.parametrize("case", list(APIS))
@pytest.mark.parametrize("stream", [False, True])
def test_over_the_limit_is_served_with_the_limit(
    capping: str, upstream: OpenAIUpstream, case: str, stream: bool
) -> None:
    path, body, param = APIS[case]
    reply = post(capping, path, {"model": "gpt-4o", **body, param: ASKED, "stream": stream})

    assert reply.status_code == 200, reply.text
    sent = upstream.requests[-1].body
    # litellm sends chat's max_tokens on as OpenAI's max_completion_tokens where it may.
    asked_for = {name: sent[name] for name in sent if name.startswith("max_")}
    assert set(asked_for.values()) == {GPT_4O_LIMIT}, asked_for


def test_within_the_limit_is_left_as_sent(capping: str, upstream: OpenAIUpstream) -> None:
    reply = post(
        capping,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": QUESTION, "max_tokens": 300},
    )
    assert reply.status_code == 200
    sent = upstream.requests[-1].body
    assert {sent[name] for name in sent if name.startswith("max_")} == {300}


@pytest.mark.parametrize("case", list(APIS))
def test_the_operator_may_refuse_instead(
    refusing: str, upstream: OpenAIUpstream, case: str
) -> None:
    path, body, param = APIS[case]
    reply = post(refusing, path, {"model": "gpt-4o", **body, param: ASKED})

    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "max_tokens_too_large"
    assert error["param"] == param
    assert error["message"] == (
        f"'{param}' is {ASKED}, more than the model's limit of {GPT_4O_LIMIT} tokens."
    )
    assert upstream.requests == []


def test_the_reservation_is_the_capped_answer(capping: str, upstream: OpenAIUpstream) -> None:
    """gpt-4o's output is $10 per million tokens: 32000 would be $0.32, over a $0.25 budget;
    capped to 16384 it is $0.16, and the request is served."""
    made = httpx.post(
        f"{capping}/key/generate",
        json={"models": ["gpt-4o"], "max_budget": 0.25},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert made.status_code == 200, made.text
    body = {"model": "gpt-4o", "messages": QUESTION, "max_tokens": ASKED}

    reply = post(capping, "/v1/chat/completions", body, key=made.json()["key"])

    assert reply.status_code == 200, reply.text
    assert upstream.requests[-1].body.get("max_tokens", GPT_4O_LIMIT) == GPT_4O_LIMIT
