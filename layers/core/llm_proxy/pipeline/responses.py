"""OpenAI's Responses API over the pipeline: the conversation a `previous_response_id` names,
the gateway's own response ids, and a stream read as the API's events (`ResponsesReader`) and
re-emitted as its named SSE events (`responses_events`).

litellm's `aresponses` forwards to deployments that serve the Responses API natively (OpenAI)
and bridges the others through chat completions; either way the gateway keeps the
conversation itself (stored responses), so a follow-up may be answered by any deployment.

A native answer lists each web search the provider ran as a `web_search_call` output item
(OpenAI's Responses API reference); their count is carried in the usage the meter reads
(`searched`, `searched_usage`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import litellm

from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.errors import PROVIDER_BAD_RESPONSE, PROVIDER_ERROR, ProxyError
from llm_proxy.pipeline.meter import record_usage
from llm_proxy.pipeline.streams import StreamReader
from llm_proxy.store.stored_responses import StoredResponse, StoredResponses

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest
    from llm_proxy.pipeline.streams import MeteredStream


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def as_items(value: Any) -> list[Any]:
    """A Responses API `input`: a string is one user message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value)


def readable_input(value: Any) -> Any:
    """The input a provider is sent. A reasoning item without its encrypted content is only an
    id, and the provider keeps nothing (the gateway asks it to store nothing): OpenAI refuses
    such an item, so it is left out and the model goes on without that reasoning."""
    if not isinstance(value, list):
        return value
    return [
        item
        for item in value
        if not (
            isinstance(item, dict)
            and item.get("type") == "reasoning"
            and not item.get("encrypted_content")
        )
    ]


def with_conversation(request: GatewayRequest, store: StoredResponses) -> GatewayRequest:
    """The request with the stored conversation of its `previous_response_id` before its own
    input; the provider sees a whole conversation and nothing it must remember."""
    previous = request.body.get("previous_response_id")
    if not previous:
        return request
    stored = store.get(str(previous), request.caller.key_id, param="previous_response_id")
    body = {**request.body, "input": [*stored.conversation, *as_items(request.body.get("input"))]}
    return replace(request, body=body)


def stores(request: GatewayRequest) -> bool:
    """The API's default: a response is stored unless `store` is false."""
    return request.body.get("store") is not False


def to_stored(request: GatewayRequest, response: dict[str, Any]) -> StoredResponse:
    return StoredResponse(
        response_id=str(response["id"]),
        key_id=request.caller.key_id,
        input=as_items(request.body.get("input")),
        response=spec_response(response, request.as_sent),
    )


# What a response says it was made with, where a deployment's answer leaves it out (litellm's
# bridge through chat completions does): the caller's value, else null.
ECHOED = ("instructions", "temperature", "top_p")


def spec_response(response: dict[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
    """A response as OpenAI's spec has it (`Response`): every field it requires present, as
    null where there is nothing, and what the caller asked for as the caller asked it."""
    for name in ECHOED:
        value = sent.get(name)
        response[name] = value if value is not None else response.get(name)
    metadata = sent.get("metadata")
    response["metadata"] = metadata if isinstance(metadata, dict) else response.get("metadata")
    # The provider is asked to store nothing (the gateway keeps the conversation): the
    # response says whether the gateway stored it.
    response["store"] = sent.get("store") is not False
    response.setdefault("error", None)
    response.setdefault("incomplete_details", None)
    response.setdefault("tool_choice", "auto")
    response.setdefault("parallel_tool_calls", True)
    for tool in response.setdefault("tools", []):
        if isinstance(tool, dict) and tool.get("type") == "function":
            tool.setdefault("parameters", None)
            tool.setdefault("strict", None)
    for item in response.setdefault("output", []):
        spec_item(item)
    return complete_usage(response)


def spec_item(item: Any) -> Any:
    """An output item as the spec has it: a message's text parts with their annotations and
    logprobs, a reasoning item with its summary."""
    if not isinstance(item, dict):
        return item
    if item.get("type") == "reasoning":
        item.setdefault("summary", [])
    for part in item.get("content") or []:
        spec_part(part)
    return item


def spec_part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "output_text":
        part.setdefault("annotations", [])
        part.setdefault("logprobs", [])
    return part


async def replayed_events(response: Any) -> AsyncIterator[dict[str, Any]]:
    """A whole response as the events of a stream (a deployment that answers a stream with one
    response, such as a `mock_response`, or a cached answer): created, each output item with
    its text, completed."""
    whole = _as_dict(response)
    # Nothing is used yet: the spec's usage is an object or absent, never null.
    pending = {**whole, "status": "in_progress", "output": []}
    pending.pop("usage", None)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
    ]
    for index, item in enumerate(whole.get("output") or []):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        for part_index, part in enumerate(item.get("content") or []):
            where = {"item_id": item.get("id"), "output_index": index, "content_index": part_index}
            events.append({"type": "response.content_part.added", **where, "part": part})
            if part.get("type") == "output_text":
                text = part.get("text", "")
                events.append({"type": "response.output_text.delta", **where, "delta": text})
                events.append({"type": "response.output_text.done", **where, "text": text})
            events.append({"type": "response.content_part.done", **where, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": whole})
    for number, event in enumerate(events):
        yield {**event, "sequence_number": number}


def complete_usage(response: dict[str, Any]) -> dict[str, Any]:
    """A response's usage with every field the API always sends (Codex CLI refuses a usage
    without `output_tokens_details.reasoning_tokens`); litellm leaves some out."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return response
    for name in ("input_tokens", "output_tokens"):
        usage[name] = int(usage.get(name) or 0)
    usage["total_tokens"] = int(usage.get("total_tokens") or 0) or (
        usage["input_tokens"] + usage["output_tokens"]
    )
    usage.pop("cost", None)  # litellm's estimate; the gateway meters the cost itself
    usage.pop(SEARCH_COUNT, None)  # the meter's; the API counts searches as output items
    inputs = usage.get("input_tokens_details") or {}
    inputs["cached_tokens"] = int(inputs.get("cached_tokens") or 0)
    inputs["cache_write_tokens"] = int(inputs.get("cache_write_tokens") or 0)
    outputs = usage.get("output_tokens_details") or {}
    outputs["reasoning_tokens"] = int(outputs.get("reasoning_tokens") or 0)
    usage["input_tokens_details"], usage["output_tokens_details"] = inputs, outputs
    return response


# Where the meter reads a count of web searches (`meter.record_usage`), as litellm's chat usage
# carries Anthropic's.
SEARCH_COUNT = "server_tool_use"
WEB_SEARCH_CALL = "web_search_call"


def web_search_calls(output: Any) -> int:
    """The web searches an answer's output items say the provider ran, one item each."""
    items = output if isinstance(output, list) else []
    return sum(1 for item in items if _item_type(item) == WEB_SEARCH_CALL)


def searched(response: Any) -> Any:
    """A JSON answer with its web searches counted in its usage, for the meter."""
    usage = getattr(response, "usage", None)
    searches = web_search_calls(getattr(response, "output", None))
    if usage is not None and searches:
        setattr(usage, SEARCH_COUNT, {"web_search_requests": searches})
    return response


def searched_usage(response: Mapping[str, Any]) -> Any:
    """A streamed response's usage with its web searches counted, for the meter."""
    usage = response.get("usage")
    searches = web_search_calls(response.get("output"))
    if not isinstance(usage, dict) or not searches:
        return usage
    return {**usage, SEARCH_COUNT: {"web_search_requests": searches}}


def _item_type(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


def responses_answer(response: Any, request: GatewayRequest) -> Any:
    return spec_response(response.model_dump(exclude_none=True), request.as_sent)


def from_cache(answer: dict[str, Any]) -> Any:
    return litellm.ResponsesAPIResponse(**answer)


# The events a Responses stream opens with, before any output (litellm holds them until then).
OPENING_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})


def answers(event: Any) -> bool:
    """Whether a Responses stream's event is past its opening ones; an error event there is
    the attempt's failure, raised (the stream may still fail over)."""
    kind = event.get("type") if isinstance(event, dict) else getattr(event, "type", None)
    kind = event_name(kind)
    if kind in ("error", "response.failed"):
        raise PROVIDER_ERROR("The provider's stream failed before its answer began.")
    return kind not in OPENING_EVENTS


class ResponsesReader(StreamReader):
    """The Responses API's events under the gateway's response id, with the usage every
    response carries completed; usage and the response to store come from
    `response.completed` (a stream cut before it is metered from what was streamed)."""

    def __init__(self, request: GatewayRequest) -> None:
        super().__init__(request)
        self.response_id = new_response_id()
        self._sent = request.as_sent
        # Each function call's name by its item id, for the `arguments.done` event that the
        # spec says names it (litellm's bridge leaves the name out).
        self._call_names: dict[str, str] = {}

    def read(self, event: Any, record: UsageRecord) -> dict[str, Any]:
        data = spec_event(_as_dict(event), self._call_names)
        delta = data.get("delta")
        if str(data.get("type")).endswith(".delta") and isinstance(delta, str):
            # Text, reasoning, a call's arguments: output the provider bills.
            self.streamed.append(delta)
        response = data.get("response")
        if isinstance(response, dict):
            response["id"] = self.response_id
            spec_response(response, self._sent)
            if data.get("type") == "response.completed":
                self.completed, self.result = True, response
                record_usage(record, searched_usage(response))
        return data

    def end(self, model: str, source: Any) -> None:
        if not self.completed:
            raise PROVIDER_BAD_RESPONSE(
                f"Model '{model}': the stream ended before the response completed."
            )

    @staticmethod
    def replay(response: Any) -> AsyncIterator[Any]:
        return replayed_events(response)


def spec_event(event: dict[str, Any], call_names: dict[str, str]) -> dict[str, Any]:
    """A stream event as the spec's variant for its type has it: items and parts whole, text
    events with their logprobs, a function call's arguments naming the function."""
    kind = event_name(event.get("type"))
    event["type"] = kind
    item = spec_item(event.get("item"))
    if isinstance(item, dict) and item.get("type") == "function_call" and item.get("name"):
        call_names[str(item.get("id"))] = str(item["name"])
    spec_part(event.get("part"))
    if kind in ("response.output_text.delta", "response.output_text.done"):
        event.setdefault("logprobs", [])
    if kind == "response.function_call_arguments.done" and not event.get("name"):
        event["name"] = call_names.get(str(event.get("item_id")), "")
    return event


def event_name(kind: Any) -> str:
    """An event's name as the API spells it (`response.created`); litellm's types are enums,
    whose str() is their Python name."""
    return str(getattr(kind, "value", kind) or "message")


def sse(event_type: str, data: Mapping[str, Any]) -> str:
    return f"event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def responses_events(stream: MeteredStream, request: GatewayRequest) -> AsyncIterator[str]:
    """Named SSE events, one per event; a failure after the start is an `error` event."""
    sequence = 0
    try:
        async for data in stream.items():
            sequence = int(data.get("sequence_number") or sequence)
            yield sse(event_name(data.get("type")), data)
    except ProxyError as error:
        error_event = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": None,
            "sequence_number": sequence + 1,
        }
        yield sse("error", error_event)


def _as_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return dict(event)
    dumped: dict[str, Any] = event.model_dump(exclude_none=True)
    return dumped
