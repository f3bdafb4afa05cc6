"""LiteLLM's request-level routing options on every API: `fallbacks` (only models the key may
use, each configured, nothing but the model; priced into the reservation at the dearest
candidate), `num_retries` within the operator's maximum, `timeout` (body or
`x-litellm-timeout`); and LiteLLM's mock testing parameters where the operator allows them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from devstack.server import free_port
from tests.support.configs import NO_RETRIES, OPENAI_KEY, deployment, gateway_config, openai_double
from tests.support.stack import MASTER_KEY, usage_item

QUESTION = [{"role": "user", "content": "hi"}]
# Each API's body, and the model the fallback tests ask for.
APIS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": QUESTION}),
    "messages": ("/v1/messages", {"messages": QUESTION, "max_tokens": 64}),
    "responses": ("/v1/responses", {"input": "hi"}),
    "embeddings": ("/v1/embeddings", {"input": "hi"}),
}


def config() -> str:
    return gateway_config(
        openai_double("gpt-4o-mini"),
        openai_double("gpt-4o"),
        openai_double("text-embedding-3-small"),
        openai_double("text-embedding-3-large"),
        # The openai SDK under litellm retries an embedding's 500 itself: this one is down.
        deployment(
            "embeddings-down",
            "openai/text-embedding-3-small",
            api_base=f"http://127.0.0.1:{free_port()}/v1",
            api_key=OPENAI_KEY,
        ),
        router_settings={**NO_RETRIES, "disable_cooldowns": True},
    )


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(config(), LLM_PROXY__MAX_REQUEST_RETRIES="2")


@pytest.fixture(scope="module")
def testing_gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(config(), LLM_PROXY__MOCK_TESTING_PARAMS="forced")


def post(
    url: str, path: str, body: dict[str, Any], key: str = MASTER_KEY, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=30,
    )


def new_key(url: str, **fields: Any) -> str:
    made = httpx.post(
        f"{url}/key/generate", json=fields, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert made.status_code == 200, made.text
    return str(made.json()["key"])


def error_of(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    return dict(body["error"])


@pytest.mark.parametrize("case", list(APIS))
def test_a_request_falls_back_to_the_models_it_names(
    gateway: str, upstream: OpenAIUpstream, aws: dict[str, str], case: str
) -> None:
    path, body = APIS[case]
    if case == "embeddings":
        primary, backup, called = "embeddings-down", "text-embedding-3-large", []
    else:
        primary, backup, called = "gpt-4o-mini", "gpt-4o", ["gpt-4o-mini"]
        upstream.fail_next(Fault(status=500))
    fallbacks: list[Any] = [{"model": backup}] if case == "messages" else [backup]

    reply = post(gateway, path, {"model": primary, **body, "fallbacks": fallbacks})

    assert reply.status_code == 200, reply.text
    assert [request.body["model"] for request in upstream.requests] == [*called, backup]
    item = usage_item(aws["UsageTable"], reply.headers["x-request-id"])
    assert item["fallbacks"] == 1


def test_anthropics_default_fallbacks_are_the_operators(
    gateway: str, upstream: OpenAIUpstream
) -> None:
    body = {"model": "gpt-4o", **APIS["messages"][1], "fallbacks": "default"}
    reply = post(gateway, "/v1/messages", body)
    assert reply.status_code == 200, reply.text
    assert "fallbacks" not in upstream.requests[-1].body


@pytest.mark.parametrize(
    ("fallbacks", "message"),
    [
        (["no-such-model"], "Fallback model 'no-such-model' is not configured on this gateway."),
        (
            [{"model": "gpt-4o", "api_base": "http://127.0.0.1:9/v1"}],
            "'fallbacks[0].api_base' is not supported: a fallback is called with the request's "
            "own parameters.",
        ),
        ("gpt-4o", "'fallbacks' must be a list of model names"),
        ([7], "'fallbacks[0]' must name a model"),
        (["gpt-4o"] * 6, "'fallbacks' may list at most 5 models."),
    ],
)
def test_fallbacks_name_configured_models_and_nothing_else(
    gateway: str, upstream: OpenAIUpstream, fallbacks: Any, message: str
) -> None:
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "fallbacks": fallbacks}
    reply = post(gateway, "/v1/chat/completions", body)

    assert reply.status_code == 400
    error = error_of(reply)
    assert (error["code"], error["param"]) == ("invalid_value", "fallbacks")
    assert error["message"].startswith(message)
    assert upstream.requests == []


def test_a_key_names_only_fallbacks_it_may_use(gateway: str, upstream: OpenAIUpstream) -> None:
    key = new_key(gateway, models=["gpt-4o-mini"])
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "fallbacks": ["gpt-4o"]}

    reply = post(gateway, "/v1/chat/completions", body, key=key)

    assert reply.status_code == 403
    error = error_of(reply)
    assert (error["code"], error["param"]) == ("model_not_allowed", "fallbacks")
    assert error["message"] == (
        "This key may not use fallback model 'gpt-4o'. Allowed: gpt-4o-mini."
    )
    assert upstream.requests == []


def test_the_reservation_prices_the_dearest_fallback(
    gateway: str, upstream: OpenAIUpstream
) -> None:
    """10,000 output tokens: $0.006 on gpt-4o-mini, $0.10 on gpt-4o; the budget is $0.05."""
    key = new_key(gateway, models=["gpt-4o-mini", "gpt-4o"], max_budget=0.05)
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "max_tokens": 10_000}

    assert post(gateway, "/v1/chat/completions", body, key=key).status_code == 200
    reply = post(gateway, "/v1/chat/completions", {**body, "fallbacks": ["gpt-4o"]}, key=key)

    assert reply.status_code == 400
    assert error_of(reply)["code"] == "request_exceeds_limit"
    assert len(upstream.requests) == 1


def test_num_retries_retries_within_the_operators_maximum(
    gateway: str, upstream: OpenAIUpstream
) -> None:
    body = {"model": "gpt-4o", "messages": QUESTION, "num_retries": 1}
    upstream.fail_next(Fault(status=500))
    reply = post(gateway, "/v1/chat/completions", body)
    assert reply.status_code == 200, reply.text
    assert len(upstream.requests) == 2

    for retries in (3, -1, "1", True, 1.5):
        refused = post(gateway, "/v1/chat/completions", {**body, "num_retries": retries})
        assert refused.status_code == 400, retries
        error = error_of(refused)
        assert (error["param"], error["message"]) == (
            "num_retries",
            "'num_retries' must be an integer from 0 to 2.",
        )


def test_timeout_from_the_body_or_litellms_header(gateway: str, upstream: OpenAIUpstream) -> None:
    body = {"model": "gpt-4o", "messages": QUESTION}
    upstream.fail_next(Fault(delay_s=3))
    reply = post(gateway, "/v1/chat/completions", {**body, "timeout": 0.5})
    assert reply.status_code == 504
    assert error_of(reply)["code"] == "provider_timeout"

    upstream.fail_next(Fault(delay_s=3))
    reply = post(gateway, "/v1/chat/completions", body, **{"x-litellm-timeout": "0.5"})
    assert reply.status_code == 504

    for bad in ("soon", 0, -1, True):
        refused = post(gateway, "/v1/chat/completions", {**body, "timeout": bad})
        assert refused.status_code == 400
        assert error_of(refused)["param"] == "timeout"
    refused = post(gateway, "/v1/chat/completions", body, **{"x-litellm-timeout": "soon"})
    assert refused.status_code == 400
    assert error_of(refused)["param"] == "x-litellm-timeout"


def test_mock_testing_parameters_are_refused_by_default(
    gateway: str, upstream: OpenAIUpstream
) -> None:
    body = {"model": "gpt-4o", "messages": QUESTION, "mock_response": "canned"}
    reply = post(gateway, "/v1/chat/completions", body)
    assert reply.status_code == 400
    assert (error_of(reply)["code"], error_of(reply)["param"]) == (
        "unsupported_parameter",
        "mock_response",
    )
    assert upstream.requests == []


def test_the_operator_may_allow_litellms_mock_testing_parameters(
    testing_gateway: str, upstream: OpenAIUpstream
) -> None:
    body = {"model": "gpt-4o", "messages": QUESTION}
    reply = post(testing_gateway, "/v1/chat/completions", {**body, "mock_response": "canned"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "canned"
    assert upstream.requests == []

    falling = {**body, "mock_testing_fallbacks": True, "fallbacks": ["gpt-4o-mini"]}
    reply = post(testing_gateway, "/v1/chat/completions", falling)
    assert reply.status_code == 200, reply.text
    assert [request.body["model"] for request in upstream.requests] == ["gpt-4o-mini"]

    refused = post(testing_gateway, "/v1/chat/completions", {**body, "mock_response": 7})
    assert refused.status_code == 400
    assert error_of(refused)["message"] == "'mock_response' must be a string."
