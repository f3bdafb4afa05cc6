"""Every Anthropic-shaped answer the gateway serves validates strictly against the anthropic
SDK's types: `/v1/messages` (JSON and each stream event), `/v1/messages/count_tokens`, the
Anthropic-shaped `/v1/models`, and errors in Anthropic's envelope. Recorded on the wire, from
a deployment on the OpenAI-format double and one on the Anthropic double."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from anthropic.types import (
    ErrorResponse,
    Message,
    MessageTokensCount,
    ModelInfo,
    RawMessageStreamEvent,
)

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from devstack.server import serving
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.specs import assert_strict, sse_events
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS

MODELS = ["gpt", "claude"]
MESSAGES = [{"role": "user", "content": "Say hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# What the anthropic SDK sends with every request.
ANTHROPIC_HEADERS = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
# The page `client.models.list()` reads.
MODEL_PAGE_KEYS = {"data", "has_more", "first_id", "last_id"}


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh(anthropic: AnthropicUpstream) -> None:
    anthropic.reset()


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str], anthropic: AnthropicUpstream) -> str:
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
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )


def post(gateway: str, path: str, body: dict[str, Any], key: str = MASTER_KEY) -> httpx.Response:
    headers = {**ANTHROPIC_HEADERS, "x-api-key": key}
    return httpx.post(f"{gateway}{path}", json=body, headers=headers, timeout=30)


def message(model: str, **more: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": MESSAGES, **more}


def calls_tools(model: str, upstream: OpenAIUpstream, anthropic: AnthropicUpstream) -> None:
    if model == "gpt":
        upstream.call_tools = True
    else:
        anthropic.call_tools = True


@pytest.mark.parametrize("tools", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_a_message_is_an_anthropic_message(
    gateway: str, model: str, tools: bool, upstream: OpenAIUpstream, anthropic: AnthropicUpstream
) -> None:
    if tools:
        calls_tools(model, upstream, anthropic)
    answer = post(gateway, "/v1/messages", message(model, tools=[WEATHER] if tools else []))
    assert answer.status_code == 200, answer.text
    assert_strict(Message, answer.json())
    kinds = [block["type"] for block in answer.json()["content"]]
    assert ("tool_use" in kinds) is tools


@pytest.mark.parametrize("tools", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_each_stream_event_is_a_raw_message_stream_event(
    gateway: str, model: str, tools: bool, upstream: OpenAIUpstream, anthropic: AnthropicUpstream
) -> None:
    if tools:
        calls_tools(model, upstream, anthropic)
    body = message(model, stream=True, tools=[WEATHER] if tools else [])
    answer = post(gateway, "/v1/messages", body)
    assert answer.status_code == 200, answer.text
    events = list(sse_events(answer.text))
    for name, data in events:
        assert name == data["type"]
        assert_strict(RawMessageStreamEvent, data)
    kinds = [data["type"] for _, data in events]
    assert (kinds[0], kinds[-1]) == ("message_start", "message_stop")


def test_a_stream_that_fails_after_it_began_ends_with_an_anthropic_error(
    gateway: str, upstream: OpenAIUpstream
) -> None:
    upstream.fail_next(Fault(cut_stream=True))
    answer = post(gateway, "/v1/messages", message("gpt", stream=True))
    name, data = list(sse_events(answer.text))[-1]
    assert name == "error"
    assert_strict(ErrorResponse, data)


def test_a_token_count_is_a_message_tokens_count(gateway: str) -> None:
    answer = post(gateway, "/v1/messages/count_tokens", {"model": "claude", "messages": MESSAGES})
    assert answer.status_code == 200, answer.text
    assert_strict(MessageTokensCount, answer.json())


def test_the_anthropic_model_list_is_a_page_of_model_infos(gateway: str) -> None:
    answer = httpx.get(f"{gateway}/v1/models", headers=ANTHROPIC_HEADERS)
    assert answer.status_code == 200
    page = answer.json()
    assert set(page) == MODEL_PAGE_KEYS
    assert [model["id"] for model in page["data"]][:2] == MODELS
    for model in page["data"]:
        assert_strict(ModelInfo, model)


@pytest.mark.parametrize(
    ("body", "key", "status"),
    [
        ({"model": "gpt", "messages": MESSAGES}, MASTER_KEY, 400),
        (message("gpt", temperature=7), MASTER_KEY, 400),
        (message("gpt"), "sk-wrong", 401),
        (message("nope"), MASTER_KEY, 404),
    ],
)
def test_errors_are_anthropic_error_responses(
    gateway: str, body: dict[str, Any], key: str, status: int
) -> None:
    answer = post(gateway, "/v1/messages", body, key=key)
    assert answer.status_code == status, answer.text
    assert_strict(ErrorResponse, answer.json())


@pytest.mark.parametrize(("model", "key", "status"), [("nope", MASTER_KEY, 404), ("gpt", "x", 401)])
def test_count_tokens_errors_are_anthropic_error_responses(
    gateway: str, model: str, key: str, status: int
) -> None:
    body = {"model": model, "messages": MESSAGES}
    answer = post(gateway, "/v1/messages/count_tokens", body, key=key)
    assert answer.status_code == status, answer.text
    assert_strict(ErrorResponse, answer.json())
