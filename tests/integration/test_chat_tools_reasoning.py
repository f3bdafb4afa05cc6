"""Chat completions as Roo Code, Kilo Code and Cline use them, with the openai SDK against the
OpenAI-format double: native tool calls (parallel, streamed, their results sent back),
reasoning from DeepSeek and OpenRouter models passed out in JSON and streams and accepted
back, and cached prompt tokens reported and priced."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, gateway_config, openai_double
from tests.support.stack import MASTER_KEY, usage_item
from tests.support.streams import streamed_reasoning

INPUT_PRICE, OUTPUT_PRICE, CACHED_PRICE = (Decimal("1e-6"), Decimal("2e-6"), Decimal("1e-7"))
CONFIG = gateway_config(
    openai_double(
        "gpt",
        "openai/gpt-4o",
        input_cost_per_token=INPUT_PRICE,
        output_cost_per_token=OUTPUT_PRICE,
        cache_read_input_token_cost=CACHED_PRICE,
    ),
    openai_double("deepseek-reasoner", "deepseek/deepseek-reasoner"),
    openai_double("r1", "openrouter/deepseek/deepseek-r1"),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)


def tool(name: str) -> Any:
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }


TOOLS = [tool("get_weather"), tool("get_time")]


@pytest.fixture(scope="module")
def client(gateway_for: Callable[..., str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_for(CONFIG)}/v1", api_key=MASTER_KEY, max_retries=0)


def chats_sent(upstream: OpenAIUpstream) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.path.endswith("/chat/completions")]


def test_a_tool_call_and_its_result_round_trip(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.call_tools = True
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="gpt", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model="gpt", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "The tool said: sunny"
    sent = chats_sent(upstream)[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"] == call.id


@pytest.mark.parametrize(("parallel", "calls"), [(True, 2), (False, 1)])
def test_streamed_tool_calls_arrive_intact(
    client: openai.OpenAI, upstream: OpenAIUpstream, parallel: bool, calls: int
) -> None:
    upstream.call_tools, upstream.parallel_calls = True, 2
    stream = client.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "Weather and time?"}],
        tools=TOOLS,
        parallel_tool_calls=parallel,
        stream=True,
    )
    assembled: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = assembled.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert sorted(assembled) == list(range(calls))
    names = ["get_weather", "get_time"][:calls]
    assert [assembled[i]["name"] for i in range(calls)] == names
    for call in assembled.values():
        assert call["id"].startswith("call_")
        assert json.loads(call["arguments"]) == {"city": "Paris"}


def test_deepseek_reasoning_content_is_passed_out_in_json_and_streams(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Say hi"}]
    answer = client.chat.completions.create(model="deepseek-reasoner", messages=messages)
    message = answer.choices[0].message
    assert message.content == upstream.reply
    assert (message.model_extra or {}).get("reasoning_content") == upstream.thoughts
    stream = client.chat.completions.create(
        model="deepseek-reasoner", messages=messages, stream=True
    )
    reasoning, content = streamed_reasoning(stream)
    assert (reasoning, content) == (upstream.thoughts, upstream.reply)


def test_openrouter_reasoning_is_passed_out_as_reasoning_content(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.reasoning_field = "reasoning"  # OpenRouter's name for it
    answer = client.chat.completions.create(
        model="r1", messages=[{"role": "user", "content": "Say hi"}], reasoning_effort="low"
    )
    message = answer.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == upstream.thoughts
    assert message.content == upstream.reply


def test_reasoning_content_is_accepted_back_in_a_tool_loop(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    """DeepSeek's thinking mode wants the reasoning of a tool-calling turn sent back with it;
    Roo Code and Kilo Code send it."""
    upstream.call_tools = True
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="deepseek-reasoner", messages=messages, tools=TOOLS
    )
    said = first.choices[0].message.model_dump(exclude_none=True)
    assert said["reasoning_content"] == upstream.thoughts and said["tool_calls"]
    messages += [
        said,
        {"role": "tool", "tool_call_id": said["tool_calls"][0]["id"], "content": "sunny"},
    ]
    second = client.chat.completions.create(
        model="deepseek-reasoner", messages=messages, tools=TOOLS
    )
    assert second.choices[0].message.content == "The tool said: sunny"
    assistant = chats_sent(upstream)[-1]["messages"][1]
    assert assistant["reasoning_content"] == upstream.thoughts


def test_cached_prompt_tokens_are_reported_and_priced(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.cached_tokens = 2
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "one two three"}]
    )
    answer = raw.parse()
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 2
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    # "one two three" and one per message: four prompt tokens, two of them from the cache.
    assert (item["prompt_tokens"], item["cached_tokens"], item["completion_tokens"]) == (4, 2, 5)
    expected = 2 * INPUT_PRICE + 2 * CACHED_PRICE + 5 * OUTPUT_PRICE
    assert Decimal(item["cost_usd"]) == pytest.approx(expected)
