"""Azure OpenAI, OpenRouter and DeepSeek behind the gateway: the official openai SDK in front,
litellm routing to doubles that speak each provider's wire format, keys from the provider-keys
secret, usage read back from DynamoDB (moto)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import litellm
import openai
import pytest
from fastapi import FastAPI

from devstack.doubles.azure_upstream import AzureOpenAIUpstream
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import BackgroundServer
from tests.support.configs import deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
PROMPT_TOKENS = 6  # the doubles count one token per word plus one per message
# Deployment name -> the model Azure reports for it (Azure names the model, not the deployment).
AZURE_DEPLOYMENTS = {"gpt-35-turbo": "gpt-35-turbo", "gpt-4o": "gpt-4o-2024-08-06"}
# OpenRouter's API lives under /api/v1 (litellm's default base is https://openrouter.ai/api/v1).
OPENROUTER_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Case:
    model_name: str  # what the client asks the gateway for
    litellm_model: str  # the deployment's `model`, which prices it
    provider: str
    double: str  # fixture name of the upstream double
    key_variable: str  # the provider-keys secret entry the upstream must receive
    api_version: str | None = None  # Azure's, from the deployment

    @property
    def key(self) -> str:
        return PROVIDER_KEYS[self.key_variable]


# The seed's Azure entry: API version 2023-05-15.
AZURE = Case("gpt-35-turbo", "azure/gpt-35-turbo", "azure", "azure", "AZURE_API_KEY", "2023-05-15")
# No api_key in its litellm_params: the gateway fills in AZURE_API_KEY from the secret.
AZURE_KEYLESS = Case(
    "azure-gpt-4o", "azure/gpt-4o", "azure", "azure", "AZURE_API_KEY", "2024-10-21"
)
OPENROUTER = Case(
    "openrouter-gpt-4", "openrouter/openai/gpt-4", "openrouter", "openrouter", "OPENROUTER_API_KEY"
)
# No api_key either: DEEPSEEK_API_KEY comes from the secret.
DEEPSEEK = Case(
    "deepseek-coder", "deepseek/deepseek-coder", "deepseek", "deepseek", "DEEPSEEK_API_KEY"
)


def _serve(app: Any) -> BackgroundServer:
    return BackgroundServer(app).start()


@pytest.fixture(scope="module")
def azure() -> Iterator[AzureOpenAIUpstream]:
    double = AzureOpenAIUpstream(
        api_key=PROVIDER_KEYS["AZURE_API_KEY"], deployments=AZURE_DEPLOYMENTS
    )
    server = _serve(double.app())
    double.base_url = server.url
    yield double
    server.stop()


@pytest.fixture(scope="module")
def openrouter() -> Iterator[OpenAIUpstream]:
    double = OpenAIUpstream(
        api_key=PROVIDER_KEYS["OPENROUTER_API_KEY"], reply="Routed to you by the OpenRouter double."
    )
    site = FastAPI()
    site.mount(OPENROUTER_PREFIX, double.app())
    server = _serve(site)
    double.base_url = f"{server.url}{OPENROUTER_PREFIX}"
    yield double
    server.stop()


@pytest.fixture(scope="module")
def deepseek() -> Iterator[OpenAIUpstream]:
    double = OpenAIUpstream(
        api_key=PROVIDER_KEYS["DEEPSEEK_API_KEY"], reply="def haiku(): return 'gateways'"
    )
    server = _serve(double.app())
    double.base_url = server.url
    yield double
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_doubles(
    azure: AzureOpenAIUpstream, openrouter: OpenAIUpstream, deepseek: OpenAIUpstream
) -> None:
    for double in (azure, openrouter, deepseek):
        double.reset()


@pytest.fixture(scope="module")
def gateway(
    gateway_for: Callable[..., str],
    azure: AzureOpenAIUpstream,
    openrouter: OpenAIUpstream,
    deepseek: OpenAIUpstream,
) -> str:
    # The keys must reach the upstreams from the secret, not from this process's environment.
    assert not {case.key_variable for case in (AZURE, OPENROUTER, DEEPSEEK)} & os.environ.keys()
    return gateway_for(
        gateway_config(
            deployment(
                "gpt-35-turbo",
                "azure/gpt-35-turbo",
                api_key="os.environ/AZURE_API_KEY",
                api_base=azure.base_url,
                api_version="2023-05-15",
            ),
            deployment(
                "azure-gpt-4o", "azure/gpt-4o", api_base=azure.base_url, api_version="2024-10-21"
            ),
            deployment(
                "azure-wrong-key",
                "azure/gpt-35-turbo",
                api_key="os.environ/WRONG_OPENAI_KEY",
                api_base=azure.base_url,
                api_version="2024-10-21",
            ),
            deployment(
                "openrouter-gpt-4",
                "openrouter/openai/gpt-4",
                api_key="os.environ/OPENROUTER_API_KEY",
                api_base=openrouter.base_url,
            ),
            deployment("deepseek-coder", "deepseek/deepseek-coder", api_base=deepseek.base_url),
            router_settings={"num_retries": 0, "cooldown_time": 0},
        )
    )


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=MASTER_KEY, max_retries=0)


def map_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """What litellm's cost map gives for the tokens (0 where it cannot price the model)."""
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:
        return 0.0
    return float(prompt_cost) + float(completion_cost)


def priced_by_map(model: str) -> bool:
    # The Router registers an empty entry for a model it does not know, so look for prices.
    return bool((litellm.model_cost.get(model) or {}).get("input_cost_per_token"))


def assert_metered(
    item: dict[str, Any], case: Case, completion_tokens: int, *, stream: bool
) -> None:
    assert item["status"] == 200
    assert item["model_requested"] == case.model_name
    assert item["provider"] == case.provider
    assert item["stream"] is stream
    assert (item["prompt_tokens"], item["completion_tokens"], item["total_tokens"]) == (
        PROMPT_TOKENS,
        completion_tokens,
        PROMPT_TOKENS + completion_tokens,
    )
    expected = map_cost(case.litellm_model, PROMPT_TOKENS, completion_tokens)
    # litellm 1.110.2's map prices every model here but openrouter/openai/gpt-4.
    assert priced_by_map(case.litellm_model) is (case is not OPENROUTER)
    if priced_by_map(case.litellm_model):
        assert expected > 0
        assert float(item["cost_usd"]) == pytest.approx(expected, rel=1e-9)
    else:
        assert expected == 0
        assert item["cost_usd"] == 0


def assert_upstream_saw(case: Case, double: Any, *, stream: bool) -> None:
    """Each provider's path, auth header and body, as its real API expects them."""
    (seen,) = double.requests
    assert bool(seen.body.get("stream")) is stream
    if case.provider == "azure":
        deployment = case.litellm_model.removeprefix("azure/")
        assert seen.deployment == deployment
        assert seen.api_version == case.api_version
        assert seen.path == f"/openai/deployments/{deployment}/chat/completions"
        assert seen.headers["api-key"] == case.key
        assert case.key not in seen.headers.get("authorization", "")
    elif case.provider == "openrouter":
        assert seen.path == f"{OPENROUTER_PREFIX}/chat/completions"
        assert seen.headers["authorization"] == f"Bearer {case.key}"
        assert seen.body["model"] == "openai/gpt-4"
        # OpenRouter's optional app attribution, which litellm always sends.
        assert seen.headers["http-referer"] and seen.headers["x-title"]
    else:
        assert seen.path == "/chat/completions"
        assert seen.headers["authorization"] == f"Bearer {case.key}"
        assert seen.body["model"] == "deepseek-coder"


@pytest.mark.parametrize(
    "case", [AZURE, AZURE_KEYLESS, OPENROUTER, DEEPSEEK], ids=lambda case: case.model_name
)
def test_completion_reaches_provider_with_secret_key_and_is_metered(
    case: Case, client: openai.OpenAI, request: pytest.FixtureRequest, aws: dict[str, str]
) -> None:
    double = request.getfixturevalue(case.double)
    raw = client.chat.completions.with_raw_response.create(
        model=case.model_name,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == double.reply
    assert completion.choices[0].finish_reason == "stop"
    completion_tokens = len(double.reply.split())
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS,
        completion_tokens,
    )
    assert_upstream_saw(case, double, stream=False)
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert_metered(item, case, completion_tokens, stream=False)


@pytest.mark.parametrize(
    "case", [AZURE_KEYLESS, OPENROUTER, DEEPSEEK], ids=lambda case: case.model_name
)
def test_stream_is_openai_sse_and_metered(
    case: Case, client: openai.OpenAI, request: pytest.FixtureRequest, aws: dict[str, str]
) -> None:
    double = request.getfixturevalue(case.double)
    with client.chat.completions.with_streaming_response.create(
        model=case.model_name,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == double.reply
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    # One id for the whole stream, as OpenAI sends it (Azure's first chunk has an empty one).
    (stream_id,) = {chunk.id for chunk in chunks}
    assert stream_id.startswith("chatcmpl-")
    completion_tokens = len(double.reply.split())
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        PROMPT_TOKENS,
        completion_tokens,
    )
    assert_upstream_saw(case, double, stream=True)
    item = usage_item(aws["UsageTable"], request_id)
    assert_metered(item, case, completion_tokens, stream=True)
    assert item["ttft_ms"] > 0


def test_stream_without_usage_requested_still_meters_azure(
    gateway: str, azure: AzureOpenAIUpstream, aws: dict[str, str]
) -> None:
    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": AZURE_KEYLESS.model_name, "messages": MESSAGES, "stream": True},
    )
    events = [event for event in response.text.split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    # Azure's filter-results-only first chunk and the usage chunk are not the client's.
    assert '"usage"' not in response.text and "prompt_filter_results" not in response.text
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        PROMPT_TOKENS,
        len(azure.reply.split()),
    )


def test_plain_stream_to_the_seeds_azure_api_version_is_served_and_metered(
    gateway: str, azure: AzureOpenAIUpstream, aws: dict[str, str]
) -> None:
    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": AZURE.model_name, "messages": MESSAGES, "stream": True},
    )
    assert response.status_code == 200
    assert azure.requests[-1].api_version == "2023-05-15"
    assert "stream_options" not in azure.requests[-1].body
    events = [event for event in response.text.split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    assert azure.reply.split()[-1] in response.text
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    assert item["status"] == 200 and item["provider"] == "azure"
    assert item["completion_tokens"] > 0
    assert item["usage_estimated"] is True


def test_azure_rejecting_the_key_is_502_without_the_key(
    client: openai.OpenAI, azure: AzureOpenAIUpstream, aws: dict[str, str]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="azure-wrong-key", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    text = caught.value.response.text
    assert "azure-wrong-key" in text and "provider_authentication_failed" in text
    assert PROVIDER_KEYS["WRONG_OPENAI_KEY"] not in text
    assert azure.requests[-1].headers["api-key"] == PROVIDER_KEYS["WRONG_OPENAI_KEY"]
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["status"] == 502


def test_azure_double_speaks_azures_errors(azure: AzureOpenAIUpstream) -> None:
    """The double refuses what Azure refuses, so a gateway that gets it wrong fails the tests."""
    key = {"api-key": PROVIDER_KEYS["AZURE_API_KEY"]}
    url = f"{azure.base_url}/openai/deployments/gpt-35-turbo/chat/completions"
    body = {"messages": MESSAGES}
    bearer = {"authorization": f"Bearer {PROVIDER_KEYS['AZURE_API_KEY']}"}
    assert (
        httpx.post(url, params={"api-version": "2024-10-21"}, json=body, headers=bearer).status_code
        == 401
    )
    assert httpx.post(url, json=body, headers=key).status_code == 404
    unknown = url.replace("gpt-35-turbo", "no-such-deployment")
    response = httpx.post(unknown, params={"api-version": "2024-10-21"}, json=body, headers=key)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DeploymentNotFound"
    old = httpx.post(
        url,
        params={"api-version": "2023-05-15"},
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        headers=key,
    )
    assert old.status_code == 400 and "stream_options" in old.json()["error"]["message"]
    ok = httpx.post(url, params={"api-version": "2023-05-15"}, json=body, headers=key)
    assert ok.status_code == 200 and ok.json()["model"] == "gpt-35-turbo"
