"""Every OpenAI-shaped answer the gateway serves validates against the component schema of its
endpoint in OpenAI's published OpenAPI file (`tests/fixtures/specs/`): chat completions and
their chunks, embeddings, the model list, Responses API responses and each of their stream
events, stored responses, and errors. Answers are recorded on the wire (httpx, not an SDK,
which would forgive a missing field) for every provider path: the OpenAI-format double, the
Anthropic, Ollama and Azure doubles, and the Responses API bridged to a non-OpenAI
deployment."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.azure_upstream import AzureOpenAIUpstream
from devstack.doubles.ollama_upstream import OllamaUpstream
from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from devstack.server import serving
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.specs import assert_conforms, assert_event_conforms, sse_events
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS

CHAT_MODELS = ["gpt", "claude", "llama", "azure-gpt"]
# The Responses API: forwarded natively to OpenAI, bridged through chat to the others.
RESPONSES_MODELS = ["gpt", "claude", "llama"]
# The doubles that can be asked to call a tool.
TOOL_MODELS = ["gpt", "claude"]
MESSAGES = [{"role": "user", "content": "Say hi"}]
WEATHER_CHAT = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_RESPONSES = {"type": "function", **WEATHER_CHAT["function"]}


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaUpstream]:
    with serving(OllamaUpstream()) as double:
        yield double


@pytest.fixture(scope="module")
def azure() -> Iterator[AzureOpenAIUpstream]:
    double = AzureOpenAIUpstream(
        api_key=PROVIDER_KEYS["AZURE_API_KEY"], deployments={"gpt-35-turbo": "gpt-35-turbo"}
    )
    with serving(double) as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh(
    anthropic: AnthropicUpstream, ollama: OllamaUpstream, azure: AzureOpenAIUpstream
) -> None:
    for double in (anthropic, ollama, azure):
        double.reset()


@pytest.fixture(scope="module")
def gateway(
    gateway_for: Callable[..., str],
    anthropic: AnthropicUpstream,
    ollama: OllamaUpstream,
    azure: AzureOpenAIUpstream,
) -> str:
    return gateway_for(
        gateway_config(
            openai_double("gpt", "openai/gpt-4o-mini"),
            deployment(
                "claude",
                "anthropic/claude-3-haiku-20240307",
                api_base=anthropic.base_url,
                api_key="os.environ/ANTHROPIC_API_KEY",
            ),
            deployment("llama", "ollama_chat/llama2", api_base=ollama.base_url),
            deployment(
                "azure-gpt",
                "azure/gpt-35-turbo",
                api_base=azure.base_url,
                api_key="os.environ/AZURE_API_KEY",
                api_version="2024-10-21",
            ),
            router_settings=NO_RETRIES,
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )


def post(gateway: str, path: str, body: dict[str, Any], key: str = MASTER_KEY) -> httpx.Response:
    return httpx.post(
        f"{gateway}{path}",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def calls_tools(model: str, upstream: OpenAIUpstream, anthropic: AnthropicUpstream) -> None:
    if model == "gpt":
        upstream.call_tools = True
    else:
        anthropic.call_tools = True


def data_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """A chat stream's chunks, checked to end with `[DONE]` and to carry no event names (chat
    completions' SSE has none)."""
    assert response.status_code == 200, response.text
    events = list(sse_events(response.text))
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    return [data for _, data in events[:-1]]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_a_chat_completion_is_a_create_chat_completion_response(gateway: str, model: str) -> None:
    answer = post(gateway, "/v1/chat/completions", {"model": model, "messages": MESSAGES})
    assert answer.status_code == 200, answer.text
    assert_conforms("CreateChatCompletionResponse", answer.json())
    choice = answer.json()["choices"][0]
    assert (choice["logprobs"], choice["message"]["refusal"]) == (None, None)


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_a_tool_call_answer_has_null_content(
    gateway: str, model: str, upstream: OpenAIUpstream, anthropic: AnthropicUpstream
) -> None:
    calls_tools(model, upstream, anthropic)
    body = {"model": model, "messages": MESSAGES, "tools": [WEATHER_CHAT]}
    answer = post(gateway, "/v1/chat/completions", body)
    assert answer.status_code == 200, answer.text
    assert_conforms("CreateChatCompletionResponse", answer.json())
    message = answer.json()["choices"][0]["message"]
    assert message["tool_calls"] and "content" in message and message["content"] is None


def test_a_chat_completion_with_logprobs_asked_conforms(gateway: str) -> None:
    body = {"model": "gpt", "messages": MESSAGES, "logprobs": True, "top_logprobs": 2}
    answer = post(gateway, "/v1/chat/completions", body)
    assert answer.status_code == 200, answer.text
    assert_conforms("CreateChatCompletionResponse", answer.json())


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_each_chat_chunk_is_a_create_chat_completion_stream_response(
    gateway: str, model: str, include_usage: bool
) -> None:
    body = {
        "model": model,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    chunks = data_chunks(post(gateway, "/v1/chat/completions", body))
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) <= {None}
    assert ("usage" in chunks[-1]) is include_usage


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_a_streamed_tool_call_conforms(
    gateway: str, model: str, upstream: OpenAIUpstream, anthropic: AnthropicUpstream
) -> None:
    calls_tools(model, upstream, anthropic)
    body = {"model": model, "messages": MESSAGES, "tools": [WEATHER_CHAT], "stream": True}
    chunks = data_chunks(post(gateway, "/v1/chat/completions", body))
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_with_logprobs_asked_conforms(gateway: str) -> None:
    body = {"model": "gpt", "messages": MESSAGES, "stream": True, "logprobs": True}
    for chunk in data_chunks(post(gateway, "/v1/chat/completions", body)):
        assert_conforms("CreateChatCompletionStreamResponse", chunk)


@pytest.fixture(scope="module")
def cached_gateway(gateway_for: Callable[..., str], anthropic: AnthropicUpstream) -> str:
    """The OpenAI and the Anthropic deployments with the response cache on."""
    return gateway_for(
        gateway_config(
            openai_double("gpt", "openai/gpt-4o-mini"),
            deployment(
                "claude",
                "anthropic/claude-3-haiku-20240307",
                api_base=anthropic.base_url,
                api_key="os.environ/ANTHROPIC_API_KEY",
            ),
            router_settings=NO_RETRIES,
            litellm_settings={"cache": True, "cache_params": {"type": "redis", "ttl": 600}},
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )


@pytest.mark.parametrize("tools", [False, True])
def test_a_cached_answer_replayed_as_a_stream_conforms(
    cached_gateway: str, upstream: OpenAIUpstream, tools: bool
) -> None:
    upstream.call_tools = tools
    messages = [{"role": "user", "content": f"Say hi ({uuid.uuid4().hex})"}]
    body = {"model": "gpt", "messages": messages, "tools": [WEATHER_CHAT]}
    assert post(cached_gateway, "/v1/chat/completions", body).status_code == 200
    replayed = post(cached_gateway, "/v1/chat/completions", {**body, "stream": True})
    assert replayed.headers.get("x-litellm-cache-hit") == "true"
    for chunk in data_chunks(replayed):
        assert_conforms("CreateChatCompletionStreamResponse", chunk)


def test_embeddings_are_a_create_embedding_response(gateway: str) -> None:
    answer = post(gateway, "/v1/embeddings", {"model": "gpt", "input": ["one", "two words"]})
    assert answer.status_code == 200, answer.text
    assert_conforms("CreateEmbeddingResponse", answer.json())


def test_the_model_list_is_a_list_models_response(gateway: str) -> None:
    answer = httpx.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert answer.status_code == 200
    assert_conforms("ListModelsResponse", answer.json())
    assert {model["id"] for model in answer.json()["data"]} >= set(CHAT_MODELS)


def response_body(model: str, **more: Any) -> dict[str, Any]:
    return {"model": model, "input": "Say hi", "instructions": "Be brief", **more}


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_a_response_its_stored_copy_and_its_deletion_conform(gateway: str, model: str) -> None:
    sent = response_body(model, temperature=0.5, top_p=0.9, metadata={"agent": "codex"})
    answer = post(gateway, "/v1/responses", sent)
    assert answer.status_code == 200, answer.text
    response = answer.json()
    assert_conforms("Response", response)
    # What the caller asked for is what the response says it was made with.
    assert (response["temperature"], response["top_p"]) == (0.5, 0.9)
    assert (response["instructions"], response["metadata"]) == ("Be brief", {"agent": "codex"})
    assert (response["error"], response["incomplete_details"]) == (None, None)
    url = f"{gateway}/v1/responses/{response['id']}"
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    stored = httpx.get(url, headers=headers)
    assert stored.status_code == 200
    assert_conforms("Response", stored.json())
    deleted = httpx.delete(url, headers=headers)
    # The spec gives DELETE no schema; its example is this object.
    assert deleted.json() == {"id": response["id"], "object": "response", "deleted": True}
    gone = httpx.get(url, headers=headers)
    assert gone.status_code == 404
    assert_conforms("ErrorResponse", gone.json())


def streamed(gateway: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses API stream's events, each checked against the variant its type names."""
    answer = post(gateway, "/v1/responses", {**body, "stream": True})
    assert answer.status_code == 200, answer.text
    events = []
    for name, data in sse_events(answer.text):
        assert_event_conforms(data, name)
        events.append(data)
    return events


@pytest.mark.parametrize("model", RESPONSES_MODELS)
def test_each_response_stream_event_conforms(gateway: str, model: str) -> None:
    events = streamed(gateway, response_body(model, temperature=0.5))
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["temperature"] == 0.5


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_a_function_call_response_conforms(
    gateway: str, model: str, upstream: OpenAIUpstream, anthropic: AnthropicUpstream
) -> None:
    calls_tools(model, upstream, anthropic)
    answer = post(gateway, "/v1/responses", response_body(model, tools=[WEATHER_RESPONSES]))
    assert answer.status_code == 200, answer.text
    assert_conforms("Response", answer.json())
    assert answer.json()["output"][-1]["type"] == "function_call"
    events = streamed(gateway, response_body(model, tools=[WEATHER_RESPONSES]))
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done and done[0]["name"] == "get_weather"


def test_a_cached_response_replayed_as_a_stream_conforms(cached_gateway: str) -> None:
    body = {"model": "claude", "input": f"Say hi ({uuid.uuid4().hex})", "temperature": 0.5}
    assert post(cached_gateway, "/v1/responses", body).status_code == 200
    replayed = post(cached_gateway, "/v1/responses", {**body, "stream": True})
    assert replayed.headers.get("x-litellm-cache-hit") == "true"
    events = streamed(cached_gateway, body)
    assert events[-1]["type"] == "response.completed"


def test_a_stream_that_fails_after_it_began_ends_with_a_conforming_error_event(
    gateway: str, upstream: OpenAIUpstream
) -> None:
    upstream.fail_next(Fault(cut_stream=True))
    events = streamed(gateway, response_body("gpt"))
    assert events[-1]["type"] in ("error", "response.completed")


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert_conforms("ErrorResponse", answer.json())
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gpt", "messages": MESSAGES, "temperature": 9}),
        ("/v1/responses", {"model": "gpt", "input": "hi", "temperature": "hot"}),
        ("/v1/embeddings", {"model": "gpt", "input": []}),
        ("/v1/chat/completions", {"model": "gpt", "messages": MESSAGES, "provider": "x"}),
    ],
)
def test_a_refused_request_is_a_conforming_error(
    gateway: str, path: str, body: dict[str, Any]
) -> None:
    error_of(post(gateway, path, body), 400)


def test_auth_model_and_rate_errors_conform(gateway: str, upstream: OpenAIUpstream) -> None:
    body = {"model": "gpt", "messages": MESSAGES}
    error_of(post(gateway, "/v1/chat/completions", body, key="sk-wrong"), 401)
    error_of(post(gateway, "/v1/chat/completions", {**body, "model": "nope"}), 404)
    made = post(gateway, "/key/generate", {"models": ["claude"]}).json()["key"]
    error_of(post(gateway, "/v1/chat/completions", body, key=made), 403)
    upstream.fail_next(Fault(status=429, message="slow down", retry_after="1"))
    error_of(post(gateway, "/v1/chat/completions", body), 429)
