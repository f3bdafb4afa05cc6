"""The pipeline's stores in memory (the seam its unit tests fake: `pipeline.Stores`), each
keeping what the pipeline asked of it; and a pipeline over litellm's `mock_response`
deployments on them: litellm's whole call path, no provider and no AWS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm_proxy.access.auth import Caller
from llm_proxy.access.budgets import Budget, Plan
from llm_proxy.access.key_record import VirtualKey
from llm_proxy.access.limits import Reservation
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.after_response import AfterResponse
from llm_proxy.config import ProxyConfig
from llm_proxy.errors import RESPONSE_NOT_FOUND
from llm_proxy.pipeline.model_router import CurrentRouter, ModelRouter
from llm_proxy.pipeline.pipeline import Pipeline, Stores
from llm_proxy.pipeline.request import Inbound
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.settings import ApiSettings
from llm_proxy.store.answer_cache import AnswerCache
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.stored_responses import StoredResponse, StoredResponses
from llm_proxy.store.usage import UsageTable

INPUT_PRICE, OUTPUT_PRICE = 1e-6, 2e-6
# Two canned-reply deployments, the first priced, and an agent role naming it.
MOCK_CONFIG: dict[str, Any] = {
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

    def write_many(self, records: Sequence[UsageRecord]) -> None:
        self.records.extend(records)


class MemoryCounters(CountersTable):
    """Admits everything; keeps what was reserved and settled."""

    def __init__(self) -> None:
        super().__init__("memory")
        self.admitted: list[tuple[str, int, float]] = []
        self.settled: list[tuple[int, float]] = []
        # Each key's spend, by token.
        self.spent: dict[str, float] = {}

    def admit(
        self,
        key: VirtualKey | None,
        tokens: int,
        cost: float,
        now: float | None = None,
        *,
        plan: Plan | None = None,
    ) -> Reservation:
        token = key.token if key is not None else "-"
        self.admitted.append((token, tokens, cost))
        item = f"key#{token}#spend#all"
        return Reservation(tokens=tokens, spend_items=[item], spend_item=item)

    def settle(
        self,
        reservation: Reservation,
        tokens: int,
        cost: float,
        deployment_items: dict[str, str],
        answered_by: str | None,
    ) -> None:
        self.settled.append((tokens, cost))

    def spend(self, key: VirtualKey, now: float | None = None) -> float:
        return self.spent.get(key.token, 0.0)

    def budget_spend(self, budget: Budget, now: float | None = None) -> float:
        return self.spent.get(budget.counter.removeprefix("key#"), 0.0)


class MemoryCache(AnswerCache):
    """Keeps answers as their JSON, as the table does."""

    def __init__(self) -> None:
        super().__init__("memory")
        self.entries: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, response: Any, ttl_s: int) -> None:
        self.entries[key] = response.model_dump(exclude_none=True)


class MemoryStoredResponses(StoredResponses):
    """Stored responses by id, each its key's only (another key's is a 404, as in the table)."""

    def __init__(self) -> None:
        super().__init__("memory", 30)
        self.items: dict[str, StoredResponse] = {}

    def put(self, stored: StoredResponse) -> None:
        self.items[stored.response_id] = stored

    def get(self, response_id: str, key_id: str, param: str | None = None) -> StoredResponse:
        stored = self.items.get(response_id)
        if stored is None or stored.key_id != key_id:
            raise RESPONSE_NOT_FOUND(f"No response with id '{response_id}'.", param=param)
        return stored


def memory_stores() -> Stores:
    return Stores(
        counters=MemoryCounters(),
        usage=MemoryUsage(),
        cache=MemoryCache(),
        responses=MemoryStoredResponses(),
    )


def mock_routers(config: dict[str, Any] | None = None) -> CurrentRouter:
    """The router of a config (MOCK_CONFIG by default), with no secret."""
    proxy_config = ProxyConfig.model_validate(config or MOCK_CONFIG)
    return CurrentRouter(proxy_config, ProviderKeys(None, 300), "http://127.0.0.1:11434")


def mock_router(config: dict[str, Any] | None = None) -> ModelRouter:
    return mock_routers(config).get()


def mock_pipeline(stores: Stores, config: dict[str, Any] | None = None) -> Pipeline:
    """The pipeline on `stores`, metering before the response (as in Lambda)."""
    routers = mock_routers(config)
    settings = ApiSettings.of(lambda_function_name="api")
    return Pipeline(settings, routers.config, routers, stores)


def inbound(
    body: dict[str, Any],
    caller: Caller = MASTER,
    after_response: AfterResponse | None = None,
    endpoint: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> Inbound:
    return Inbound(endpoint, caller, body, headers or {}, "rid-1", after_response)
