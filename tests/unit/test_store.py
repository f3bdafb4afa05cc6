"""The tables' one rule for a table that is not configured (`store.base.Table`): reads find
nothing, writes are skipped, and the operations that cannot answer without the table are a 503
naming the variable to set, with the codes and messages clients got before. No table name
never means an AWS call: every boto3 accessor here fails the test if it is reached."""

from __future__ import annotations

import ast
import asyncio
from datetime import date
from typing import Any, NoReturn

import pytest
from llm_proxy import aws
from llm_proxy.access.auth import Caller
from llm_proxy.access.key_admin import KeyAdmin
from llm_proxy.access.key_record import VirtualKey, token_of
from llm_proxy.access.limits import Limits, Reservation
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.config import ProxyConfig
from llm_proxy.errors import DomainError, ProxyError, as_proxy_error
from llm_proxy.pipeline.apis import APIS
from llm_proxy.pipeline.model_router import CurrentRouter
from llm_proxy.pipeline.pipeline import Pipeline, Stores
from llm_proxy.pipeline.request import Inbound
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.reports.report import read_budgets, spend
from llm_proxy.settings import ApiSettings
from llm_proxy.store.answer_cache import AnswerCache
from llm_proxy.store.base import Table
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.keys import KeysTable
from llm_proxy.store.rollups import RollupsTable
from llm_proxy.store.stored_responses import StoredResponse, StoredResponses
from llm_proxy.store.usage import UsageTable

from tests.support.paths import REPO

TOKEN = token_of("sk-unknown")
ITEM = {"request_id": "r1", "day": "2025-01-01", "endpoint": "/v1/embeddings", "latency_ms": 5}
UNCONFIGURED: list[Table] = [
    KeysTable(None),
    CountersTable(None),
    UsageTable(None, 90),
    RollupsTable(None),
    AnswerCache(None),
    StoredResponses(None, 30),
]
# What clients got before there was a base, unchanged.
CLIENT_ERRORS = {
    KeysTable: (
        "keys_table_missing",
        "Virtual keys are not configured: set LLM_PROXY__KEYS_TABLE.",
    ),
    CountersTable: (
        "counters_table_missing",
        "This key has limits but no counters table is configured (LLM_PROXY__COUNTERS_TABLE).",
    ),
    RollupsTable: (
        "rollups_not_configured",
        "No rollups table is configured (LLM_PROXY__ROLLUPS_TABLE).",
    ),
}


def no_aws(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("an AWS call without a table")


@pytest.fixture(autouse=True)
def without_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("client", "resource_table", "session"):
        monkeypatch.setattr(aws, name, no_aws)


def missing(caught: pytest.ExceptionInfo[Any], table: type[Table]) -> None:
    """The 503 of an operation that requires `table` (a domain error, answered as a 503)."""
    code, message = CLIENT_ERRORS[table]
    error = as_proxy_error(caught.value, "")
    assert (error.status, error.error_type, error.code, error.message) == (
        503,
        "service_unavailable",
        code,
        message,
    )


def limited_key(**limits: Any) -> VirtualKey:
    return VirtualKey(token=TOKEN, key_name="sk-...", **limits)


@pytest.mark.parametrize("table", UNCONFIGURED, ids=lambda table: type(table).__name__)
def test_every_table_declares_its_variable_and_refuses_what_requires_it(table: Table) -> None:
    assert not table.enabled
    assert table.variable.startswith("LLM_PROXY__") and table.variable.endswith("_TABLE")
    for accessor in (table.require, table.resource, table.client):
        with pytest.raises(DomainError) as caught:
            accessor()
        answered = caught.value.as_proxy_error()
        assert (answered.status, answered.code) == (503, table.missing.code)
        assert table.variable in answered.message


def test_every_table_class_is_under_the_base() -> None:
    assert {type(table) for table in UNCONFIGURED} == set(Table.__subclasses__())


def test_an_empty_table_name_is_no_table() -> None:
    assert not KeysTable("").enabled and KeysTable("keys").enabled


def test_keys_without_a_table_every_key_is_unknown_and_management_is_a_503() -> None:
    table = KeysTable(None)
    assert table.get(TOKEN) is None
    assert table.get_many([TOKEN]) == []
    for write in (
        lambda: table.create({"token": TOKEN}),
        lambda: table.put({"token": TOKEN}),
        lambda: table.delete(TOKEN),
        table.scan,
    ):
        with pytest.raises((ProxyError, DomainError)) as caught:
            write()
        missing(caught, KeysTable)


def test_the_key_store_without_a_table_answers_as_before() -> None:
    store = KeyStore(None)
    assert store.is_cached("sk-anything")
    with pytest.raises(ProxyError) as unknown:
        store.authenticate("sk-anything")
    assert (unknown.value.status, unknown.value.code, unknown.value.message) == (
        401,
        "invalid_api_key",
        "Invalid API key.",
    )
    for manage in (
        lambda: store.generate({}),
        store.list,
        lambda: store.get(TOKEN),
        lambda: store.update("sk-anything", {}),
        lambda: store.delete([TOKEN]),
    ):
        with pytest.raises((ProxyError, DomainError)) as caught:
            manage()
        missing(caught, KeysTable)
    # What names no key is not looked for: as before, 404 and nothing deleted.
    with pytest.raises(ProxyError) as not_a_key:
        store.get("not-a-token")
    assert (not_a_key.value.status, not_a_key.value.code) == (404, "key_not_found")
    assert store.delete(["not-a-token"]) == []


def test_the_report_reads_no_budgets_without_a_keys_table() -> None:
    assert read_budgets(None, [TOKEN]) == {}


def test_counters_without_a_table_settle_nothing_and_admit_no_limited_key() -> None:
    counters = CountersTable(None)
    assert counters.spend(limited_key(max_budget=5)) == 0.0
    reservation = Reservation(minute_items=["key#t#minute#1"], tokens=10, spend_item="s")
    assert counters.settle(reservation, 20, 0.5, {"d": "deployment#d#minute#1"}, "d") is None
    # A key without limits takes no counter.
    assert counters.admit(limited_key(), tokens=10, cost=0.1) == Reservation(tokens=10)
    for limits in ({"rpm_limit": 1}, {"tpm_limit": 100}, {"max_budget": 1.0}):
        with pytest.raises((ProxyError, DomainError)) as caught:
            counters.admit(limited_key(**limits), tokens=10, cost=0.1)
        missing(caught, CountersTable)
    with pytest.raises((ProxyError, DomainError)) as caught:
        counters.admit_deployment("d", Limits(rpm=1), tokens=10)
    missing(caught, CountersTable)


def test_key_info_without_a_counters_table_shows_no_spend() -> None:
    info = KeyAdmin(KeyStore(None), CountersTable(None))._info(limited_key(max_budget=2.0))
    assert (info["spend"], info["remaining_budget"]) == (0.0, 2.0)


def test_usage_without_a_table_is_not_written_and_storing_it_is_a_503() -> None:
    usage = UsageTable(None, 90)
    assert usage.write(UsageRecord(request_id="r1", endpoint="/v1/embeddings")) is False
    usage.ping()
    with pytest.raises(DomainError) as caught:
        usage.store(ITEM)
    assert caught.value.kind.code == "usage_table_missing"


def test_a_usage_item_adds_to_no_rollup_without_a_rollups_table() -> None:
    transaction = UsageTable("usage", 90)._transaction(ITEM)
    assert [list(action) for action in transaction] == [["Put"]]
    with_rollups = UsageTable("usage", 90, rollups_table="rollups")._transaction(ITEM)
    assert [list(action) for action in with_rollups] == [["Put"], ["Update"]]
    assert with_rollups[1]["Update"]["TableName"] == "rollups"


def test_rollups_without_a_table_are_not_raised_and_reading_them_is_a_503() -> None:
    rollups = RollupsTable(None)
    rollups.raise_latency_max(ITEM)
    for read in (
        lambda: rollups.day("2025-01-01"),
        lambda: rollups.between(date(2025, 1, 1), date(2025, 1, 2)),
        # An empty period too: no table, no report.
        lambda: rollups.between(date(2025, 1, 2), date(2025, 1, 1)),
        lambda: rollups.add_update(ITEM),
    ):
        with pytest.raises((ProxyError, DomainError)) as caught:
            read()
        missing(caught, RollupsTable)


def test_the_spend_report_without_rollups_is_a_503_before_its_period_is_read() -> None:
    with pytest.raises((ProxyError, DomainError)) as caught:
        spend("not-a-date", None, ApiSettings.of())
    missing(caught, RollupsTable)


def test_the_scheduled_report_without_rollups_is_refused_as_before() -> None:
    from llm_proxy.reports.period import yesterday
    from llm_proxy.reports.report import report_for

    with pytest.raises(ValueError, match="LLM_PROXY__ROLLUPS_TABLE"):
        report_for(yesterday(), ApiSettings.of())


class Unstorable:
    def model_dump(self, **options: Any) -> NoReturn:
        raise AssertionError("an answer read without a cache table")


def test_the_answer_cache_without_a_table_misses_and_keeps_nothing() -> None:
    cache = AnswerCache(None)
    assert cache.load("key") is None
    cache.put("key", Unstorable(), 60)


def test_stored_responses_without_a_table_keep_nothing_and_find_nothing() -> None:
    responses = StoredResponses(None, 30)
    responses.put(StoredResponse("resp_1", "k", [], {"output": []}))
    for find, param in (
        (
            lambda: responses.get("resp_1", "k", param="previous_response_id"),
            "previous_response_id",
        ),
        (lambda: responses.delete("resp_1", "k"), None),
    ):
        with pytest.raises(ProxyError) as caught:
            find()
        error = caught.value
        assert (error.status, error.code, error.param) == (404, "response_not_found", param)
        assert error.message == "No response with id 'resp_1' is stored for this key."


CONFIG = {
    "model_list": [
        {
            "model_name": "demo",
            "litellm_params": {"model": "openai/demo", "mock_response": "Hi", "api_key": "n"},
        }
    ],
    "router_settings": {"num_retries": 0},
    "litellm_settings": {"cache": True},
}


@pytest.fixture
def pipeline() -> Pipeline:
    """The pipeline with no table configured at all."""
    stores = Stores(
        counters=CountersTable(None), usage=UsageTable(None, 90), cache=AnswerCache(None)
    )
    config = ProxyConfig.model_validate(CONFIG)
    routers = CurrentRouter(config, ProviderKeys(None, 300), "http://127.0.0.1:11434")
    return Pipeline(ApiSettings.of(lambda_function_name="api"), config, routers, stores)


def ask(pipeline: Pipeline, caller: Caller, **body: Any) -> Any:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], **body}
    inbound = Inbound("/v1/chat/completions", caller, body, {}, "rid-1")
    return asyncio.run(pipeline.run(APIS["chat"], inbound))


def test_a_pipeline_without_tables_answers_and_refuses_only_a_limited_key(
    pipeline: Pipeline,
) -> None:
    answer = ask(pipeline, Caller("master"))
    assert answer.body["choices"][0]["message"]["content"] == "Hi"
    # A key with limits is refused for its missing table before a request that can never fit
    # its limit is refused for its size (400).
    caller = Caller("k", key=limited_key(tpm_limit=5))
    with pytest.raises((ProxyError, DomainError)) as caught:
        ask(pipeline, caller, max_tokens=1000)
    missing(caught, CountersTable)


def test_the_store_package_imports_neither_litellm_nor_fastapi_at_module_level() -> None:
    for path in sorted((REPO / "layers" / "core" / "llm_proxy" / "store").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names
        } | {node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name.split(".")[0] in ("litellm", "fastapi")}
