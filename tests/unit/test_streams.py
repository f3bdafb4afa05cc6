"""pipeline.streams: one metered stream for every API. A stream is metered once when it ends,
however it ends (completed, failed after its start, cut by the client), and each API's encoder
frames its items and its failures in that API's own way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import litellm
import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.apis import APIS, Api
from llm_proxy.pipeline.chat import carries_something
from llm_proxy.pipeline.request import GatewayRequest, RequestState
from llm_proxy.pipeline.streams import CLIENT_CLOSED_REQUEST, MeteredStream, OpenedStream

QUESTION = [{"role": "user", "content": "hi"}]


def chunk(content: str | None = None, *, usage: dict[str, int] | None = None) -> Any:
    delta = {"role": "assistant", "content": content} if content is not None else {}
    finish = None if content is not None else "stop"
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return litellm.ModelResponseStream(id="chatcmpl-1", model="m", choices=choices, usage=usage)


def state_for(api: Api, body: dict[str, Any]) -> RequestState:
    request = GatewayRequest(
        endpoint=f"/v1/{api.name}",
        api=api,
        caller=Caller("master"),
        body={"model": "demo", "stream": True, **body},
        request_id="rid",
        model="demo",
        agent=None,
        sent={"model": "demo", "max_tokens": 8, **body} if api.translate else None,
    )
    record = UsageRecord(request_id="rid", endpoint=request.endpoint, model_requested="demo")
    return RequestState(request, record, None)


class Finished:
    """The stream's finish: how often it ran, and what the stream had when it did."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, Any, int]] = []

    async def __call__(self, stream: MeteredStream) -> None:
        self.calls.append((stream.completed, stream.reader.result, stream.state.record.status))


def metered(api: Api, source: Any, body: dict[str, Any] | None = None) -> MeteredStream:
    state = state_for(api, body or {"messages": QUESTION})
    assert api.reader is not None
    return MeteredStream(source, api.reader(state.request), state, Finished())


def finish_of(stream: MeteredStream) -> Finished:
    finished: Finished = stream._finish  # type: ignore[assignment]
    return finished


async def items_of(chunks: list[Any], fail: Exception | None = None) -> AsyncIterator[Any]:
    for item in chunks:
        yield item
    if fail is not None:
        raise fail


def encoded(stream: MeteredStream, api: Api) -> list[str]:
    assert api.encode is not None

    async def read() -> list[str]:
        events = api.encode(stream, stream.state.request)
        return [e.decode() if isinstance(e, bytes) else e async for e in events]

    return asyncio.run(read())


def test_a_completed_chat_stream_is_metered_once_with_its_usage() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    stream = metered(APIS["chat"], items_of([chunk("Hel"), chunk("lo"), chunk(usage=usage)]))
    events = encoded(stream, APIS["chat"])
    assert events[-1] == "data: [DONE]\n\n"
    assert len(events) == 4  # two deltas, the finish, [DONE]: the usage chunk is not asked for
    record = stream.state.record
    assert (record.prompt_tokens, record.completion_tokens) == (3, 2)
    assert record.ttft_ms is not None and record.latency_ms > 0
    assert finish_of(stream).calls == [(True, None, 200)]


def test_a_chat_stream_keeps_one_id_for_all_its_chunks() -> None:
    other = chunk(" there")
    other.id = "gen-42"  # some providers vary the id, or send another scheme
    stream = metered(APIS["chat"], items_of([chunk("Hi"), other, chunk()]))
    ids = {
        json.loads(e[6:])["id"] for e in encoded(stream, APIS["chat"]) if e != "data: [DONE]\n\n"
    }
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")


def test_a_chat_stream_without_usage_is_counted_by_the_gateway() -> None:
    stream = metered(APIS["chat"], items_of([chunk("Hello there"), chunk()]))
    encoded(stream, APIS["chat"])
    record = stream.state.record
    assert record.usage_estimated and record.prompt_tokens > 0 and record.completion_tokens > 0


def test_a_stream_that_carries_no_answer_fails_as_the_providers_bad_response() -> None:
    stream = metered(APIS["chat"], items_of([chunk()]))
    events = encoded(stream, APIS["chat"])
    error = json.loads(events[-1][6:])["error"]
    assert error["code"] == "provider_bad_response"
    assert finish_of(stream).calls == [(False, None, 502)]


def test_a_provider_refusal_after_the_start_is_a_502_in_each_apis_framing() -> None:
    refused = ProxyError(400, "Model 'demo': nope", "invalid_request_error", code="bad_request")
    chat = metered(APIS["chat"], items_of([chunk("Hel")], fail=refused))
    assert json.loads(encoded(chat, APIS["chat"])[-1][6:])["error"]["code"] == "provider_error"
    messages = metered(APIS["messages"], items_of([chunk("Hel")], fail=refused))
    last = encoded(messages, APIS["messages"])[-1]
    assert last.startswith("event: error\n")
    assert json.loads(last.split("data: ", 1)[1])["error"]["type"] == "api_error"
    for stream in (chat, messages):
        assert stream.state.record.status == 502
        assert len(finish_of(stream).calls) == 1


def test_a_rate_limit_after_the_start_stays_a_429() -> None:
    limited = ProxyError(429, "slow down", "rate_limit_error", code="provider_rate_limited")
    stream = metered(APIS["chat"], items_of([chunk("Hel")], fail=limited))
    encoded(stream, APIS["chat"])
    assert stream.state.record.status == 429


def test_a_client_that_hangs_up_is_metered_499_once() -> None:
    async def endless() -> AsyncIterator[Any]:
        while True:
            yield chunk("more")

    stream = metered(APIS["chat"], endless())

    async def hang_up() -> None:
        events = APIS["chat"].encode(stream, stream.state.request)  # type: ignore[misc]
        await anext(events)
        await events.aclose()  # type: ignore[attr-defined]

    asyncio.run(hang_up())
    assert stream.state.record.status == CLIENT_CLOSED_REQUEST
    assert finish_of(stream).calls == [(False, None, CLIENT_CLOSED_REQUEST)]


def responses_events(usage: dict[str, int] | None, completed: bool = True) -> list[Any]:
    response = {"id": "resp_provider", "object": "response", "status": "in_progress"}
    events: list[Any] = [
        {"type": "response.created", "response": response, "sequence_number": 0},
        {"type": "response.output_text.delta", "delta": "Hi", "sequence_number": 1},
    ]
    if completed:
        done = {**response, "status": "completed", "usage": usage}
        events.append({"type": "response.completed", "response": done, "sequence_number": 2})
    return events


def test_a_responses_stream_carries_the_gateways_id_and_its_completed_response() -> None:
    usage = {"input_tokens": 5, "output_tokens": 2}
    stream = metered(APIS["responses"], items_of(responses_events(usage)), {"input": "hi"})
    events = encoded(stream, APIS["responses"])
    assert [e.split("\n", 1)[0] for e in events] == [
        "event: response.created",
        "event: response.output_text.delta",
        "event: response.completed",
    ]
    completed = json.loads(events[-1].split("data: ", 1)[1])["response"]
    assert completed["id"].startswith("resp_") and completed["id"] != "resp_provider"
    assert completed["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    record = stream.state.record
    assert (record.prompt_tokens, record.completion_tokens) == (5, 2)
    [(done, result, status)] = finish_of(stream).calls
    assert done and status == 200 and result["id"] == completed["id"]


def test_a_responses_stream_cut_before_completed_ends_with_an_error_event() -> None:
    events_in = responses_events(None, completed=False)
    stream = metered(APIS["responses"], items_of(events_in), {"input": "hi"})
    events = encoded(stream, APIS["responses"])
    assert events[-1].startswith("event: error\n")
    error = json.loads(events[-1].split("data: ", 1)[1])
    assert error["code"] == "provider_bad_response" and error["sequence_number"] == 2
    assert finish_of(stream).calls == [(False, None, 502)]
    # What it streamed is metered: its input and the text it passed on.
    record = stream.state.record
    assert record.usage_estimated and record.prompt_tokens > 0 and record.completion_tokens == 1


@pytest.mark.parametrize("name", ["chat", "responses"])
def test_a_stream_cut_by_the_client_is_metered_for_what_it_streamed(name: str) -> None:
    api = APIS[name]
    if name == "chat":
        source, body = [chunk("one two three four five")] * 3, {"messages": QUESTION}
    else:
        delta = {"type": "response.output_text.delta", "delta": "one two three four five"}
        source, body = [delta] * 3, {"input": "hi", "instructions": "word " * 100}
    stream = metered(api, items_of(source), body)

    async def hang_up() -> None:
        events = api.encode(stream, stream.state.request)  # type: ignore[misc]
        for _ in range(3):
            await anext(events)
        await events.aclose()  # type: ignore[attr-defined]

    asyncio.run(hang_up())
    record = stream.state.record
    assert record.status == CLIENT_CLOSED_REQUEST and record.usage_estimated
    assert record.completion_tokens == 15
    # The Responses API's instructions are input the provider bills.
    assert record.prompt_tokens > (100 if name == "responses" else 0)


def test_a_stream_is_opened_up_to_its_first_item_with_something_in_it() -> None:
    async def open_both() -> tuple[OpenedStream, OpenedStream]:
        bare = await OpenedStream.open(items_of([chunk()]), carries_something)
        answered = await OpenedStream.open(items_of([chunk(), chunk("Hi")]), carries_something)
        return bare, answered

    bare, answered = asyncio.run(open_both())
    assert not bare.has_content and answered.has_content

    async def replay() -> list[Any]:
        return [item async for item in answered]

    assert len(asyncio.run(replay())) == 2  # what was read to open it comes first


CACHED = {
    "chat": {
        "id": "chatcmpl-cached",
        "object": "chat.completion",
        "created": 1,
        "model": "demo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Cached"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    },
    "responses": {
        "id": "resp_cached",
        "object": "response",
        "created_at": 1,
        "model": "demo",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Cached", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
    },
}


@pytest.mark.parametrize("name", ["chat", "responses"])
def test_a_cached_answer_replays_as_the_apis_stream(name: str) -> None:
    api = APIS[name]  # type: ignore[index]
    assert api.reader is not None and api.from_cache is not None
    answer = api.from_cache(CACHED[name])
    body = {"input": "hi"} if name == "responses" else {"messages": QUESTION}
    stream = metered(api, api.reader.replay(answer), body)
    events = encoded(stream, api)
    assert any("Cached" in event for event in events)
    assert finish_of(stream).calls[0][0] is True


def test_responses_events_are_named_as_the_api_spells_them() -> None:
    from litellm.types.llms.openai import ResponsesAPIStreamEvents

    events = responses_events({"input_tokens": 1, "output_tokens": 1})
    events[0]["type"] = ResponsesAPIStreamEvents.RESPONSE_CREATED  # as litellm gives it
    stream = metered(APIS["responses"], items_of(events), {"input": "hi"})
    first = encoded(stream, APIS["responses"])[0]
    assert first.startswith("event: response.created\n")
    assert json.loads(first.split("data: ", 1)[1])["type"] == "response.created"
