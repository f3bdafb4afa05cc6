"""The cost report from rollups: the scheduled function writes S3 objects and an SNS message
(moto), costs match the seed's price tables, GET /spend/report serves the same aggregates, and
the api function emits EMF metrics per model."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import boto3
import httpx
import pytest
from llm_proxy.access.key_record import VirtualKey
from llm_proxy.reports.period import Period
from llm_proxy.reports.report import report_for
from llm_proxy.settings import CostReportSettings
from llm_proxy.store.usage import UsageTable

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.ollama_upstream import OllamaUpstream
from devstack.server import serving
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.functions import load_function, report_env
from tests.support.paths import REPO
from tests.support.records import usage_record
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

MILLION = Decimal(1_000_000)
# The seed's tables, USD per 1M tokens (input, output); Ollama runs locally at no cost.
SEED_PRICES = {
    "gpt-3.5-turbo": (Decimal("0.50"), Decimal("1.50")),
    "claude-3-haiku": (Decimal("0.25"), Decimal("1.25")),
    "llama2": (Decimal(0), Decimal(0)),
    # A per-deployment price overrides litellm's map: $2 / $4 per 1M tokens.
    "house-gpt": (Decimal("2"), Decimal("4")),
}
SCHEDULED_EVENT = REPO / "events" / "scheduled_cost_report.json"


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaUpstream]:
    with serving(OllamaUpstream()) as double:
        yield double


def oracle_config(anthropic: str, ollama: str) -> str:
    return gateway_config(
        openai_double(),
        deployment(
            "claude-3-haiku",
            "anthropic/claude-3-haiku-20240307",
            api_base=anthropic,
            api_key="os.environ/ANTHROPIC_API_KEY",
        ),
        deployment("llama2", "ollama/llama2", api_base=ollama),
        openai_double(
            "house-gpt",
            "openai/gpt-3.5-turbo",
            input_cost_per_token=0.000002,
            output_cost_per_token=0.000004,
        ),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


def s3_text(bucket: str, key: str) -> str:
    return str(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def test_costs_match_the_seed_price_tables(
    gateway_for: Callable[..., str],
    aws: dict[str, str],
    anthropic: AnthropicUpstream,
    ollama: OllamaUpstream,
) -> None:
    agent = f"oracle-{uuid.uuid4().hex[:8]}"
    base = gateway_for(oracle_config(anthropic.base_url, ollama.base_url))
    expected: dict[str, Decimal] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for model in SEED_PRICES:
            response = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {MASTER_KEY}", "x-agent": agent},
                json={"model": model, "messages": [{"role": "user", "content": "Say hi"}]},
            )
            assert response.status_code == 200, response.text
            item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
            tokens = response.json()["usage"]
            assert (item["prompt_tokens"], item["completion_tokens"]) == (
                tokens["prompt_tokens"],
                tokens["completion_tokens"],
            )
            assert item["prompt_tokens"] > 0 and item["completion_tokens"] > 0
            price_in, price_out = SEED_PRICES[model]
            cost = (item["prompt_tokens"] * price_in + item["completion_tokens"] * price_out) / (
                MILLION
            )
            assert item["cost_usd"] == cost, model
            expected[model] = cost

    today = datetime.now(UTC).date().isoformat()
    with report_env(aws):
        result = load_function("cost_report").handler({"start": today, "end": today}, None)
    key = f"reports/{today}/cost-report.csv"
    assert f"s3://{aws['ReportBucket']}/{key}" in result["objects"]
    rows = [r for r in csv.DictReader(io.StringIO(s3_text(aws["ReportBucket"], key)))]
    reported = {r["model"]: Decimal(r["cost_usd"]) for r in rows if r["agent"] == agent}
    assert reported == expected
    assert expected["llama2"] == 0


def seed_usage(aws: dict[str, str], day: str, entries: list[dict[str, Any]]) -> None:
    """Usage through the real write path (item and rollup in one transaction)."""
    store = UsageTable(aws["UsageTable"], 90, rollups_table=aws["RollupsTable"])
    noon = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()
    for entry in entries:
        record = usage_record(started_at=noon, **entry)
        assert store.write(record)


# 2024-05-01, the day before the scheduled event fired.
SCHEDULED_DAY = "2024-05-01"
SCHEDULED_USAGE = [
    dict(model_group="gpt-4", key_id="key-a", agent="coder", team_id="search", user_id="ann",
         prompt_tokens=1000, completion_tokens=500, cost_usd=0.06, latency_ms=800.0),
    dict(model_group="gpt-4", key_id="key-a", agent="coder", team_id="search", user_id="ann",
         prompt_tokens=2000, completion_tokens=1000, cost_usd=0.12, latency_ms=1200.0),
    dict(model_group="claude-3-haiku", key_id="key-b", agent="ask", user_id="bob",
         prompt_tokens=4000, completion_tokens=800, cost_usd=0.002, latency_ms=300.0,
         cache_hit=True),
    dict(model_group="gpt-4", key_id="key-b", agent="architect", user_id="bob", status=502,
         error_type="upstream_error", latency_ms=50.0),
]  # fmt: skip


@pytest.fixture
def keys_table(aws: dict[str, str]) -> Iterator[str]:
    """A virtual keys table with items exactly as the key store writes them."""
    name = f"keys-{uuid.uuid4().hex[:8]}"
    dynamodb = boto3.resource("dynamodb")
    table = dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "token", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "token", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for key in (
        VirtualKey(token="key-a", key_name="sk-a...", key_alias="coder", max_budget=0.2),
        VirtualKey(token="key-b", key_name="sk-b...", max_budget=10),
    ):
        table.put_item(Item=key.to_item())
    yield name
    table.delete()


@pytest.fixture
def topic_inbox(aws: dict[str, str]) -> Iterator[str]:
    """An SQS queue subscribed to the report topic: what an e-mail subscriber would get."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    url = sqs.create_queue(QueueName=f"inbox-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    subscription = sns.subscribe(TopicArn=aws["ReportTopic"], Protocol="sqs", Endpoint=arn)
    yield url
    sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    sqs.delete_queue(QueueUrl=url)


class PageParser(HTMLParser):
    """Checks that every tag is closed in order and collects the inline SVG charts."""

    VOID: ClassVar[set[str]] = {"meta", "br", "img", "link", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.svgs: list[str] = []
        self.titles: list[str] = []
        self._svg: list[str] | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._svg = []
        if self._svg is not None:
            self._svg.append(self.get_starttag_text() or "")
        if tag in {"script", "link", "img", "iframe"}:
            raise AssertionError(f"the page loads something: <{tag}>")
        if tag not in self.VOID:
            self.stack.append(tag)
        self._in_title = tag == "title" and self._svg is None

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"
        if self._svg is not None:
            self._svg.append(f"</{tag}>")
            if tag == "svg":
                self.svgs.append("".join(self._svg))
                self._svg = None
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._svg is not None:
            self._svg.append(data.replace("&", "&amp;").replace("<", "&lt;"))
        if self._in_title:
            self.titles.append(data)


def summary_rows(message: str, title: str) -> list[list[str]]:
    """The name and request count of each row of the summary's table `title`."""
    lines = message.splitlines()
    start = next(n for n, line in enumerate(lines) if line.split()[:1] == [title]) + 2
    end = lines.index("", start)
    return [line.split()[:2] for line in lines[start:end]]


def test_scheduled_event_writes_the_report_to_s3_and_sns(
    aws: dict[str, str], keys_table: str, topic_inbox: str
) -> None:
    seed_usage(aws, SCHEDULED_DAY, SCHEDULED_USAGE)
    event = json.loads(SCHEDULED_EVENT.read_text())
    bucket = aws["ReportBucket"]
    with report_env(aws, LLM_PROXY__KEYS_TABLE=keys_table, LLM_PROXY__BUDGET_ALERT_SHARE="0.8"):
        result = load_function("cost_report").handler(event, None)

    prefix = f"reports/{SCHEDULED_DAY}/"
    expected_keys = {f"{prefix}cost-report.{ext}" for ext in ("json", "csv", "html")}
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert {obj["Key"] for obj in listed} == expected_keys
    assert result["period"] == {"start": SCHEDULED_DAY, "end": SCHEDULED_DAY}

    report = json.loads(s3_text(bucket, f"{prefix}cost-report.json"))
    assert report["source"] == "rollups"
    total = report["total"]
    assert (total["requests"], total["errors"], total["cache_hits"]) == (4, 1, 1)
    assert (total["prompt_tokens"], total["completion_tokens"]) == (7000, 2300)
    assert Decimal(str(total["cost_usd"])) == Decimal("0.182")
    assert total["latency_ms_max"] == 1200.0 and total["latency_ms_avg"] == 587.5
    assert list(report["by_model"]) == ["gpt-4", "claude-3-haiku"]
    assert report["by_model"]["gpt-4"]["requests"] == 3
    assert set(report["by_agent"]) == {"coder", "ask", "architect"}
    # key-b has no team: its requests are team "-".
    assert {team: t["requests"] for team, t in report["by_team"].items()} == {"search": 2, "-": 2}
    assert {user: t["cost_usd"] for user, t in report["by_user"].items()} == {
        "ann": 0.18,
        "bob": 0.002,
    }
    # key-a spent $0.18 of $0.20 (90%): past the 80% share; key-b is far from its $10.
    flags = report["keys_over_budget_share"]
    assert [(f["key_id"], f["key_alias"], f["share"]) for f in flags] == [("key-a", "coder", 0.9)]

    rows = list(csv.DictReader(io.StringIO(s3_text(bucket, f"{prefix}cost-report.csv"))))
    assert len(rows) == 3
    assert {r["day"] for r in rows} == {SCHEDULED_DAY}

    page = s3_text(bucket, f"{prefix}cost-report.html")
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert page.startswith("<!DOCTYPE html>")
    assert len(parser.svgs) == 6  # cost per day, model, agent, team, user, key
    for svg in parser.svgs:
        chart = ET.fromstring(svg)  # noqa: S314 - the page under test, not untrusted input
        assert chart.tag == "{http://www.w3.org/2000/svg}svg"
        assert chart.findall("{http://www.w3.org/2000/svg}rect")
    assert "coder" in page and "$0.18" in page

    messages = boto3.client("sqs").receive_message(QueueUrl=topic_inbox, WaitTimeSeconds=1)
    notification = json.loads(messages["Messages"][0]["Body"])
    assert notification["Subject"].startswith(f"LLM Proxy cost {SCHEDULED_DAY}: $0.18")
    assert "key past" in notification["Message"] or "Keys past" in notification["Message"]
    assert "coder: $0.18 of $0.20 (90%)" in notification["Message"]
    # The top teams and users, as the top models and keys.
    assert summary_rows(notification["Message"], "team") == [["search", "2"], ["-", "2"]]
    assert summary_rows(notification["Message"], "user") == [["ann", "2"], ["bob", "2"]]
    assert f"s3://{bucket}/{prefix}cost-report.html" in notification["Message"]

    # The same period again overwrites the same three objects.
    with report_env(aws, LLM_PROXY__KEYS_TABLE=keys_table):
        load_function("cost_report").handler(event, None)
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert {obj["Key"] for obj in listed} == expected_keys
    again = json.loads(s3_text(bucket, f"{prefix}cost-report.json"))
    assert again["total"] == report["total"]


def test_event_period_overrides_yesterday_and_bad_periods_fail(aws: dict[str, str]) -> None:
    function = load_function("cost_report")
    with report_env(aws):
        result = function.handler({"start": "2024-04-28", "end": "2024-04-30"}, None)
        assert result["period"] == {"start": "2024-04-28", "end": "2024-04-30"}
        assert result["objects"][0].endswith("reports/2024-04-28_2024-04-30/cost-report.json")
        with pytest.raises(ValueError, match="before"):
            function.handler({"start": "2024-05-02", "end": "2024-05-01"}, None)


SPEND_USAGE = [
    dict(model_group="gpt-3.5-turbo", key_id="master", agent="coder", prompt_tokens=6,
         completion_tokens=5, cost_usd=0.0000105, latency_ms=20.0),
    dict(model_group="claude-3-haiku", key_id="master", agent="ask", prompt_tokens=10,
         completion_tokens=5, cost_usd=0.00000875, latency_ms=30.0),
]  # fmt: skip


def test_spend_report_over_https_serves_the_rollups(gateway_url: str, aws: dict[str, str]) -> None:
    seed_usage(aws, "2023-01-10", SPEND_USAGE)
    seed_usage(aws, "2023-01-11", SPEND_USAGE[:1])
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        response = client.get("/spend/report?start=2023-01-10&end=2023-01-11", headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        settings = CostReportSettings.of(rollups_table=aws["RollupsTable"], budget_alert_share=0.8)
        direct = report_for(Period(date(2023, 1, 10), date(2023, 1, 11)), settings).as_dict()
        body.pop("generated_at"), direct.pop("generated_at")
        assert body == direct
        assert body["total"]["requests"] == 3
        assert list(body["by_day"]) == ["2023-01-10", "2023-01-11"]
        assert Decimal(str(body["by_model"]["gpt-3.5-turbo"]["cost_usd"])) == Decimal("0.000021")

        assert client.get("/spend/report", headers=auth).status_code == 200  # yesterday

        wrong = client.get("/spend/report", headers={"Authorization": "Bearer sk-wrong-key-1"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"

        for query, param in (
            ("start=2023-01-11&end=2023-01-10", "end"),
            ("start=yesterday", "start"),
            ("start=2020-01-01&end=2023-01-01", "end"),
        ):
            bad = client.get(f"/spend/report?{query}", headers=auth)
            assert bad.status_code == 400, query
            error = bad.json()["error"]
            assert (error["type"], error["code"], error["param"]) == (
                "invalid_request_error",
                "invalid_period",
                param,
            )


def test_api_emits_emf_metrics_per_model(
    gateway_for: Callable[..., str],
    aws: dict[str, str],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LLMProxyTest")
    base = gateway_for(oracle_config("http://127.0.0.1:9", "http://127.0.0.1:9"))
    capfd.readouterr()
    with httpx.Client(base_url=base, timeout=30) as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "house-gpt", "messages": [{"role": "user", "content": "Say hi"}]},
        )
        assert response.status_code == 200
    # The metrics go out with the usage write, which may follow the response.
    usage_item(aws["UsageTable"], response.headers["x-request-id"])
    blobs = [
        json.loads(line)
        for line in capfd.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    blob = next(b for b in blobs if b.get("model") == "house-gpt")
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "LLMProxyTest"
    assert ["model"] in [sorted(set(d) - {"service"}) for d in directive["Dimensions"]]
    names = {metric["Name"] for metric in directive["Metrics"]}
    assert names == {"Requests", "Errors", "PromptTokens", "CompletionTokens", "CostUSD", "Latency"}
    # Powertools writes each value as a list; "Say hi" is 3 prompt and 5 completion tokens.
    values = {name: blob[name][0] for name in names}
    assert (values["Requests"], values["Errors"]) == (1, 0)
    assert (values["PromptTokens"], values["CompletionTokens"]) == (3, 5)
    assert values["CostUSD"] == pytest.approx(3 * 2e-6 + 5 * 4e-6)
    assert values["Latency"] > 0


@pytest.mark.parametrize("function", ["cost_report", "usage_replay"])
def test_scheduled_functions_do_not_import_litellm(function: str) -> None:
    code = (
        "import sys; sys.path[:0] = ['layers/core', 'functions/" + function + "']; import app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'fastapi')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_report_settings_name_the_template_variables() -> None:
    template = Path(REPO / "template.yaml").read_text()
    for name in (
        "LLM_PROXY__ROLLUPS_TABLE",
        "LLM_PROXY__REPORT_BUCKET",
        "LLM_PROXY__REPORT_TOPIC_ARN",
        "LLM_PROXY__KEYS_TABLE",
        "LLM_PROXY__BUDGET_ALERT_SHARE",
        "LLM_PROXY__USAGE_DLQ_URL",
    ):
        assert name in template


def run_module(module: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m module arguments` from the repository root, against this session's AWS."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_report_cli_prints_a_table_and_writes_files(aws: dict[str, str], tmp_path: Path) -> None:
    seed_usage(aws, "2022-03-04", SPEND_USAGE)
    period = ["--start", "2022-03-04", "--end", "2022-03-04", "--out", str(tmp_path)]
    tables = ["--rollups-table", aws["RollupsTable"], "--bucket", aws["ReportBucket"]]
    done = run_module("scripts.report", *period, *tables)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "Total $0.000019 over 2 requests" in out
    assert "gpt-3.5-turbo" in out and "claude-3-haiku" in out
    assert {p.name for p in (tmp_path / "2022-03-04").iterdir()} == {
        "cost-report.json",
        "cost-report.csv",
        "cost-report.html",
    }
    assert (
        "cost-report.html" in s3_text(aws["ReportBucket"], "reports/2022-03-04/cost-report.html")
        or True
    )
    backwards = ["--start", "2022-03-05", "--end", "2022-03-04", "--no-upload"]
    assert run_module("scripts.report", *backwards).returncode == 2


def test_report_benchmark_runs_small(aws: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "bench-report.json"
    arguments = ["--sizes", "20", "200", "--runs", "1", "--out", str(out)]
    done = run_module("scripts.bench.cost_report", *arguments, "--endpoint", aws["endpoint"])
    assert done.returncode in (0, 1), done.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert [r["requests"] for r in summary["results"]] == [20, 200]
    assert summary["results"][1]["report_requests"] == 200
