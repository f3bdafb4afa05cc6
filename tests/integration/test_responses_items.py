"""The Responses API's routes around a stored response, with the openai SDK against the
gateway (an OpenAI deployment on the OpenAI double, stored responses in moto's DynamoDB): a
response's input items as OpenAI lists them (`client.responses.input_items.list`), its cancel
(`client.responses.cancel`), and the input-token count (`client.responses.input_tokens.count`);
each with and without `/v1`, and each refusing what it must in OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, gateway_config, openai_double
from tests.support.image_host import image_host
from tests.support.stack import MASTER_KEY

CONFIG = gateway_config(
    openai_double("gpt", "openai/gpt-5-mini"),
    openai_double("other", "openai/gpt-5-nano"),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)
ASKED: Any = [
    {"role": "developer", "content": "Answer in one line."},
    {"role": "user", "content": [{"type": "input_text", "text": "What is 2 + 2?"}]},
    {"type": "message", "role": "user", "content": "And 3 + 3?"},
]


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


def sdk(url: str, key: str = MASTER_KEY, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}{prefix}", api_key=key, max_retries=0)


def call(url: str, method: str, path: str, key: str = MASTER_KEY, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """OpenAI's error shape, whole: `{"error": {message, type, param, code}}` and nothing
    else."""
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def virtual_key(url: str, **fields: Any) -> str:
    made = call(url, "POST", "/key/generate", json=fields)
    assert made.status_code == 200, made.text
    return str(made.json()["key"])


# -- input items ---------------------------------------------------------------------------------


def test_input_items_are_listed_as_openai_lists_them(url: str) -> None:
    client = sdk(url)
    made = client.responses.create(model="gpt", input=ASKED, instructions="Be brief")
    page = client.responses.input_items.list(made.id)
    # Newest first by default; every item typed, with content parts, and an id of its own.
    assert [item.type for item in page.data] == ["message"] * 3
    texts = [item.content[0].text for item in page.data]  # type: ignore[union-attr]
    assert texts == ["And 3 + 3?", "What is 2 + 2?", "Answer in one line."]
    assert [item.role for item in page.data] == ["user", "user", "developer"]  # type: ignore[union-attr]
    ids = [item.id for item in page.data]
    assert all(i.startswith("msg_") and len(i) > 20 for i in ids) and len(set(ids)) == 3
    raw = call(url, "GET", f"/v1/responses/{made.id}/input_items").json()
    assert raw["object"] == "list" and raw["has_more"] is False
    assert (raw["first_id"], raw["last_id"]) == (ids[0], ids[-1])
    assert raw["data"][0] == {
        "id": ids[0],
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "And 3 + 3?"}],
        "status": "completed",
    }
    # The same ids on every call, and oldest first where asked.
    again = client.responses.input_items.list(made.id, order="asc")
    assert [item.id for item in again.data] == ids[::-1]


def test_input_items_are_paged_with_limit_after_and_before(url: str) -> None:
    client = sdk(url)
    made = client.responses.create(model="gpt", input=ASKED)
    everything = [item.id for item in client.responses.input_items.list(made.id, order="asc")]
    first = client.responses.input_items.list(made.id, order="asc", limit=1)
    assert [item.id for item in first.data] == everything[:1] and first.has_more
    # The SDK's pager follows `after` to the end.
    paged = [item.id for item in client.responses.input_items.list(made.id, order="asc", limit=2)]
    assert paged == everything
    path = f"/responses/{made.id}/input_items"
    rest = call(url, "GET", path, params={"order": "asc", "after": everything[0]}).json()
    assert [item["id"] for item in rest["data"]] == everything[1:] and not rest["has_more"]
    back = {"order": "asc", "before": everything[2], "limit": 1}
    before = call(url, "GET", path, params=back).json()
    assert [item["id"] for item in before["data"]] == everything[1:2] and before["has_more"]


def test_a_follow_ups_input_items_carry_the_conversation_with_the_same_ids(url: str) -> None:
    client = sdk(url)
    first = client.responses.create(model="gpt", input="Say hi")
    follow = client.responses.create(model="gpt", input="And again", previous_response_id=first.id)
    earlier = [item.id for item in client.responses.input_items.list(first.id, order="asc")]
    listed = list(client.responses.input_items.list(follow.id, order="asc"))
    assert [item.id for item in listed] == [*earlier, first.output[0].id, listed[-1].id]
    assert listed[1].role == "assistant"  # type: ignore[union-attr]
    assert listed[-1].content[0].text == "And again"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_unknown"}, "after"),
        ({"before": "msg_unknown"}, "before"),
        ({"include": "everything"}, "include"),
        ({"include[]": "everything"}, "include"),
    ],
)
def test_a_bad_input_items_query_is_a_400_naming_it(
    url: str, query: dict[str, Any], param: str
) -> None:
    made = sdk(url).responses.create(model="gpt", input="hi")
    for prefix in ("/v1", ""):
        refused = call(url, "GET", f"{prefix}/responses/{made.id}/input_items", params=query)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "invalid_value",
            param,
        )


def test_include_takes_the_apis_values(url: str) -> None:
    made = sdk(url).responses.create(model="gpt", input="hi")
    listed = sdk(url).responses.input_items.list(
        made.id, include=["message.input_image.image_url", "reasoning.encrypted_content"]
    )
    assert len(listed.data) == 1


# -- cancel --------------------------------------------------------------------------------------


def test_cancelling_a_synchronous_response_is_refused_as_openai_refuses_it(url: str) -> None:
    made = sdk(url).responses.create(model="gpt", input="hi")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(url).responses.cancel(made.id)
    assert refused.value.status_code == 400
    for prefix in ("/v1", ""):
        answer = call(url, "POST", f"{prefix}/responses/{made.id}/cancel")
        assert answer.status_code == 400
        error = error_of(answer)
        assert error["message"] == "Cannot cancel a synchronous response."
        assert error["type"] == "invalid_request_error"
    # Nothing changed: the response is still there, completed.
    assert sdk(url).responses.retrieve(made.id).status == "completed"


# -- whose, and which ids ------------------------------------------------------------------------

ROUTES = [
    ("GET", "/responses/{id}"),
    ("DELETE", "/responses/{id}"),
    ("POST", "/responses/{id}/cancel"),
    ("GET", "/responses/{id}/input_items"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_another_keys_or_an_unknown_response_is_not_found(url: str, method: str, path: str) -> None:
    mine = sdk(url).responses.create(model="gpt", input="hi")
    other = virtual_key(url)
    for prefix in ("/v1", ""):
        for key, response_id in ((other, mine.id), (MASTER_KEY, "resp_unknown")):
            answer = call(url, method, prefix + path.format(id=response_id), key=key)
            assert answer.status_code == 404, answer.text
            error = error_of(answer)
            assert (error["type"], error["code"]) == ("invalid_request_error", "response_not_found")
    # Still the owner's, untouched.
    assert sdk(url).responses.retrieve(mine.id).id == mine.id


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_an_id_that_is_no_responses_is_a_400(url: str, method: str, path: str) -> None:
    for prefix in ("/v1", ""):
        answer = call(url, method, prefix + path.format(id="msg_123"))
        assert answer.status_code == 400, answer.text
        error = error_of(answer)
        assert error["param"] == "response_id"
        assert error["message"] == (
            "Invalid 'response_id': 'msg_123'. Expected an ID that begins with 'resp'."
        )


def test_the_sdk_raises_not_found_for_another_keys_response(url: str) -> None:
    mine = sdk(url).responses.create(model="gpt", input="hi")
    other = sdk(url, virtual_key(url))
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(mine.id)


# -- input tokens --------------------------------------------------------------------------------


def test_input_tokens_are_counted_without_calling_a_model(
    url: str, upstream: OpenAIUpstream
) -> None:
    client = sdk(url)
    short = client.responses.input_tokens.count(model="gpt", input="Say hi")
    assert short.object == "response.input_tokens" and short.input_tokens > 0
    raw = call(url, "POST", "/responses/input_tokens", json={"model": "gpt", "input": "Say hi"})
    assert raw.json() == {"object": "response.input_tokens", "input_tokens": short.input_tokens}
    longer = client.responses.input_tokens.count(
        model="gpt",
        input=ASKED,
        instructions="Be brief",
        tools=[
            {"type": "function", "name": "add", "parameters": {"type": "object"}, "strict": None}
        ],
    )
    assert longer.input_tokens > short.input_tokens
    assert upstream.requests == []  # nothing was called


def test_input_tokens_count_the_conversation_a_previous_response_carries(url: str) -> None:
    client = sdk(url)
    first = client.responses.create(model="gpt", input="Say hi")
    alone = client.responses.input_tokens.count(model="gpt", input="And again")
    carried = client.responses.input_tokens.count(
        model="gpt", input="And again", previous_response_id=first.id
    )
    assert carried.input_tokens > alone.input_tokens
    other = sdk(url, virtual_key(url))
    with pytest.raises(openai.NotFoundError) as refused:
        other.responses.input_tokens.count(model="gpt", input="x", previous_response_id=first.id)
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (
            {"model": "gpt", "input": "hi", "api_base": "http://127.0.0.1:9"},
            400,
            "unsupported_parameter",
            "api_base",
        ),
        ({"model": "gpt", "input": "hi", "stream": True}, 400, "unsupported_parameter", "stream"),
        (
            {"model": "gpt", "input": "hi", "max_output_tokens": 5},
            400,
            "unsupported_parameter",
            "max_output_tokens",
        ),
        ({"model": "gpt", "input": 42}, 400, "invalid_value", "input"),
        ({"model": "gpt", "truncation": "sometimes"}, 400, "invalid_value", "truncation"),
        ({"model": "nope", "input": "hi"}, 404, "model_not_found", "model"),
        ({"model": "other", "input": "hi"}, 403, "model_not_allowed", "model"),
    ],
)
def test_input_tokens_refuse_what_create_refuses(
    url: str, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    key = virtual_key(url, models=["gpt", "nope"])
    for prefix in ("/v1", ""):
        answer = call(url, "POST", f"{prefix}/responses/input_tokens", key=key, json=body)
        assert answer.status_code == status, answer.text
        error = error_of(answer)
        # A field of several types is named with the type it failed last (`input.str`).
        assert (error["code"], error["param"].split(".")[0]) == (code, param)


def test_an_image_is_counted_without_fetching_it(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm measures a high-detail image by fetching its URL unless told not to."""
    with image_host(monkeypatch) as (host, fetched):
        part = {"type": "input_image", "image_url": f"{host}/cat.png", "detail": "high"}
        body = {"model": "gpt", "input": [{"role": "user", "content": [part]}]}
        counted = call(url, "POST", "/v1/responses/input_tokens", json=body)
    assert counted.status_code == 200, counted.text
    assert counted.json()["input_tokens"] > 0
    assert fetched == []
