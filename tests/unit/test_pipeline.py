"""The request pipeline on its own: in-memory stores, and litellm's Router over `mock_response`
deployments (litellm's whole call path, no provider and no AWS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.access.limits import Reservation
from llm_proxy.access.virtual_keys import VirtualKey
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.after_response import AfterResponse
from llm_proxy.config import ProxyConfig
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.cache import CACHE_HIT_HEADER
from llm_proxy.pipeline.meter import Metering
from llm_proxy.pipeline.model_router import CurrentRouter
from llm_proxy.pipeline.pipeline import Pipeline, Stores
from llm_proxy.pipeline.request import Answer, GatewayRequest, Inbound
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.settings import ApiSettings
from llm_proxy.store.answer_cache import AnswerCache
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.usage import UsageTable

from tests.support.records import virtual_key

INPUT_PRICE, OUTPUT_PRICE = 1e-6, 2e-6
CONFIG = {
    "model_list": [
        {
            "model_name": "demo",
            "litellm_params": {
                "model": "openai/demo-model",
                "mock_response": "Hello there",
                "api_key": "not-used",
                "input_cost_per_token": INPUT_PRICE,
                "output_cost_per_token": OUTPUT_PRICE,
            },
        },
        {
            "model_name": "other",
            "litellm_params": {"model": "openai/other", "mock_response": "x", "api_key": "n"},
        },
    ],
    "router_settings": {"num_retries": 0, "model_group_alias": {"coder": "demo"}},
    "litellm_settings": {"cache": True},
}
MASTER = Caller(key_id="master")
QUESTION = [{"role": "user", "content": "hi"}]


class MemoryUsage(UsageTable):
    def __init__(self) -> None:
        super().__init__("memory", 90)
        self.records: list[UsageRecord] = []

    def write(self, record: UsageRecord) -> bool:
        self.records.append(record)
        return True


class MemoryCounters(CountersTable):
    """Admits everything; keeps what was reserved and settled."""

    def __init__(self) -> None:
        super().__init__("memory")
        self.admitted: list[tuple[str, int, float]] = []
        self.settled: list[tuple[int, float]] = []

    def admit(
        self, key: VirtualKey, tokens: int, cost: float, now: float | None = None
    ) -> Reservation:
        self.admitted.append((key.token, tokens, cost))
        return Reservation(tokens=tokens, spend_item=f"key#{key.token}#spend#all")

    def settle(
        self,
        reservation: Reservation,
        tokens: int,
        cost: float,
        deployment_items: dict[str, str],
        answered_by: str | None,
    ) -> None:
        self.settled.append((tokens, cost))


class MemoryCache(AnswerCache):
    """Keeps answers as their JSON, as the table does."""

    def __init__(self) -> None:
        super().__init__("memory")
        self.entries: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, response: Any, ttl_s: int) -> None:
        self.entries[key] = response.model_dump(exclude_none=True)


@pytest.fixture
def stores() -> Stores:
    return Stores(counters=MemoryCounters(), usage=MemoryUsage(), cache=MemoryCache())


@pytest.fixture
def pipeline(stores: Stores) -> Pipeline:
    config = ProxyConfig.model_validate(CONFIG)
    routers = CurrentRouter(config, ProviderKeys(None, 300), "http://127.0.0.1:11434")
    # As in Lambda (a function name set): usage is written before the response.
    settings = ApiSettings.of(lambda_function_name="api")
    return Pipeline(settings, config, routers, stores)


def usage_of(stores: Stores) -> list[UsageRecord]:
    records: list[UsageRecord] = stores.usage.records  # type: ignore[attr-defined]
    return records


def inbound(
    body: dict[str, Any],
    caller: Caller = MASTER,
    after_response: AfterResponse | None = None,
    endpoint: str = "/v1/chat/completions",
) -> Inbound:
    return Inbound(endpoint, caller, body, {}, "rid-1", after_response)


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


def test_the_usage_item_waits_for_the_response_where_the_process_outlives_it(
    pipeline: Pipeline, stores: Stores
) -> None:
    pipeline.meter.metering = Metering.USAGE_AFTER_RESPONSE
    later = AfterResponse()
    ask(pipeline, {"model": "demo", "messages": QUESTION}, after_response=later)
    assert usage_of(stores) == []
    [work] = list(later.close())
    work()
    assert len(usage_of(stores)) == 1


def test_an_agent_role_asked_for_by_name_tags_the_usage(pipeline: Pipeline, stores: Stores) -> None:
    ask(pipeline, {"model": "coder", "messages": QUESTION})
    [record] = usage_of(stores)
    assert (record.agent, record.model_requested, record.model_group) == ("coder", "coder", "demo")


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
