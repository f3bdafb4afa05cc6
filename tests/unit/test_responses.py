"""pipeline.responses: the Responses API over the pipeline. A follow-up carries its stored
conversation, reasoning a provider cannot read is left out, the gateway's ids and complete
usage go out, and a whole response replays as the API's events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.apis import APIS
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.responses import (
    as_items,
    complete_usage,
    readable_input,
    replayed_events,
    spec_event,
    spec_response,
    stores,
    to_stored,
    with_conversation,
)

from tests.support.memory import MemoryStoredResponses

USER = {"type": "message", "role": "user", "content": "hi"}


def request(body: dict[str, Any], key_id: str = "k") -> GatewayRequest:
    return GatewayRequest(
        endpoint="/v1/responses",
        api=APIS["responses"],
        caller=Caller(key_id),
        body={"model": "demo", **body},
        request_id="rid",
        model="demo",
        agent=None,
    )


def test_a_string_input_is_one_user_message() -> None:
    assert as_items("hi") == [USER] and as_items(None) == [] and as_items([USER]) == [USER]


def test_reasoning_without_its_encrypted_content_is_left_out() -> None:
    kept = {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAA"}
    bare = {"type": "reasoning", "id": "rs_2"}
    assert readable_input([USER, kept, bare]) == [USER, kept]
    assert readable_input("hi") == "hi"


def test_a_follow_up_carries_the_conversation_it_names_for_its_key_only() -> None:
    store = MemoryStoredResponses()
    first = request({"input": "hi"})
    answer = {
        "id": "resp_1",
        "output": [{"type": "message", "role": "assistant", "content": "Hello"}],
    }
    store.put(to_stored(first, answer))
    follow_up = with_conversation(
        request({"input": "and?", "previous_response_id": "resp_1"}), store
    )
    assert follow_up.body["input"] == [USER, *answer["output"], *as_items("and?")]
    with pytest.raises(ProxyError) as other_key:
        with_conversation(request({"previous_response_id": "resp_1"}, key_id="other"), store)
    assert other_key.value.status == 404
    untouched = request({"input": "hi"})
    assert with_conversation(untouched, store) is untouched


def test_a_response_is_stored_unless_store_is_false() -> None:
    assert stores(request({})) and stores(request({"store": True}))
    assert not stores(request({"store": False}))


def test_usage_has_every_field_the_api_always_sends() -> None:
    response = complete_usage({"usage": {"input_tokens": 3, "output_tokens": 2, "cost": 0.1}})
    assert response["usage"] == {
        "input_tokens": 3,
        "output_tokens": 2,
        "total_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def test_a_function_calls_arguments_done_event_names_the_function() -> None:
    names: dict[str, str] = {}
    added = {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"type": "function_call", "id": "fc_1", "name": "get_weather", "arguments": ""},
    }
    spec_event(added, names)
    done = {"type": "response.function_call_arguments.done", "item_id": "fc_1", "arguments": "{}"}
    assert spec_event(done, names)["name"] == "get_weather"


def test_a_response_says_what_the_caller_asked_for_and_null_where_nothing() -> None:
    sent = {"instructions": "Be brief", "temperature": 0.5, "metadata": {"agent": "codex"}}
    made = spec_response({"id": "resp_1", "output": [], "top_p": 1.0}, sent)
    assert (made["instructions"], made["temperature"], made["top_p"]) == ("Be brief", 0.5, 1.0)
    assert made["metadata"] == {"agent": "codex"}
    assert (made["error"], made["incomplete_details"]) == (None, None)


def test_a_whole_response_replays_as_numbered_events() -> None:
    whole = {
        "id": "resp_1",
        "status": "completed",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "content": [{"type": "output_text", "text": "Hello"}],
            }
        ],
    }

    async def replay() -> list[dict[str, Any]]:
        return [event async for event in replayed_events(whole)]

    events = asyncio.run(replay())
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[0]["response"]["status"] == "in_progress"
    assert {"type": "response.output_text.delta", "delta": "Hello"}.items() <= events[4].items()
    assert events[-1] == {"type": "response.completed", "response": whole, "sequence_number": 8}
