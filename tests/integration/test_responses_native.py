"""The Responses API forwarded natively to an OpenAI deployment (the OpenAI double's
`/v1/responses`), with the openai SDK: function tools and their outputs across turns, parallel
calls, streamed calls, reasoning items with their encrypted content, structured output and
cached tokens, metered and priced."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, gateway_config, openai_double
from tests.support.stack import MASTER_KEY, usage_item

INPUT_PRICE, OUTPUT_PRICE, CACHED_PRICE = (Decimal("1e-6"), Decimal("2e-6"), Decimal("1e-7"))
CONFIG = gateway_config(
    openai_double(
        "gpt",
        "openai/gpt-5-mini",
        input_cost_per_token=INPUT_PRICE,
        output_cost_per_token=OUTPUT_PRICE,
        cache_read_input_token_cost=CACHED_PRICE,
    ),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME = {**WEATHER, "name": "get_time", "description": "The time in a city."}


@pytest.fixture(scope="module")
def client(gateway_for: Callable[..., str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_for(CONFIG)}/v1", api_key=MASTER_KEY, max_retries=0)


def responses_sent(upstream: OpenAIUpstream) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.path == "/v1/responses"]


def test_a_response_is_forwarded_natively_metered_and_priced(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt", input="Say hi", instructions="Be brief", max_output_tokens=64
    )
    response = raw.parse()
    assert response.id.startswith("resp_")
    assert response.output_text == upstream.reply
    [sent] = responses_sent(upstream)
    assert (sent["model"], sent["instructions"], sent["max_output_tokens"]) == (
        "gpt-5-mini",
        "Be brief",
        64,
    )
    assert sent["store"] is False  # the gateway keeps the conversation itself
    assert response.store is True  # and says so: the response is stored
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert (item["endpoint"], item["provider"], item["status"]) == ("/v1/responses", "openai", 200)
    assert response.usage is not None
    # "Be brief" and "Say hi": four words in; the double's five-word reply out.
    assert (item["prompt_tokens"], item["completion_tokens"]) == (4, 5)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 5)
    assert Decimal(item["cost_usd"]) == pytest.approx(4 * INPUT_PRICE + 5 * OUTPUT_PRICE)


def test_a_function_call_and_its_output_round_trip_across_turns(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.call_tools = True
    first = client.responses.create(
        model="gpt", input="Weather in Paris?", tools=[WEATHER], tool_choice="auto"
    )
    [call] = first.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert responses_sent(upstream)[0]["tools"] == [WEATHER]
    follow = client.responses.create(
        model="gpt",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert follow.output_text == "The tool said: sunny"
    conversation = responses_sent(upstream)[-1]["input"]
    assert [item.get("type") for item in conversation] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert conversation[1]["call_id"] == conversation[2]["call_id"] == call.call_id


@pytest.mark.parametrize(("parallel", "calls"), [(True, 2), (False, 1)])
def test_parallel_calls_come_as_the_caller_allows(
    client: openai.OpenAI, upstream: OpenAIUpstream, parallel: bool, calls: int
) -> None:
    upstream.call_tools, upstream.parallel_calls = True, 2
    response = client.responses.create(
        model="gpt", input="Weather and time?", tools=[WEATHER, TIME], parallel_tool_calls=parallel
    )
    assert [item.type for item in response.output] == ["function_call"] * calls
    assert responses_sent(upstream)[-1]["parallel_tool_calls"] is parallel


def test_a_streamed_call_arrives_as_argument_deltas_in_order(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.call_tools = True
    with client.responses.stream(model="gpt", input="Weather?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and json.loads("".join(deltas)) == {"city": "Paris"}
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert final.id.startswith("resp_")


def test_reasoning_with_encrypted_content_continues_across_turns(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    first = client.responses.create(
        model="gpt",
        input="Say hi",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    )
    reasoning, message = first.output
    assert message.type == "message"
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.summary[0].text == upstream.thoughts
    assert first.usage is not None and first.usage.output_tokens_details.reasoning_tokens > 0
    follow = client.responses.create(
        model="gpt", input="And again", previous_response_id=first.id, reasoning={"effort": "low"}
    )
    assert follow.output_text == upstream.reply
    sent_back = responses_sent(upstream)[-1]["input"][1]
    assert sent_back["encrypted_content"] == reasoning.encrypted_content


def test_a_follow_up_drops_reasoning_the_provider_cannot_read(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    """Without its encrypted content, a reasoning item is only an id the provider never stored
    (the gateway asks it to store nothing): the follow-up goes on without it."""
    first = client.responses.create(model="gpt", input="Say hi", reasoning={"effort": "low"})
    assert [item.type for item in first.output] == ["reasoning", "message"]
    follow = client.responses.create(model="gpt", input="And again", previous_response_id=first.id)
    assert follow.output_text == upstream.reply
    sent = [item.get("type") for item in responses_sent(upstream)[-1]["input"]]
    assert sent == ["message", "message", "message"]


def test_a_history_sent_back_whole_goes_on_without_unreadable_reasoning(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    """What the OpenAI Agents SDK sends after a tool call: the input, then every output item
    of the last response (reasoning by id only), then the tool's output."""
    upstream.call_tools = True
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.responses.create(
        model="gpt", input=history, tools=[WEATHER], reasoning={"effort": "low"}
    )
    reasoning, call = first.output
    assert (reasoning.type, call.type) == ("reasoning", "function_call")
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "rain"})
    second = client.responses.create(
        model="gpt", input=history, tools=[WEATHER], reasoning={"effort": "low"}
    )
    assert second.output_text == "The tool said: rain"
    sent = [item.get("type", "message") for item in responses_sent(upstream)[-1]["input"]]
    assert sent == ["message", "function_call", "function_call_output"]


def test_reasoning_summary_streams_as_its_own_events(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    with client.responses.stream(
        model="gpt", input="Say hi", reasoning={"effort": "low", "summary": "auto"}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    summary = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(summary) == upstream.thoughts
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == upstream.reply


class City(BaseModel):
    city: str
    country: str


def test_structured_output_reaches_the_provider_and_parses(
    client: openai.OpenAI, upstream: OpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "reply", '{"city": "Paris", "country": "France"}')
    parsed = client.responses.parse(model="gpt", input="Where?", text_format=City)
    assert parsed.output_parsed == City(city="Paris", country="France")
    text = responses_sent(upstream)[-1]["text"]
    assert text["format"]["type"] == "json_schema"
    assert set(text["format"]["schema"]["properties"]) == {"city", "country"}


def test_cached_tokens_are_reported_and_priced_at_the_cache_price(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.cached_tokens = 3
    raw = client.responses.with_raw_response.create(model="gpt", input="one two three four")
    response = raw.parse()
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 3
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert item["cached_tokens"] == 3
    expected = 1 * INPUT_PRICE + 3 * CACHED_PRICE + 5 * OUTPUT_PRICE
    assert Decimal(item["cost_usd"]) == pytest.approx(expected)


def test_a_providers_refusal_reaches_the_caller_in_its_own_words(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    forged = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAforged"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt", input=[forged, {"role": "user", "content": "hi"}])
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["message"] == (
        "Model 'gpt': The encrypted content for item rs_1 could not be verified."
    )
    assert error["type"] == "invalid_request_error"


def test_a_stream_cut_by_the_provider_ends_with_an_error_event_and_is_metered(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.fail_next(Fault(cut_stream=True))
    with httpx.stream(
        "POST",
        f"{client.base_url}responses",
        json={"model": "gpt", "input": "Say hi", "stream": True},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    ) as answer:
        request_id = answer.headers["x-request-id"]
        events = [
            json.loads(line.removeprefix("data: "))
            for line in answer.iter_lines()
            if line.startswith("data: ")
        ]
    assert events[0]["type"] == "response.created"
    assert "response.completed" not in [event["type"] for event in events]
    assert events[-1]["type"] == "error"
    assert events[-1]["sequence_number"] > events[-2]["sequence_number"]
    item = usage_item(aws["UsageTable"], request_id)
    assert (item["endpoint"], item["status"]) == ("/v1/responses", 502)
