"""OpenAI's Responses API (Codex CLI, the OpenAI Agents SDK, `client.responses`) with the
openai SDK: bridged to an Anthropic deployment (the Anthropic wire-format double) and to a
mock one, streamed as the API's named events, metered, and stored across containers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.server import serving
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

INPUT_PRICE, OUTPUT_PRICE = Decimal("0.00000025"), Decimal("0.00000125")


def config_for(base: str) -> str:
    return gateway_config(
        deployment(
            "claude",
            "anthropic/claude-3-haiku-20240307",
            api_base=base,
            api_key="os.environ/ANTHROPIC_API_KEY",
        ),
        deployment(
            "demo",
            "openai/demo",
            mock_response="A mock reply.",
            input_cost_per_token=0,
            output_cost_per_token=0,
        ),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh(anthropic: AnthropicUpstream) -> None:
    anthropic.reset()


@pytest.fixture(scope="module")
def containers(gateway_for: Callable[..., str], anthropic: AnthropicUpstream) -> list[str]:
    """Two gateways on the same tables: two containers of one deployment."""
    config = config_for(anthropic.base_url)
    return [gateway_for(config), gateway_for(config)]


def sdk(url: str, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_a_response_is_bridged_metered_and_priced(
    containers: list[str], anthropic: AnthropicUpstream, aws: dict[str, str]
) -> None:
    client = sdk(containers[0])
    with_raw = client.responses.with_raw_response.create(
        model="claude", input="Say hi", instructions="Be brief", max_output_tokens=32
    )
    response = with_raw.parse()
    assert response.id.startswith("resp_")
    assert response.output_text == "Hello from the Anthropic double."
    assert response.usage is not None
    sent = anthropic.requests[-1].body
    assert sent["system"] == "Be brief" or "Be brief" in str(sent["system"])
    item = usage_item(aws["UsageTable"], with_raw.headers["x-request-id"])
    assert (item["endpoint"], item["provider"], item["status"]) == (
        "/v1/responses",
        "anthropic",
        200,
    )
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        response.usage.input_tokens,
        response.usage.output_tokens,
    )
    expected = item["prompt_tokens"] * INPUT_PRICE + item["completion_tokens"] * OUTPUT_PRICE
    assert Decimal(item["cost_usd"]) == pytest.approx(expected)


@pytest.mark.parametrize("model", ["claude", "demo"])
def test_a_stream_has_the_apis_events_in_order(
    containers: list[str], model: str, aws: dict[str, str]
) -> None:
    client = sdk(containers[0])
    with client.responses.stream(model=model, input="Say hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_item.done",
    ):
        assert expected in kinds
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert final.id.startswith("resp_") and final.output_text
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}


def test_a_follow_up_continues_the_stored_conversation_on_another_container(
    containers: list[str], anthropic: AnthropicUpstream
) -> None:
    first = sdk(containers[0]).responses.create(model="claude", input="Say hi")
    follow = sdk(containers[1]).responses.create(
        model="claude", input="And again", previous_response_id=first.id
    )
    assert follow.output_text
    conversation = anthropic.requests[-1].body["messages"]
    said = [str(message["content"]) for message in conversation]
    assert "Say hi" in said[0]
    assert "Hello from the Anthropic double." in said[1]
    assert "And again" in said[-1]
    # Stored for the key that made it, readable and deletable on any container.
    fetched = httpx.get(
        f"{containers[1]}/v1/responses/{first.id}",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert fetched.status_code == 200 and fetched.json()["id"] == first.id
    sdk(containers[0]).responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk(containers[1]).responses.retrieve(first.id)


def test_another_key_cannot_see_or_continue_a_stored_response(containers: list[str]) -> None:
    made = httpx.post(
        f"{containers[0]}/key/generate",
        json={},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ).json()["key"]
    mine = sdk(containers[0]).responses.create(model="demo", input="hi")
    other = sdk(containers[0], made)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="demo", input="more", previous_response_id=mine.id)


def test_store_false_stores_nothing(containers: list[str]) -> None:
    unstored = sdk(containers[0]).responses.create(model="demo", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk(containers[0]).responses.retrieve(unstored.id)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"api_base": "http://127.0.0.1:9"}, "unsupported_parameter"),
    ],
)
def test_responses_parameters_are_allow_listed(
    containers: list[str], extra: dict[str, Any], code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(containers[0]).responses.create(model="claude", input="hi", extra_body=extra)
    assert refused.value.body["code"] == code  # type: ignore[index]


def test_a_websocket_attempt_is_refused_at_once(api: Any) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        TestClient(api.app) as client,
        client.websocket_connect("/v1/responses"),
    ):
        pass
    assert refused.value.code == 1008


WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def test_a_function_call_round_trip_is_bridged_to_anthropic(
    containers: list[str], anthropic: AnthropicUpstream
) -> None:
    anthropic.call_tools = True
    client = sdk(containers[0])
    first = client.responses.create(model="claude", input="Weather in Paris?", tools=[WEATHER])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    offered = anthropic.requests[-1].body["tools"]
    assert [(tool["name"], tool["input_schema"]) for tool in offered] == [
        ("get_weather", WEATHER["parameters"])
    ]
    follow = sdk(containers[1]).responses.create(
        model="claude",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert follow.output_text == "The tool said: sunny"
    turns = anthropic.requests[-1].body["messages"]
    [used] = [b for b in turns[1]["content"] if b["type"] == "tool_use"]
    [result] = [b for b in turns[2]["content"] if b["type"] == "tool_result"]
    assert used["id"] == result["tool_use_id"] == call.call_id


def test_a_bridged_function_call_streams_as_argument_deltas(
    containers: list[str], anthropic: AnthropicUpstream
) -> None:
    anthropic.call_tools = True
    with sdk(containers[0]).responses.stream(
        model="claude", input="Weather?", tools=[WEATHER]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
    [call] = [item for item in final.output if item.type == "function_call"]
    assert json.loads(call.arguments) == {"city": "Paris"}
