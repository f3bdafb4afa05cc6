"""pipeline.response_items: a stored response's input items as the API lists them (ids of
their own, stable across turns), its cancel, and the checks on a list's query."""

from __future__ import annotations

from typing import Any

import pytest
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.response_items import ItemsQuery, cancelled, input_items, listed_items
from llm_proxy.store.stored_responses import StoredResponse


def stored(items: list[Any], **response: Any) -> StoredResponse:
    return StoredResponse("resp_1", "key", items, {"id": "resp_1", **response})


def test_a_finished_background_response_is_cancelled_as_it_is() -> None:
    response = stored([], background=True, status="completed")
    assert cancelled(response) is response.response


@pytest.mark.parametrize("background", [None, False])
def test_any_other_response_cannot_be_cancelled(background: bool | None) -> None:
    with pytest.raises(ProxyError) as refused:
        cancelled(stored([], background=background, status="completed"))
    assert (refused.value.status, refused.value.message) == (
        400,
        "Cannot cancel a synchronous response.",
    )


def test_items_keep_their_ids_as_a_conversation_goes_on() -> None:
    first = [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]
    answer = {"id": "msg_answer", "type": "message", "role": "assistant", "content": []}
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    later = listed_items([*first, answer, call])
    ids = [item["id"] for item in later]
    assert ids[:2] == [item["id"] for item in listed_items(first)]
    assert ids[0] != ids[1], "the same text twice is two items"
    assert ids[2] == "msg_answer" and ids[3].startswith("fc_")


def test_a_string_input_is_one_user_message() -> None:
    [item] = listed_items(["hi"])
    assert item["content"] == [{"type": "input_text", "text": "hi"}]
    assert (item["type"], item["role"], item["status"]) == ("message", "user", "completed")


def test_an_empty_input_is_an_empty_page() -> None:
    page = input_items(stored([]), ItemsQuery())
    assert page == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"order": "up"}, "order"),
        ({"include": ["all"]}, "include"),
    ],
)
def test_a_bad_query_names_its_parameter(query: dict[str, Any], param: str) -> None:
    given = {"limit": None, "order": None, "after": None, "before": None, "include": []}
    with pytest.raises(ProxyError) as refused:
        ItemsQuery.parse(**{**given, **query})
    assert (refused.value.status, refused.value.param) == (400, param)
