"""Extended thinking and tool use through the gateway to an Anthropic deployment, with the
official anthropic SDK on `/v1/messages` and the openai SDK on `/v1/chat/completions`: the
thinking blocks and their signatures reach the client and come back to the provider as they
were (the double refuses a block it did not sign), tool calls and their results make the whole
round trip, and every answer is metered with the provider's token counts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from devstack.doubles.anthropic_upstream import (
    REDACTED_THINKING_TOKENS,
    TOOL_USE_TOKENS,
    AnthropicUpstream,
)
from devstack.server import serving
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

QUESTION = "What is the weather in Paris today"  # 7 tokens for the double
THINKING = {"type": "enabled", "budget_tokens": 1024}
MAX_TOKENS = 2048
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}
TOOL_OUTPUT = "18 degrees and sunny"
INPUT_PRICE, OUTPUT_PRICE = 0.000003, 0.000015


def config_for(base: str) -> str:
    anthropic = {"api_base": base, "api_key": "os.environ/ANTHROPIC_API_KEY"}
    return gateway_config(
        deployment(
            "claude",
            "anthropic/claude-sonnet-4-5",
            **anthropic,
            input_cost_per_token=0.000003,
            output_cost_per_token=0.000015,
            model_info={"allowed_params": ["thinking"]},
        ),
        deployment("sonnet", "anthropic/claude-sonnet-4-5", **anthropic),
        deployment("claude-plain", "anthropic/claude-sonnet-4-5", **anthropic),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


@pytest.fixture(scope="module")
def double() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as served:
        yield served


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], double: AnthropicUpstream) -> str:
    return gateway_for(config_for(double.base_url))


@pytest.fixture
def client(url: str, double: AnthropicUpstream) -> anthropic.Anthropic:
    double.reset()
    return anthropic.Anthropic(base_url=url, api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def chat(url: str, double: AnthropicUpstream) -> openai.OpenAI:
    double.reset()
    return openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)


def words(text: str) -> int:
    return len(text.split())


def blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    """A message's content as the next request sends it back."""
    return [block.model_dump(exclude_none=True) for block in message.content]


def ask(client: anthropic.Anthropic, messages: list[Any], **params: Any) -> Any:
    """A raw response (for its `x-request-id`) to a Messages request."""
    return client.messages.with_raw_response.create(
        model="claude", max_tokens=MAX_TOKENS, messages=messages, **params
    )


def metered(aws: dict[str, str], request_id: str, prompt: int, completion: int) -> None:
    item = usage_item(aws["UsageTable"], request_id)
    assert item["endpoint"] == "/v1/messages"
    assert (item["prompt_tokens"], item["completion_tokens"]) == (prompt, completion)
    assert float(item["cost_usd"]) == pytest.approx(
        prompt * INPUT_PRICE + completion * OUTPUT_PRICE
    )


@pytest.mark.parametrize("redacted", [False, True])
def test_thinking_blocks_come_back_to_the_provider_unchanged(
    client: anthropic.Anthropic, double: AnthropicUpstream, aws: dict[str, str], redacted: bool
) -> None:
    double.redacted = redacted
    raw = ask(client, [{"role": "user", "content": QUESTION}], thinking=THINKING)
    message = raw.parse()
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", *(["redacted_thinking"] if redacted else []), "text"]
    thinking = message.content[0]
    assert thinking.type == "thinking"
    assert thinking.thinking == double.thoughts
    assert thinking.signature == double.sign(double.thoughts)
    answered = double.requests[-1]
    assert answered.body["thinking"] == THINKING
    assert answered.answer is not None
    assert blocks(message) == answered.answer["content"]  # redacted `data` included
    output = words(double.thoughts) + words(double.reply)
    output += REDACTED_THINKING_TOKENS if redacted else 0
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, output)
    metered(aws, raw.headers["x-request-id"], 7, output)

    follow_up = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": blocks(message)},
        {"role": "user", "content": "And tomorrow"},
    ]
    again = ask(client, follow_up, thinking=THINKING).parse()
    assert again.content[-1].type == "text" and again.content[-1].text == double.reply
    assert double.requests[-1].body["messages"][1]["content"] == blocks(message)


@pytest.mark.parametrize(
    ("block", "field", "problem"),
    [
        (0, "signature", "Invalid `signature` in `thinking` block"),
        (0, "thinking", "Invalid `signature` in `thinking` block"),
        (1, "data", "Invalid `data` in `redacted_thinking` block"),
    ],
)
def test_a_tampered_thinking_block_is_refused_in_anthropics_shape(
    client: anthropic.Anthropic, double: AnthropicUpstream, block: int, field: str, problem: str
) -> None:
    double.redacted = True
    message = ask(client, [{"role": "user", "content": QUESTION}], thinking=THINKING).parse()
    content = blocks(message)
    original = content[block][field]
    content[block][field] = ("Y" if original.startswith("X") else "X") + original[1:]
    follow_up = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": content},
        {"role": "user", "content": "And tomorrow"},
    ]
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(client, follow_up, thinking=THINKING)
    assert refused.value.status_code == 400
    body: Any = refused.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert f"messages.1.content.{block}: {problem}" in body["error"]["message"]
    assert double.requests[-1].body["messages"][1]["content"] == content


def test_streamed_thinking_has_its_deltas_and_signature(
    client: anthropic.Anthropic, double: AnthropicUpstream, aws: dict[str, str]
) -> None:
    with client.messages.stream(
        model="claude",
        max_tokens=MAX_TOKENS,
        thinking=THINKING,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": QUESTION}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    deltas = [event.delta for event in events if event.type == "content_block_delta"]
    thoughts = "".join(d.thinking for d in deltas if d.type == "thinking_delta")
    signatures = [d.signature for d in deltas if d.type == "signature_delta"]
    assert thoughts == double.thoughts
    assert signatures == [double.sign(double.thoughts)]
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == double.sign(double.thoughts)
    start = next(event for event in events if event.type == "message_start")
    # message_start's count is the gateway's own, made before the provider answers (litellm's
    # chat stream has no usage until its end); the final usage is the provider's.
    assert start.message.usage.input_tokens > 0
    assert final.usage.input_tokens == 7
    output = words(double.thoughts) + words(double.reply)
    assert final.usage.output_tokens == output
    metered(aws, request_id, 7, output)


def tool_use_of(message: anthropic.types.Message) -> anthropic.types.ToolUseBlock:
    assert message.stop_reason == "tool_use"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 1
    return calls[0]


def tool_turns(message: anthropic.types.Message, tool_use_id: str) -> list[Any]:
    return [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": blocks(message)},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool_use_id, "content": TOOL_OUTPUT}
            ],
        },
    ]


def test_a_tool_call_and_its_result_make_the_round_trip(
    client: anthropic.Anthropic, double: AnthropicUpstream, aws: dict[str, str]
) -> None:
    double.call_tools = True
    raw = ask(client, [{"role": "user", "content": QUESTION}], tools=[WEATHER_TOOL])
    message = raw.parse()
    call = tool_use_of(message)
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    assert double.requests[-1].body["tools"] == [WEATHER_TOOL]
    assert message.usage.output_tokens == TOOL_USE_TOKENS
    metered(aws, raw.headers["x-request-id"], 7, TOOL_USE_TOKENS)

    raw = ask(client, tool_turns(message, call.id), tools=[WEATHER_TOOL])
    answer = raw.parse()
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"
    assert answer.content[0].text == f"The tool said: {TOOL_OUTPUT}"
    sent = double.requests[-1].body["messages"]
    assert sent[1]["content"] == blocks(message)
    assert sent[2]["content"][0]["tool_use_id"] == call.id
    assert sent[2]["content"][0]["type"] == "tool_result"
    metered(aws, raw.headers["x-request-id"], 7, words(f"The tool said: {TOOL_OUTPUT}"))


def test_a_streamed_tool_call_and_its_result_make_the_round_trip(
    client: anthropic.Anthropic, double: AnthropicUpstream, aws: dict[str, str]
) -> None:
    double.call_tools = True
    with client.messages.stream(
        model="claude",
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": QUESTION}],
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    call = tool_use_of(message)
    assert call.id == (double.requests[-1].answer or {})["content"][0]["id"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    pieces = [
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    ]
    assert len(pieces) > 1 and "".join(pieces) == '{"city": "Paris"}'
    assert message.usage.output_tokens == TOOL_USE_TOKENS
    metered(aws, request_id, 7, TOOL_USE_TOKENS)

    with client.messages.stream(
        model="claude",
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=tool_turns(message, call.id),
    ) as stream:
        answer = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert answer.content[0].type == "text"
    assert answer.content[0].text == f"The tool said: {TOOL_OUTPUT}"
    assert double.requests[-1].body["messages"][2]["content"][0]["tool_use_id"] == call.id
    metered(aws, request_id, 7, words(f"The tool said: {TOOL_OUTPUT}"))


@pytest.mark.parametrize("stream", [False, True])
def test_interleaved_thinking_survives_a_tool_loop(
    client: anthropic.Anthropic, double: AnthropicUpstream, stream: bool
) -> None:
    double.call_tools = True
    params: dict[str, Any] = {"thinking": THINKING, "tools": [WEATHER_TOOL]}
    if stream:
        with client.messages.stream(
            model="claude",
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": QUESTION}],
            **params,
        ) as opened:
            message = opened.get_final_message()
    else:
        message = ask(client, [{"role": "user", "content": QUESTION}], **params).parse()
    assert [block.type for block in message.content] == ["thinking", "tool_use"]
    assert message.content[0].type == "thinking"
    assert message.content[0].signature == double.sign(double.thoughts)
    call = tool_use_of(message)

    answer = ask(client, tool_turns(message, call.id), **params).parse()
    assert [block.type for block in answer.content] == ["thinking", "text"]
    assert answer.content[1].type == "text"
    assert answer.content[1].text == f"The tool said: {TOOL_OUTPUT}"
    assert double.requests[-1].body["messages"][1]["content"] == blocks(message)


def test_a_tool_loop_without_the_thinking_block_is_refused(
    client: anthropic.Anthropic, double: AnthropicUpstream
) -> None:
    """The provider's rule the tool loops above satisfy: with thinking on, the assistant turn
    whose tool call is answered must open with its thinking block."""
    double.call_tools = True
    params: dict[str, Any] = {"thinking": THINKING, "tools": [WEATHER_TOOL]}
    message = ask(client, [{"role": "user", "content": QUESTION}], **params).parse()
    turns = tool_turns(message, tool_use_of(message).id)
    turns[1]["content"] = [block for block in turns[1]["content"] if block["type"] == "tool_use"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(client, turns, **params)
    body: Any = refused.value.body
    assert body["error"]["type"] == "invalid_request_error"
    assert "Expected `thinking` or `redacted_thinking`" in body["error"]["message"]


def test_the_thinking_budget_reaches_a_group_of_any_name(
    client: anthropic.Anthropic, double: AnthropicUpstream
) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 5000}
    client.messages.create(
        model="sonnet",
        max_tokens=8000,
        thinking=thinking,
        messages=[{"role": "user", "content": QUESTION}],
    )
    assert double.requests[-1].body["thinking"] == thinking


def test_a_streamed_message_id_has_one_prefix(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        final = stream.get_final_message()
    assert final.id.startswith("msg_") and not final.id.startswith("msg_msg_")


def test_thinking_through_chat_completions(chat: openai.OpenAI, double: AnthropicUpstream) -> None:
    completion = chat.chat.completions.create(
        model="claude",
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"thinking": THINKING},
    )
    assert double.requests[-1].body["thinking"] == THINKING
    message: Any = completion.choices[0].message
    assert message.content == double.reply
    assert message.reasoning_content == double.thoughts
    assert message.thinking_blocks == [
        {"type": "thinking", "thinking": double.thoughts, "signature": double.sign(double.thoughts)}
    ]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == words(double.thoughts) + words(double.reply)


def test_streamed_thinking_through_chat_completions(
    chat: openai.OpenAI, double: AnthropicUpstream
) -> None:
    chunks = list(
        chat.chat.completions.create(
            model="claude",
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"thinking": THINKING},
            stream=True,
        )
    )
    deltas: list[Any] = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas)
    text = "".join(delta.content or "" for delta in deltas)
    assert reasoning == double.thoughts
    assert text == double.reply
    signed = [
        block
        for delta in deltas
        for block in getattr(delta, "thinking_blocks", None) or []
        if block.get("signature")
    ]
    assert signed and signed[-1]["signature"] == double.sign(double.thoughts)


def test_reasoning_effort_turns_thinking_on_for_chat_completions(
    chat: openai.OpenAI, double: AnthropicUpstream
) -> None:
    completion = chat.chat.completions.create(
        model="claude-plain",
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": QUESTION}],
        reasoning_effort="low",
    )
    sent = double.requests[-1].body
    assert sent["thinking"]["type"] == "enabled"
    assert sent["max_tokens"] > sent["thinking"]["budget_tokens"]
    message: Any = completion.choices[0].message
    assert message.reasoning_content == double.thoughts


def test_thinking_needs_the_operators_leave_on_chat_completions(
    chat: openai.OpenAI, double: AnthropicUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        chat.chat.completions.create(
            model="claude-plain",
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"thinking": THINKING},
        )
    assert "thinking" in str(refused.value)
    assert double.requests == []


CHAT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": WEATHER_TOOL["name"], "parameters": WEATHER_TOOL["input_schema"]},
}


def test_a_chat_tool_loop_sends_the_thinking_blocks_back(
    chat: openai.OpenAI, double: AnthropicUpstream
) -> None:
    """An OpenAI-format client keeps `thinking_blocks` on the assistant message it sends back;
    litellm turns them into the thinking block the provider checks."""
    double.call_tools = True
    params: dict[str, Any] = {"tools": [CHAT_TOOL], "extra_body": {"thinking": THINKING}}
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = chat.chat.completions.create(
        model="claude", max_tokens=MAX_TOKENS, messages=messages, **params
    )
    called: Any = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert called.tool_calls[0].function.name == "get_weather"
    signed = {
        "type": "thinking",
        "thinking": double.thoughts,
        "signature": double.sign(double.thoughts),
    }
    assert called.thinking_blocks == [signed]
    messages.append(called.model_dump(exclude_none=True))
    messages.append(
        {"role": "tool", "tool_call_id": called.tool_calls[0].id, "content": TOOL_OUTPUT}
    )
    answer = chat.chat.completions.create(
        model="claude", max_tokens=MAX_TOKENS, messages=messages, **params
    )
    assert answer.choices[0].message.content == f"The tool said: {TOOL_OUTPUT}"
    sent = double.requests[-1].body["messages"][1]["content"]
    assert sent[0] == signed
    assert sent[1]["type"] == "tool_use" and sent[1]["id"] == called.tool_calls[0].id
