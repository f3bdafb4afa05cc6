"""Ollama through the gateway: the official openai SDK against the gateway under uvicorn,
through litellm, to a double that speaks Ollama's own API (`/api/generate`, `/api/chat`,
NDJSON streams) on loopback; usage items are read back from DynamoDB (moto)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from devstack.doubles.ollama_upstream import Fault, OllamaUpstream, RecordedRequest
from devstack.server import free_port, serving
from tests.support.configs import NO_RETRIES, deployment, gateway_config
from tests.support.stack import MASTER_KEY, usage_item
from tests.support.streams import streamed_reasoning

QUESTION = "Write a haiku about gateways"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]


def config_for(base: str, closed: int) -> str:
    """The seed's Ollama example, pointed at the double, plus the chat route and failure
    cases. No retries and no cooldown, so each failure reaches the client exactly once."""
    return gateway_config(
        deployment("llama2", "ollama/llama2", api_base=base),
        deployment("mistral", "ollama/mistral", api_base=base),
        deployment("qwen", "ollama/qwen:0.5b", api_base=base),
        deployment("llama2-chat", "ollama_chat/llama2", api_base=base),
        deployment("not-pulled", "ollama/codellama", api_base=base),
        deployment("ollama-down", "ollama/llama2", api_base=f"http://127.0.0.1:{closed}"),
        deployment("llama2-slow", "ollama/llama2", api_base=base, timeout=1),
        router_settings={"num_retries": 0, "cooldown_time": 0},
    )


# No api_base: the deployment must get the gateway's OLLAMA_API_BASE setting.
CONFIG_WITHOUT_API_BASE = gateway_config(
    deployment("local-llama", "ollama/llama2"), router_settings=NO_RETRIES
)


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaUpstream]:
    with serving(OllamaUpstream()) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh_ollama(ollama: OllamaUpstream) -> None:
    ollama.reset()


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str], ollama: OllamaUpstream) -> str:
    return gateway_for(config_for(ollama.base_url, free_port()))


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=MASTER_KEY, max_retries=0)


def only_call(ollama: OllamaUpstream, path: str) -> RecordedRequest:
    calls = [r for r in ollama.requests if r.path in ("/api/generate", "/api/chat")]
    assert [r.path for r in calls] == [path]
    return calls[0]


@pytest.mark.parametrize(
    ("model", "ollama_model"), [("llama2", "llama2"), ("mistral", "mistral"), ("qwen", "qwen:0.5b")]
)
def test_ollama_prefix_uses_generate_and_reports_ollamas_counts(
    client: openai.OpenAI, ollama: OllamaUpstream, model: str, ollama_model: str
) -> None:
    completion = client.chat.completions.create(model=model, messages=MESSAGES)

    call = only_call(ollama, "/api/generate")
    assert call.body["model"] == ollama_model
    # Ollama takes no key: none of the secret's provider keys may be sent to it.
    assert "authorization" not in call.headers
    assert call.body["stream"] is False
    assert QUESTION in call.body["prompt"]
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ollama.reply
    assert completion.choices[0].finish_reason == "stop"
    assert call.answer is not None
    # Ollama's own counters, not a tokenizer's estimate: one per word of prompt and reply.
    assert call.answer["prompt_eval_count"] == len(call.body["prompt"].split())
    assert call.answer["eval_count"] == len(ollama.reply.split()) == 5
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        call.answer["prompt_eval_count"],
        call.answer["eval_count"],
    )


def test_ollama_chat_prefix_uses_chat_with_the_messages(
    client: openai.OpenAI, ollama: OllamaUpstream
) -> None:
    completion = client.chat.completions.create(
        model="llama2-chat",
        messages=MESSAGES,
        temperature=0.2,
        max_tokens=50,
    )

    call = only_call(ollama, "/api/chat")
    assert call.body["model"] == "llama2"
    assert "authorization" not in call.headers
    assert [(m["role"], m["content"]) for m in call.body["messages"]] == [("user", QUESTION)]
    assert call.body["stream"] is False
    assert call.body["options"]["temperature"] == 0.2
    assert call.body["options"]["num_predict"] == 50
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == ollama.reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 5)


def test_a_thinking_models_reasoning_comes_out_as_reasoning_content_and_goes_back(
    client: openai.OpenAI, ollama: OllamaUpstream
) -> None:
    """`reasoning_effort` asks Ollama to `think`; its `thinking` is the caller's
    `reasoning_content`, in JSON and streams, and is sent back as `thinking`."""
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    answer = client.chat.completions.create(
        model="llama2-chat", messages=messages, reasoning_effort="low"
    )
    said = answer.choices[0].message.model_dump(exclude_none=True)
    assert (said["reasoning_content"], said["content"]) == (ollama.thoughts, ollama.reply)
    assert only_call(ollama, "/api/chat").body["think"]
    stream = client.chat.completions.create(
        model="llama2-chat", messages=messages, reasoning_effort="low", stream=True
    )
    reasoning, content = streamed_reasoning(stream)
    assert (reasoning, content) == (ollama.thoughts, ollama.reply)
    client.chat.completions.create(
        model="llama2-chat", messages=[*messages, said, {"role": "user", "content": "More?"}]
    )
    assistant = ollama.requests[-1].body["messages"][1]
    assert assistant["thinking"] == ollama.thoughts


@pytest.mark.parametrize(
    ("model", "path", "provider"),
    [("llama2", "/api/generate", "ollama"), ("llama2-chat", "/api/chat", "ollama_chat")],
)
def test_usage_item_names_the_provider_with_exact_tokens_and_no_cost(
    client: openai.OpenAI,
    ollama: OllamaUpstream,
    aws: dict[str, str],
    model: str,
    path: str,
    provider: str,
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    raw.parse()

    answer = only_call(ollama, path).answer
    assert answer is not None
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["status"] == 200
    assert item["model_requested"] == model
    assert item["provider"] == provider
    assert item["prompt_tokens"] == answer["prompt_eval_count"]
    assert item["completion_tokens"] == answer["eval_count"] == 5
    assert item["total_tokens"] == answer["prompt_eval_count"] + 5
    # The seed: Ollama is free.
    assert item["cost_usd"] == Decimal("0")


@pytest.mark.parametrize(
    ("model", "path", "provider"),
    [("llama2", "/api/generate", "ollama"), ("llama2-chat", "/api/chat", "ollama_chat")],
)
def test_ndjson_stream_becomes_openai_sse_with_ollamas_usage(
    client: openai.OpenAI,
    ollama: OllamaUpstream,
    aws: dict[str, str],
    model: str,
    path: str,
    provider: str,
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())

    call = only_call(ollama, path)
    assert call.body["stream"] is True
    assert call.answer is not None
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ollama.reply
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        call.answer["prompt_eval_count"],
        call.answer["eval_count"],
    )
    item = usage_item(aws["UsageTable"], request_id)
    assert item["stream"] is True and item["status"] == 200
    assert item["provider"] == provider
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        call.answer["prompt_eval_count"],
        call.answer["eval_count"],
    )
    assert item["cost_usd"] == Decimal("0")


def test_deployment_without_api_base_uses_the_ollama_api_base_setting(
    gateway_for: Callable[..., str], ollama: OllamaUpstream
) -> None:
    url = gateway_for(CONFIG_WITHOUT_API_BASE, OLLAMA_API_BASE=ollama.base_url)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)

    completion = client.chat.completions.create(model="local-llama", messages=MESSAGES)

    assert completion.choices[0].message.content == ollama.reply
    assert only_call(ollama, "/api/generate").body["model"] == "llama2"


def test_model_not_pulled_in_ollama_is_404_naming_the_gateway_model(
    client: openai.OpenAI, ollama: OllamaUpstream, aws: dict[str, str]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="not-pulled", messages=MESSAGES)

    assert only_call(ollama, "/api/generate").body["model"] == "codellama"
    assert caught.value.status_code == 404
    error = caught.value.body
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "provider_model_not_found"
    assert "'not-pulled'" in error["message"]
    assert "codellama" in error["message"]  # Ollama's own reason, for whoever reads it
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["status"] == 404 and item["error_code"] == "provider_model_not_found"


def test_ollama_down_is_502_provider_unreachable(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="ollama-down", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "provider_unreachable"  # type: ignore[index]
    assert "'ollama-down'" in caught.value.body["message"]  # type: ignore[index]


def test_ollama_slower_than_the_deployment_timeout_is_504(
    client: openai.OpenAI, ollama: OllamaUpstream, aws: dict[str, str]
) -> None:
    ollama.fail_next(Fault(status=200, delay_s=3))

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="llama2-slow", messages=MESSAGES)

    assert only_call(ollama, "/api/generate")
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "provider_timeout"  # type: ignore[index]
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["status"] == 504
    assert item["latency_ms"] < 2900


def test_ollama_error_status_is_502_in_openai_shape(
    client: openai.OpenAI, ollama: OllamaUpstream
) -> None:
    ollama.fail_next(Fault(status=500))

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="llama2-chat", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert "'llama2-chat'" in caught.value.body["message"]  # type: ignore[index]


def test_malformed_ollama_answer_is_502(client: openai.OpenAI, ollama: OllamaUpstream) -> None:
    ollama.fail_next(Fault(malformed=True))

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="llama2", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert "'llama2'" in caught.value.body["message"]  # type: ignore[index]


def test_malformed_ollama_answer_is_recorded_as_a_bad_response(
    client: openai.OpenAI, ollama: OllamaUpstream, aws: dict[str, str]
) -> None:
    ollama.fail_next(Fault(malformed=True))

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="llama2", messages=MESSAGES)

    assert caught.value.body["code"] == "provider_bad_response"  # type: ignore[index]
    item = usage_item(aws["UsageTable"], caught.value.response.headers["x-request-id"])
    assert item["error_code"] == "provider_bad_response"


def test_stream_cut_by_ollama_is_not_metered_as_success(
    client: openai.OpenAI, ollama: OllamaUpstream, aws: dict[str, str]
) -> None:
    ollama.fail_next(Fault(cut_stream=True))

    with client.chat.completions.with_streaming_response.create(
        model="llama2-chat",
        messages=MESSAGES,
        stream=True,
    ) as response:
        request_id = response.headers["x-request-id"]
        with pytest.raises(openai.APIError) as caught:
            list(response.parse())

    assert "'llama2-chat'" in caught.value.message
    item = usage_item(aws["UsageTable"], request_id)
    assert item["status"] == 502
    assert item["error_type"] == "upstream_error"


@pytest.mark.parametrize(
    "model",
    [
        "llama2",
        "llama2-chat",
    ],
)
def test_stream_chunks_share_one_completion_id(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    ids = {chunk.id for chunk in stream}
    assert len(ids) == 1
    assert ids.pop().startswith("chatcmpl-")


@pytest.mark.parametrize(
    "model",
    [
        "llama2",
        "llama2-chat",
    ],
)
def test_error_line_mid_stream_is_a_provider_error(
    client: openai.OpenAI, ollama: OllamaUpstream, aws: dict[str, str], model: str
) -> None:
    ollama.fail_next(Fault(error_mid_stream=True))

    with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=MESSAGES,
        stream=True,
    ) as response:
        request_id = response.headers["x-request-id"]
        with pytest.raises(openai.APIError) as caught:
            list(response.parse())

    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "upstream_error"
    assert f"'{model}'" in caught.value.body["message"]
    item = usage_item(aws["UsageTable"], request_id)
    assert (item["status"], item["error_type"]) == (502, "upstream_error")
