"""The official openai SDK against the gateway served by uvicorn, through litellm, to the
OpenAI-format double on loopback; usage items are read back from DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import httpx
import openai
import pytest

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.configs import deployment, gateway_config
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY, WRONG_UPSTREAM_KEY, usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_lists_configured_models(client: openai.OpenAI) -> None:
    models = [model.id for model in client.models.list()]
    assert models == ["gpt-3.5-turbo", "priced", "wrong-key", "keyless", "demo"]


def test_completion_reaches_upstream_with_key_from_secret_and_is_metered(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == upstream.reply
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 5)
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["status"] == 200
    assert item["key_id"] == "master"
    assert item["model_requested"] == "gpt-3.5-turbo"
    assert item["deployment_id"] == "gpt-3.5-turbo#0"
    assert item["provider"] == "openai"
    assert (item["prompt_tokens"], item["completion_tokens"], item["total_tokens"]) == (6, 5, 11)
    # litellm's cost map: gpt-3.5-turbo at $0.50 / $1.50 per million tokens.
    assert item["cost_usd"] == Decimal("0.0000105")
    assert item["latency_ms"] > 0
    assert item["retries"] == 0 and item["fallbacks"] == 0
    assert item["expires_at"] > 0 and item["day"]


def test_per_deployment_prices_override_the_cost_map(
    client: openai.OpenAI, aws: dict[str, str]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="priced",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["cost_usd"] == Decimal("0.016")  # 6 * 0.001 + 5 * 0.002


def test_stream_is_openai_sse_and_metered_with_usage(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="priced",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == upstream.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    item = usage_item(aws["UsageTable"], request_id)
    assert item["stream"] is True
    assert (item["prompt_tokens"], item["completion_tokens"]) == (6, 5)
    assert item["cost_usd"] == Decimal("0.016")
    assert item["ttft_ms"] > 0


def test_stream_ends_with_done_and_hides_usage_unless_asked(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "gpt-3.5-turbo", "messages": MESSAGES, "stream": True},
    )
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)
    assert '"usage"' not in response.text


def test_wrong_master_key_is_401_in_openai_shape(gateway_url: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "authentication_error"  # type: ignore[index]
    assert caught.value.response.headers["x-request-id"]


def test_x_api_key_header_is_accepted(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/v1/models", headers={"x-api-key": MASTER_KEY})
    assert response.status_code == 200


def test_unknown_model_is_404_listing_the_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)  # type: ignore[arg-type]
    message = caught.value.body["message"]  # type: ignore[index]
    assert "gpt-5" in message and "gpt-3.5-turbo" in message and "demo" in message


def test_redirecting_parameters_are_refused_and_never_forwarded(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    for extra in (
        {"api_base": "http://127.0.0.1:9/v1"},
        {"base_url": "http://127.0.0.1:9/v1"},
        {"metadata": {"api_key": "sk-attacker"}},
        {"custom_llm_provider": "anthropic"},
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="gpt-3.5-turbo",
                messages=MESSAGES,
                extra_body=extra,  # type: ignore[arg-type]
            )
        assert caught.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-3.5-turbo"}, "messages"),
        (
            {"model": "gpt-3.5-turbo", "messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role",
        ),
        ({"model": "gpt-3.5-turbo", "messages": MESSAGES, "temperature": 9}, "temperature"),
        ({"messages": MESSAGES}, "model"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(
    gateway_url: str, body: dict[str, object], param: str
) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json=body,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.headers["x-request-id"]


def test_malformed_json_is_400(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
        content=b'{"model": "gpt-3.5-turbo", "messages": [',
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_body_over_the_limit_is_413(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
        content=b" " * (6 * 1024 * 1024 + 1),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_upstream_500_is_502_and_the_failure_is_metered(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.fail_next(Fault(status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["status"] == 502
    assert item["error_type"] == "upstream_error"
    assert item["model_requested"] == "gpt-3.5-turbo"
    # The deployment that failed, from litellm's exception.
    assert (item["deployment_id"], item["provider"]) == ("gpt-3.5-turbo#0", "openai")
    assert item["retries"] == 0


def test_upstream_429_is_429_with_retry_after(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.fail_next(Fault(status=429, message="Rate limit exceeded", retry_after="7"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["type"] == "rate_limit_error"  # type: ignore[index]


def test_invalid_provider_key_names_the_model_never_the_key(
    client: openai.OpenAI, upstream: OpenAIUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="wrong-key", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    text = caught.value.response.text
    assert "wrong-key" in text and "provider_authentication_failed" in text
    assert WRONG_UPSTREAM_KEY not in text and UPSTREAM_KEY not in text
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {WRONG_UPSTREAM_KEY}"


def test_missing_provider_key_is_a_clear_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="keyless", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 503
    assert "NOT_SET_ANYWHERE" in caught.value.body["message"]  # type: ignore[index]


def test_health_needs_no_key_and_readiness_checks_dependencies(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/health").json() == {"status": "ok"}
    readiness = httpx.get(f"{gateway_url}/health/readiness")
    assert readiness.status_code == 200
    assert readiness.json()["checks"] == {"config": "ok", "secret": "ok", "usage_table": "ok"}


def test_client_hanging_up_mid_stream_is_still_metered(
    gateway_url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.chunk_delay_s = 0.3
    with httpx.stream(
        "POST",
        f"{gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "gpt-3.5-turbo", "messages": MESSAGES, "stream": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        next(response.iter_lines())
    item = usage_item(aws["UsageTable"], request_id)
    assert item["status"] == 499
    assert item["error_code"] == "client_disconnected"


def test_openapi_documents_openai_errors_not_422(gateway_url: str) -> None:
    schema = httpx.get(f"{gateway_url}/openapi.json").json()
    responses = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


def test_a_second_config_can_be_served_for_one_test(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream
) -> None:
    url = gateway_for(
        gateway_config(
            deployment("only-one", "openai/gpt-3.5-turbo", api_base=f"{upstream.base_url}/v1")
        )
    )
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["only-one"]
    reply = client.chat.completions.create(model="only-one", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == upstream.reply
    # No api_key in the entry: the provider's conventional variable comes from the secret.
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_the_azure_openai_sdk_reaches_a_deployment_by_its_path(
    gateway_url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    """The Azure OpenAI client: the deployment in the path, the key in `api-key`, an
    `api-version` query; the gateway serves the model group of that name."""
    azure = openai.AzureOpenAI(
        azure_endpoint=gateway_url, api_key=MASTER_KEY, api_version="2024-10-21", max_retries=0
    )
    raw = azure.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.http_request.url.path == "/openai/deployments/gpt-3.5-turbo/chat/completions"
    assert raw.http_request.headers["api-key"] == MASTER_KEY
    assert raw.parse().choices[0].message.content == upstream.reply
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert (item["status"], item["model_group"]) == (200, "gpt-3.5-turbo")
    vectors = azure.embeddings.create(model="gpt-3.5-turbo", input="hi")
    assert len(vectors.data) == 1
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=gateway_url, api_key="sk-wrong", api_version="2024-10-21", max_retries=0
        ).chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)  # type: ignore[arg-type]
