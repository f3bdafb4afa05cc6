"""The request pipeline on its own: in-memory stores, and litellm's Router over `mock_response`
deployments (litellm's whole call path, no provider and no AWS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.access.principals import Team, User
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.after_response import AfterResponse
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.cache import CACHE_HIT_HEADER
from llm_proxy.pipeline.meter import Metering
from llm_proxy.pipeline.pipeline import Pipeline, Stores
from llm_proxy.pipeline.request import Answer, GatewayRequest

from tests.support.memory import (
    INPUT_PRICE,
    MASTER,
    OUTPUT_PRICE,
    QUESTION,
    MemoryCounters,
    inbound,
    memory_stores,
    mock_pipeline,
)
from tests.support.records import virtual_key


@pytest.fixture
def stores() -> Stores:
    return memory_stores()


@pytest.fixture
def pipeline(stores: Stores) -> Pipeline:
    return mock_pipeline(stores)


def usage_of(stores: Stores) -> list[UsageRecord]:
    records: list[UsageRecord] = stores.usage.records  # type: ignore[attr-defined]
    return records


def ask(
    pipeline: Pipeline,
    body: dict[str, Any],
    caller: Caller = MASTER,
    api: ApiName = "chat",
    after_response: AfterResponse | None = None,
) -> Answer:
    return asyncio.run(pipeline.run(APIS[api], inbound(body, caller, after_response)))


def test_a_json_answer_is_metered_at_the_deployments_price(
    pipeline: Pipeline, stores: Stores
) -> None:
    answer = ask(pipeline, {"model": "demo", "messages": QUESTION})
    assert answer.body["choices"][0]["message"]["content"] == "Hello there"
    [record] = usage_of(stores)
    assert (record.status, record.model_group, record.provider) == (200, "demo", "openai")
    assert (record.prompt_tokens, record.completion_tokens) == (10, 20)
    assert record.cost_usd == pytest.approx(10 * INPUT_PRICE + 20 * OUTPUT_PRICE)
    assert record.latency_ms > 0 and record.key_id == "master"


def test_a_stream_is_priced_by_the_same_rule_when_it_ends(
    pipeline: Pipeline, stores: Stores
) -> None:
    async def consume() -> list[str]:
        body = {"model": "demo", "messages": QUESTION, "stream": True}
        answer = await pipeline.run(APIS["chat"], inbound(body))
        assert answer.events is not None and answer.body is None
        assert usage_of(stores) == []  # metered when the stream ends, not before
        return [str(event) async for event in answer.events]

    events = asyncio.run(consume())
    assert events[-1] == "data: [DONE]\n\n"
    [record] = usage_of(stores)
    assert record.stream and record.status == 200 and record.ttft_ms is not None
    expected = record.prompt_tokens * INPUT_PRICE + record.completion_tokens * OUTPUT_PRICE
    assert record.prompt_tokens > 0 and record.cost_usd == pytest.approx(expected)


def test_the_usage_item_waits_for_its_batch_where_the_process_outlives_the_response(
    pipeline: Pipeline, stores: Stores
) -> None:
    pipeline.meter.metering = Metering.USAGE_AFTER_RESPONSE
    pipeline.meter.batch.wait_s = 60
    later = AfterResponse()
    ask(pipeline, {"model": "demo", "messages": QUESTION}, after_response=later)
    assert usage_of(stores) == [] and pipeline.meter.batch.pending() == 1
    assert list(later.close()) == []  # nothing left for the request's own after-response work
    pipeline.meter.batch.flush()
    assert len(usage_of(stores)) == 1


def test_an_agent_role_asked_for_by_name_tags_the_usage(pipeline: Pipeline, stores: Stores) -> None:
    ask(pipeline, {"model": "coder", "messages": QUESTION})
    [record] = usage_of(stores)
    assert (record.agent, record.model_requested, record.model_group) == ("coder", "coder", "demo")


@pytest.mark.parametrize(
    ("caller", "team_and_user"),
    [
        (MASTER, (None, None)),
        # A key's tags, where no team or user record is read with it.
        (Caller("k", key=virtual_key("k", team_id="t-tag", user_id="u-tag")), ("t-tag", "u-tag")),
        # The records the request is made for (a key's, or a JWT's) name them.
        (
            Caller(
                "k",
                key=virtual_key("k", team_id="t-tag"),
                team=Team(team_id="t-record"),
                user=User(user_id="u-record"),
            ),
            ("t-record", "u-record"),
        ),
    ],
)
def test_the_usage_names_the_requests_team_and_user(
    pipeline: Pipeline, stores: Stores, caller: Caller, team_and_user: tuple[str | None, ...]
) -> None:
    ask(pipeline, {"model": "demo", "messages": QUESTION}, caller)
    [record] = usage_of(stores)
    assert (record.team_id, record.user_id) == team_and_user


@pytest.mark.parametrize(
    ("body", "caller", "status", "code"),
    [
        ({"model": "demo", "messages": QUESTION, "api_base": "http://x"}, MASTER, 400, None),
        ({"model": "nope", "messages": QUESTION}, MASTER, 404, "model_not_found"),
        (
            {"model": "other", "messages": QUESTION},
            Caller("k", key=virtual_key("k", models=["demo"])),
            403,
            "model_not_allowed",
        ),
    ],
)
def test_a_refusal_is_raised_and_metered(
    pipeline: Pipeline,
    stores: Stores,
    body: dict[str, Any],
    caller: Caller,
    status: int,
    code: str | None,
) -> None:
    with pytest.raises(ProxyError) as refused:
        ask(pipeline, body, caller)
    assert refused.value.status == status
    [record] = usage_of(stores)
    assert record.status == status and record.error_code == refused.value.code
    assert code is None or refused.value.code == code


def test_a_limited_key_reserves_its_estimate_and_settles_what_was_used(
    pipeline: Pipeline, stores: Stores
) -> None:
    key = virtual_key("k", max_budget=1.0)
    ask(pipeline, {"model": "demo", "messages": QUESTION, "max_tokens": 50}, Caller("k", key=key))
    counters: MemoryCounters = stores.counters  # type: ignore[assignment]
    [(token, tokens, cost)] = counters.admitted
    assert token == "k" and tokens > 50
    assert cost == pytest.approx((tokens - 50) * INPUT_PRICE + 50 * OUTPUT_PRICE)
    assert counters.settled == [(30, pytest.approx(10 * INPUT_PRICE + 20 * OUTPUT_PRICE))]


def test_a_cache_hit_costs_nothing_and_settles_no_tokens(
    pipeline: Pipeline, stores: Stores
) -> None:
    key = virtual_key("k", max_budget=1.0)
    body = {"model": "demo", "messages": QUESTION}
    first = ask(pipeline, dict(body), Caller("k", key=key))
    again = ask(pipeline, dict(body), Caller("k", key=key))
    assert first.headers == {CACHE_HIT_HEADER: "false"}
    assert again.headers == {CACHE_HIT_HEADER: "true"}
    assert again.body["choices"][0]["message"]["content"] == "Hello there"
    miss, hit = usage_of(stores)
    assert hit.cache_hit and hit.cost_usd == 0 and miss.cost_usd > 0
    counters: MemoryCounters = stores.counters  # type: ignore[assignment]
    assert counters.settled[-1] == (0, 0.0)
    assert counters.admitted[-1][1:] == (0, 0.0)  # a hit reserves nothing


def test_a_mock_chat_model_has_no_embeddings(pipeline: Pipeline, stores: Stores) -> None:
    with pytest.raises(ProxyError) as refused:
        ask(pipeline, {"model": "demo", "input": "hi"}, api="embeddings")
    assert refused.value.code == "model_not_embedding"
    assert usage_of(stores)[0].status == 400


def test_the_request_object_resolves_model_and_agent(pipeline: Pipeline) -> None:
    key = virtual_key("k", metadata={"agent": "debug"})
    caller = Caller("k", key=key, claimed_agent="intruder")
    body = {"model": "coder", "messages": QUESTION, "metadata": {"agent": "ask"}}
    sent = {**body, "max_tokens": 8}
    request = pipeline.request(APIS["messages"], inbound(sent, caller, endpoint="/v1/messages"))
    assert isinstance(request, GatewayRequest) and request.sent == sent
    assert (request.model, request.agent, request.endpoint) == ("coder", "debug", "/v1/messages")
    anonymous = pipeline.request(APIS["chat"], inbound(body))
    assert anonymous.agent == "ask"


def test_a_responses_answer_gets_the_gateways_id_and_is_stored_for_its_key(
    pipeline: Pipeline, stores: Stores
) -> None:
    first = ask(pipeline, {"model": "demo", "input": "hi"}, api="responses")
    response_id = first.body["id"]
    assert response_id.startswith("resp_") and first.body["usage"]["total_tokens"] > 0
    stored = stores.responses.get(response_id, "master")
    assert stored.input == [{"type": "message", "role": "user", "content": "hi"}]
    assert stored.response["id"] == response_id
    follow_up = {"model": "demo", "input": "and?", "previous_response_id": response_id}
    second = ask(pipeline, follow_up, api="responses")
    assert second.body["id"] not in (response_id, None)
    assert len(stores.responses.get(second.body["id"], "master").input) == 3
    with pytest.raises(ProxyError) as elsewhere:
        ask(pipeline, follow_up, Caller("k", key=virtual_key("k")), api="responses")
    assert (elsewhere.value.status, elsewhere.value.param) == (404, "previous_response_id")
    assert [record.status for record in usage_of(stores)] == [200, 200, 404]


def test_a_response_asked_not_to_be_stored_is_not(pipeline: Pipeline, stores: Stores) -> None:
    answer = ask(pipeline, {"model": "demo", "input": "hi", "store": False}, api="responses")
    with pytest.raises(ProxyError):
        stores.responses.get(answer.body["id"], "master")


def test_a_messages_request_is_answered_as_a_message(pipeline: Pipeline, stores: Stores) -> None:
    sent = {"model": "coder", "max_tokens": 8, "messages": QUESTION}
    answer = ask(pipeline, sent, api="messages")
    assert (answer.body["type"], answer.body["model"]) == ("message", "coder")
    assert answer.body["id"].startswith("msg_")
    assert answer.body["content"] == [{"type": "text", "text": "Hello there"}]
    [record] = usage_of(stores)
    assert (record.status, record.model_group, record.agent) == (200, "demo", "coder")


def test_count_tokens_is_validated_and_counted_and_metered_at_no_cost(
    pipeline: Pipeline, stores: Stores
) -> None:
    answer = ask(pipeline, {"model": "demo", "messages": QUESTION}, api="count_tokens")
    assert answer.body["input_tokens"] > 0 and answer.events is None
    with pytest.raises(ProxyError) as refused:
        ask(pipeline, {"model": "demo", "messages": QUESTION, "top_q": 1}, api="count_tokens")
    assert refused.value.code == "unsupported_parameter"
    counted, failed = usage_of(stores)
    assert counted.status == 200 and counted.cost_usd == 0 and counted.deployment_id is None
    assert failed.status == 400 and failed.error_code == "unsupported_parameter"
