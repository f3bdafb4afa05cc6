"""The Responses API's routes around a stored response, as OpenAI's spec defines them: its
input items as a list page (`GET /v1/responses/{id}/input_items`), its cancellation
(`POST /v1/responses/{id}/cancel`), and the input tokens a request would send
(`POST /v1/responses/input_tokens`, a row of `apis`).

A stored response keeps its input as the client sent it (earlier turns expanded), so the
items are listed in the API's item shapes here, each with an id that stays the same across
calls, containers and the turns of one conversation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from openai.types.responses import ResponseIncludable

from llm_proxy.errors import INVALID_VALUE
from llm_proxy.pipeline.billed_input import count_chat_input, responses_as_chat
from llm_proxy.store.stored_responses import StoredResponse

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
ORDERS = ("asc", "desc")
INCLUDABLE = frozenset(get_args(ResponseIncludable))
# The prefixes of OpenAI's item ids; an item of another type gets `item_`.
ID_PREFIXES = {"message": "msg", "function_call": "fc", "reasoning": "rs"}
ID_HEX_DIGITS = 48


def check_response_id(response_id: str) -> None:
    """An id that cannot be a response's is refused as OpenAI refuses it (400, not 404)."""
    if not response_id.startswith("resp"):
        raise INVALID_VALUE(
            f"Invalid 'response_id': '{response_id[:100]}'. "
            "Expected an ID that begins with 'resp'.",
            param="response_id",
        )


# -- cancel --------------------------------------------------------------------------------------


def cancelled(stored: StoredResponse) -> dict[str, Any]:
    """OpenAI cancels only responses created with `background: true`. The gateway answers
    every response before it returns, so a background one is already finished (and is
    answered as it is, as OpenAI answers a finished one); any other is refused as OpenAI
    refuses it."""
    if stored.response.get("background") is not True:
        raise INVALID_VALUE("Cannot cancel a synchronous response.")
    return stored.response


# -- input items ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemsQuery:
    """`GET /v1/responses/{id}/input_items`'s query, checked."""

    limit: int = DEFAULT_LIMIT
    order: str = "desc"
    after: str | None = None
    before: str | None = None

    @classmethod
    def parse(
        cls,
        limit: str | None,
        order: str | None,
        after: str | None,
        before: str | None,
        include: list[str],
    ) -> ItemsQuery:
        for value in include:
            if value not in INCLUDABLE:
                supported = ", ".join(f"'{name}'" for name in sorted(INCLUDABLE))
                raise INVALID_VALUE(
                    f"Invalid value for 'include': '{value[:100]}'. Supported values are: "
                    f"{supported}.",
                    param="include",
                )
        if order is not None and order not in ORDERS:
            raise INVALID_VALUE(
                f"Invalid value for 'order': '{order[:100]}'. Supported values are: "
                "'asc' and 'desc'.",
                param="order",
            )
        return cls(
            limit=parse_limit(limit),
            order=order or "desc",
            after=after,
            before=before,
        )


def parse_limit(limit: str | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    try:
        number = int(limit)
    except ValueError:
        number = 0
        valid = False
    else:
        valid = 1 <= number <= MAX_LIMIT
    if not valid:
        raise INVALID_VALUE(
            f"Invalid value for 'limit': '{limit[:100]}'. Expected an integer from 1 to "
            f"{MAX_LIMIT}.",
            param="limit",
        )
    return number


def input_items(stored: StoredResponse, query: ItemsQuery) -> dict[str, Any]:
    """A page of the response's input items (OpenAI's `ResponseItemList`)."""
    items = listed_items(stored.input)
    if query.order == "desc":
        items.reverse()
    ids = [item["id"] for item in items]
    start, end = 0, len(items)
    if query.after is not None:
        start = position(ids, query.after, "after") + 1
    if query.before is not None:
        end = position(ids, query.before, "before")
    window = items[start:end]
    # Paging back from `before` takes the items just before it.
    page = window[-query.limit :] if query.before and not query.after else window[: query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(window) > len(page),
    }


def position(ids: list[str], item_id: str, param: str) -> int:
    try:
        return ids.index(item_id)
    except ValueError:
        raise INVALID_VALUE(
            f"Invalid value for '{param}': no input item of this response has id "
            f"'{item_id[:100]}'.",
            param=param,
        ) from None


def listed_items(items: list[Any]) -> list[dict[str, Any]]:
    """The items as the API lists them, in order. An item without an id of its own gets one
    from a digest of the conversation up to it: the same on every call, and the same in each
    later response that carries the conversation on (`previous_response_id`)."""
    digest = hashlib.sha256()
    listed = []
    for item in items:
        digest.update(json.dumps(item, sort_keys=True, separators=(",", ":")).encode())
        shaped = as_item(item)
        if not isinstance(shaped.get("id"), str):
            prefix = ID_PREFIXES.get(str(shaped.get("type")), "item")
            shaped = {"id": f"{prefix}_{digest.hexdigest()[:ID_HEX_DIGITS]}", **shaped}
        listed.append(shaped)
    return listed


def as_item(item: Any) -> dict[str, Any]:
    """An input item in the shape the API lists it: a message typed, its text as content
    parts, its status completed."""
    if not isinstance(item, dict):
        item = {"type": "message", "role": "user", "content": str(item)}
    shaped = dict(item)
    if "type" not in shaped and "role" in shaped:
        shaped["type"] = "message"
    if shaped.get("type") == "message":
        role = str(shaped.get("role") or "user")
        content = shaped.get("content")
        if isinstance(content, str):
            shaped["content"] = [text_part(role, content)]
        shaped.setdefault("status", "completed")
    return shaped


def text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


# -- input tokens --------------------------------------------------------------------------------


def input_tokens_answer(response: Any, request: GatewayRequest) -> dict[str, Any]:
    """`POST /v1/responses/input_tokens`: the request's input (its stored conversation
    included), instructions and tools, counted by litellm's tokenizer for the model as the
    chat request they become; nothing is called and nothing is spent."""
    with unreadable("input"):
        chat = responses_as_chat(request.body)
    return {
        "object": "response.input_tokens",
        "input_tokens": count_chat_input(chat, request.model),
    }


@contextmanager
def unreadable(param: str) -> Iterator[None]:
    """litellm's translation refusing a field, as a 400 naming it."""
    try:
        yield
    except Exception as exc:
        raise INVALID_VALUE(f"'{param}' cannot be read: {str(exc)[:200]}", param=param) from None
