"""The findings of a hostile-client review, each replayed against a served gateway (moto for
AWS, the OpenAI-format double upstream) and asserting the secure behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest
from llm_proxy.access.key_record import VirtualKey, token_of

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    OPENAI_DOUBLE_BASE,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.gateway_http import new_key, post
from tests.support.stack import MASTER_KEY, usage_item

CONFIG = gateway_config(
    openai_double(
        "priced",
        "openai/house-model",
        input_cost_per_token=0.001,
        output_cost_per_token=0.002,
        model_info={"max_output_tokens": 1000},
    ),
    openai_double("fail500", "openai/failing-model"),
    openai_double("gpt-4"),
    deployment(
        "keyless",
        "openai/gpt-4",
        api_base=OPENAI_DOUBLE_BASE,
        api_key="os.environ/NOT_SET_ANYWHERE",
    ),
    openai_double("topk", "openai/house-model", model_info={"allowed_params": ["top_k"]}),
    openai_double("small", "openai/small-model"),
    router_settings={
        "num_retries": 0,
        "cooldown_time": 0,
        "fallbacks": [{"fail500": ["gpt-4"]}],
        "context_window_fallbacks": [{"small": ["gpt-4"]}],
    },
    general_settings=MASTER_KEY_FROM_SECRET,
)
QUESTION = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# -- High: a key holder set its own price ------------------------------------------------------


def test_a_caller_cannot_set_its_own_price(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    key = new_key(url, max_budget=0.05)
    body = {
        "model": "priced",
        "messages": QUESTION,
        "max_tokens": 5,
        "input_cost_per_second": 1e-12,
        "output_cost_per_second": 1e-12,
    }
    refused = post(url, "/v1/chat/completions", body, key)
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "unsupported_parameter"
    assert upstream.requests == []
    # Without the override, the request costs what the operator's price says.
    del body["input_cost_per_second"], body["output_cost_per_second"]
    answered = post(url, "/v1/chat/completions", body, key)
    assert answered.status_code == 200, answered.text
    usage = answered.json()["usage"]
    item = usage_item(aws["UsageTable"], answered.headers["x-request-id"])
    expected = usage["prompt_tokens"] * 0.001 + usage["completion_tokens"] * 0.002
    assert float(item["cost_usd"]) == pytest.approx(expected)


# -- High: headers smuggled to the provider ----------------------------------------------------


def test_headers_cannot_be_smuggled_to_the_provider(url: str, upstream: OpenAIUpstream) -> None:
    smuggled = {
        "custom_llm_provider": "openai",
        "extra_headers": {
            "Host": "attacker.example",
            "OpenAI-Organization": "org-evil",
            "Authorization": "Bearer sk-attacker",
        },
    }
    for body in (
        {"provider_specific_header": smuggled},
        {"extra_body": {"provider_specific_header": smuggled}},
        {"extra_headers": {"X-Evil": "1"}},
    ):
        response = post(
            url, "/v1/chat/completions", {"model": "gpt-4", "messages": QUESTION, **body}
        )
        assert response.status_code == 400
        assert error_of(response)["code"] == "unsupported_parameter"
    assert upstream.requests == []


# -- Medium: the reservation ignored n; the first request of a window passed whatever it cost --


def test_the_reservation_counts_every_choice_and_the_first_request(
    url: str, upstream: OpenAIUpstream
) -> None:
    key = new_key(url, max_budget=0.5)
    body = {"model": "priced", "messages": QUESTION}
    many = post(url, "/v1/chat/completions", {**body, "n": 128, "max_tokens": 100}, key)
    assert many.status_code == 400
    assert error_of(many)["code"] == "request_exceeds_limit"
    # No max_tokens: the model's longest answer (1,000 tokens, $2) is reserved, the first
    # request of the window included.
    unbounded = post(url, "/v1/chat/completions", body, key)
    assert unbounded.status_code == 400
    assert upstream.requests == []
    bounded = post(url, "/v1/chat/completions", {**body, "max_tokens": 10}, key)
    assert bounded.status_code == 200


def test_max_tokens_that_is_no_integer_is_a_client_error(
    url: str, upstream: OpenAIUpstream
) -> None:
    key = new_key(url, tpm_limit=100_000)
    body = {"model": "priced", "messages": QUESTION, "max_tokens": 1e40}
    response = post(url, "/v1/chat/completions", body, key)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == "max_tokens"
    assert upstream.requests == []


@pytest.mark.parametrize("max_tokens", [10**30, 1001])
def test_max_tokens_beyond_the_models_limit_is_served_and_reserved_at_the_limit(
    url: str, max_tokens: float, upstream: OpenAIUpstream
) -> None:
    """The model's limit is 1,000 tokens; a tpm limit of 1,100 fits the capped request only
    (docs/keys-and-limits.md#output-limits)."""
    key = new_key(url, tpm_limit=1_100)
    body = {"model": "priced", "messages": QUESTION, "max_tokens": max_tokens}
    response = post(url, "/v1/chat/completions", body, key)
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert {sent[name] for name in sent if name.startswith("max_")} == {1000}


# -- Medium: fallbacks escaped a key's model list ----------------------------------------------


def test_a_fallback_the_key_may_not_use_is_skipped(url: str, upstream: OpenAIUpstream) -> None:
    key = new_key(url, models=["fail500"])
    upstream.fail_next(Fault(status=500), times=1)
    response = post(url, "/v1/chat/completions", {"model": "fail500", "messages": QUESTION}, key)
    assert response.status_code == 403
    assert error_of(response)["code"] == "model_not_allowed"
    assert [r.body["model"] for r in upstream.requests] == ["failing-model"]
    # The master key may use the fallback.
    upstream.fail_next(Fault(status=500), times=1)
    served = post(url, "/v1/chat/completions", {"model": "fail500", "messages": QUESTION})
    assert served.status_code == 200
    assert upstream.requests[-1].body["model"] == "gpt-4"


def test_a_context_window_fallback_the_key_may_not_use_is_skipped(
    url: str, upstream: OpenAIUpstream
) -> None:
    too_long = Fault(status=400, message="This model's maximum context length is 8 tokens.")
    key = new_key(url, models=["small"])
    upstream.fail_next(too_long, times=1)
    response = post(url, "/v1/chat/completions", {"model": "small", "messages": QUESTION}, key)
    # The prompt is too long for the one model the key may use: the client is told so.
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == "context_length_exceeded"
    assert [r.body["model"] for r in upstream.requests] == ["small-model"]
    upstream.fail_next(too_long, times=1)
    served = post(url, "/v1/chat/completions", {"model": "small", "messages": QUESTION})
    assert served.status_code == 200, served.text
    assert upstream.requests[-1].body["model"] == "gpt-4"


def test_a_keys_permission_is_checked_before_anything_about_the_model(url: str) -> None:
    key = new_key(url, models=["priced"])
    response = post(url, "/v1/chat/completions", {"model": "keyless", "messages": QUESTION}, key)
    assert response.status_code == 403
    assert "NOT_SET_ANYWHERE" not in response.text
    unknown = post(url, "/v1/chat/completions", {"model": "no-such", "messages": QUESTION}, key)
    assert unknown.status_code == 403 and "Available models" not in unknown.text


# -- Medium: metering evasion through unbounded names; low: unbounded inputs -------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"metadata": {"agent": "a" * 2048}}, {}),
        ({}, {"x-agent": "b" * 2048}),
        ({}, {"x-agent": "coder; drop"}),
        ({"model": "m" * 300_000}, {}),
        ({"metadata": {"tags": ["t" * 1000] * 500}}, {}),
    ],
)
def test_unbounded_names_are_refused(
    url: str, upstream: OpenAIUpstream, body: dict[str, Any], headers: dict[str, str]
) -> None:
    response = post(
        url, "/v1/chat/completions", {"model": "gpt-4", "messages": QUESTION, **body}, **headers
    )
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 2000  # nothing long is echoed back
    assert upstream.requests == []


@pytest.mark.parametrize(
    "extra",
    [
        '"seed": NaN',
        '"temperature": Infinity',
        '"cache": {"ttl": Infinity}',
        '"tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": NaN}}}]',
    ],
)
def test_nan_and_infinity_are_client_errors(url: str, upstream: OpenAIUpstream, extra: str) -> None:
    text = '{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], ' + extra + "}"
    response = post(url, "/v1/chat/completions", text)
    assert response.status_code == 400, response.text
    assert upstream.requests == []


def test_a_chunked_body_over_the_limit_is_refused(url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-4", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    response = httpx.post(
        f"{url}/v1/chat/completions",
        content=chunks(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_a_small_chunked_body_is_served(url: str, upstream: OpenAIUpstream) -> None:
    body = json.dumps({"model": "gpt-4", "messages": QUESTION, "stream": True}).encode()
    response = httpx.post(
        f"{url}/v1/chat/completions",
        content=iter([body[:10], body[10:]]),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")


def test_litellm_request_debug_cannot_be_turned_on(url: str, upstream: OpenAIUpstream) -> None:
    body = {"model": "gpt-4", "messages": QUESTION, "litellm_request_debug": True}
    assert post(url, "/v1/chat/completions", body).status_code == 400


def test_operator_enabled_parameters_pass_for_their_group_only(
    url: str, upstream: OpenAIUpstream
) -> None:
    enabled = post(url, "/v1/chat/completions", {"model": "topk", "messages": QUESTION, "top_k": 4})
    assert enabled.status_code == 200, enabled.text
    other = post(url, "/v1/chat/completions", {"model": "gpt-4", "messages": QUESTION, "top_k": 4})
    assert other.status_code == 400 and error_of(other)["param"] == "top_k"


# -- A key's agent is its own ------------------------------------------------------------------


def test_a_keys_agent_cannot_be_renamed_by_its_requests(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    coder = new_key(url, agent="coder")
    body = {"model": "gpt-4", "messages": QUESTION, "metadata": {"agent": "ask"}}
    answered = post(url, "/v1/chat/completions", body, coder, **{"x-agent": "debug"})
    assert answered.status_code == 200
    assert usage_item(aws["UsageTable"], answered.headers["x-request-id"])["agent"] == "coder"
    # A key without an agent, and the master key, may name one.
    plain = new_key(url)
    named = post(url, "/v1/chat/completions", body, plain, **{"x-agent": "debug"})
    assert usage_item(aws["UsageTable"], named.headers["x-request-id"])["agent"] == "debug"
    master = post(url, "/v1/chat/completions", body)
    assert usage_item(aws["UsageTable"], master.headers["x-request-id"])["agent"] == "ask"


# -- Low: key management took numbers no table can hold ----------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        '{"max_budget": 1e308}',
        '{"max_budget": Infinity}',
        '{"max_budget": NaN}',
        '{"rpm_limit": 1e40}',
        '{"tpm_limit": 10000000000000000000000}',
        '{"duration": "99999999d"}',
        '{"budget_duration": "99999999999999999999d"}',
        '{"agent": "' + "a" * 100 + '"}',
        '{"metadata": {"blob": "' + "x" * 500_000 + '"}}',
        '{"metadata": {"n": NaN}}',
        '{"model_max_budget": {"gpt-4": {"budget_limit": NaN}}}',
        '{"model_max_budget": {"gpt-4": {"budget_limit": 1e308}}}',
        '{"model_max_budget": {"' + "m" * 300 + '": {"budget_limit": 1}}}',
        '{"model_max_budget": {'
        + ", ".join(f'"m{n}": {{"budget_limit": 1}}' for n in range(51))
        + "}}",
        '{"budget_limits": [{"budget_duration": "1d", "max_budget": Infinity}]}',
        '{"budget_limits": [{"budget_duration": "99999999999999999999d", "max_budget": 1}]}',
        '{"budget_fallbacks": {"gpt-4": ["' + "m" * 300 + '"]}}',
    ],
)
def test_key_management_refuses_unbounded_values(url: str, fields: str) -> None:
    response = post(url, "/key/generate", fields)
    assert response.status_code == 400, response.text[:300]


# -- Low: the schema and docs were public ------------------------------------------------------


def test_the_schema_and_docs_are_off_unless_enabled(gateway_for: Callable[..., str]) -> None:
    closed = gateway_for(CONFIG, LLM_PROXY__OPENAPI="false")
    assert httpx.get(f"{closed}/openapi.json").status_code == 404
    assert httpx.get(f"{closed}/docs").status_code == 404


def test_readiness_shows_no_aws_error_codes(gateway_for: Callable[..., str]) -> None:
    down = gateway_for(CONFIG, LLM_PROXY__USAGE_TABLE="no-such-table")
    response = httpx.get(f"{down}/health/readiness")
    assert response.status_code == 503
    assert response.json()["checks"]["usage_table"] == "unreachable"
    assert "Exception" not in response.text and "Error" not in response.text


def test_a_stored_key_with_an_absurd_budget_does_not_break_requests(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    # Written to the table directly, as a key made before limits were bounded could be.
    raw = "sk-legacy-absurd-budget-0123456789"
    key = VirtualKey(token=token_of(raw), key_name="sk-le...6789", max_budget=1e100)
    boto3.resource("dynamodb").Table(aws["KeysTable"]).put_item(Item=key.to_item())
    body = {"model": "priced", "messages": QUESTION, "max_tokens": 5}
    response = post(url, "/v1/chat/completions", body, raw)
    assert response.status_code == 200, response.text
