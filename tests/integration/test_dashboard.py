"""The dashboard and the alarms of template.yaml read only what the code emits, so a renamed
metric or dimension cannot leave a blank graph or an alarm that never fires.

Every metric name and dimension set they use in the gateway's namespace (plain metrics, SEARCH
expressions, the Metrics Insights query) must appear in the EMF output of a run that drives the
real code: requests over HTTP through the gateway (litellm, the OpenAI-format double, moto on
loopback), the usage store, the replay and the cost-report functions, each with its template
service name. AWS's own metrics (Lambda, SQS, API Gateway) are not emitted by us: their
dimensions must name the template's resources instead."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest
from llm_proxy.accounting.dead_letters import encode
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.usage import UsageTable

from devstack.aws import load_template
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.functions import load_function
from tests.support.records import usage_record, virtual_key
from tests.support.stack import MASTER_KEY, usage_item

ALARM_TYPE = "AWS::CloudWatch::Alarm"
FUNCTION_TYPE = "AWS::Serverless::Function"
# AWS's own metrics the dashboard and alarms may read, as AWS names them, and what their
# dimensions must name.
AWS_METRICS = {
    "AWS/Lambda": {"ConcurrentExecutions", "Throttles", "Errors", "Duration", "Invocations"},
    "AWS/SQS": {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"},
    "AWS/ApiGateway": {"Count", "4XXError", "5XXError", "Latency", "IntegrationLatency"},
}
AWS_DIMENSIONS = {
    "AWS/Lambda": {"FunctionName"},
    "AWS/SQS": {"QueueName"},
    "AWS/ApiGateway": {"ApiName", "Stage"},
}
REFERENCE = re.compile(r"\$\{([^}!]+)\}")
SEARCH = re.compile(
    r"SEARCH\('\{\"?(?P<namespace>[^\",}]+)\"?,(?P<dimensions>[^}]*)\}(?P<terms>[^']*)',"
    r"\s*'(?P<stat>[^']+)',\s*(?P<period>\d+)\)"
)
INSIGHTS = re.compile(
    r"SELECT\s+\w+\((?P<metric>\w+)\)\s+FROM\s+SCHEMA\(\"(?P<namespace>[^\"]+)\",\s*"
    r"(?P<dimensions>[^)]*)\)(?:\s+WHERE\s+(?P<where>.*?))?(?:\s+GROUP BY\s+(?P<group>[\w, ]+))?$"
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


# --- reading the template -------------------------------------------------------------------


def resolve(template: Mapping[str, Any], name: str) -> str:
    """What `${name}` or `!Ref name` stands for here: a parameter's default, else a marker
    naming the resource (or attribute, or pseudo parameter), which must exist."""
    parameters, resources = template["Parameters"], template["Resources"]
    if name in parameters:
        return str(parameters[name]["Default"])
    if name.startswith("AWS::"):
        assert name in {"AWS::StackName", "AWS::Region", "AWS::AccountId", "AWS::Partition"}
        return f"<{name}>"
    resource = name.split(".", 1)[0]
    assert resource in resources, f"${{{name}}} names no resource of the template"
    return f"<{name}>"


def value(template: Mapping[str, Any], node: Any) -> str:
    """A property's value, its intrinsic functions resolved as `resolve` does."""
    if isinstance(node, str | int | float):
        return str(node)
    if "Ref" in node:
        return resolve(template, node["Ref"])
    if "Fn::GetAtt" in node:
        return resolve(template, ".".join(node["Fn::GetAtt"]))
    if "Fn::Sub" in node:
        return REFERENCE.sub(lambda m: resolve(template, m.group(1)), node["Fn::Sub"])
    raise AssertionError(f"unexpected value {node!r}")


def dashboard(template: Mapping[str, Any]) -> dict[str, Any]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    parsed: dict[str, Any] = json.loads(value(template, body))
    return parsed


def of_type(template: Mapping[str, Any], resource_type: str) -> set[str]:
    return {name for name, r in template["Resources"].items() if r["Type"] == resource_type}


@dataclass(frozen=True)
class Use:
    """A metric the dashboard or an alarm reads: dimension -> its value (None: any value)."""

    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str | None], ...]
    where: str

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.dimensions)


def search_use(expression: str, where: str) -> Use:
    found = SEARCH.fullmatch(expression)
    assert found, f"{where}: not a SEARCH expression this test reads: {expression}"
    terms = dict(re.findall(r'(\w+)="([^"]*)"', found["terms"]))
    metric = terms.pop("MetricName")
    schema = [name.strip() for name in found["dimensions"].split(",")]
    assert set(terms) <= set(schema), f"{where}: filters on a dimension outside the schema"
    return Use(found["namespace"], metric, tuple((n, terms.get(n)) for n in schema), where)


def insights_use(query: str, where: str) -> Use:
    found = INSIGHTS.fullmatch(" ".join(query.split()))
    assert found, f"{where}: not a Metrics Insights query this test reads: {query}"
    schema = [name.strip() for name in found["dimensions"].split(",")]
    fixed = dict(re.findall(r"(\w+)\s*=\s*'([^']*)'", found["where"] or ""))
    grouped = [name.strip() for name in (found["group"] or "").split(",") if name.strip()]
    assert set(fixed) | set(grouped) <= set(schema), f"{where}: a dimension outside the schema"
    return Use(found["namespace"], found["metric"], tuple((n, fixed.get(n)) for n in schema), where)


def dashboard_uses(board: Mapping[str, Any]) -> list[Use]:
    uses = []
    for widget in board["widgets"]:
        properties = widget["properties"]
        where = f"widget {properties.get('title')!r}"
        for row in properties.get("metrics", []):
            if isinstance(row[0], dict):
                uses.append(search_use(row[0]["expression"], where))
                continue
            plain = [part for part in row if not isinstance(part, dict)]
            namespace, metric, *pairs = plain
            dimensions = tuple(zip(pairs[::2], pairs[1::2], strict=True))
            uses.append(Use(namespace, metric, dimensions, where))
    return uses


def alarm_uses(template: Mapping[str, Any]) -> list[Use]:
    uses = []
    for name in sorted(of_type(template, ALARM_TYPE)):
        properties = template["Resources"][name]["Properties"]
        stats = [properties] if "MetricName" in properties else []
        for query in properties.get("Metrics", []):
            if "MetricStat" in query:
                stats.append(query["MetricStat"]["Metric"])
            elif "SELECT" in value(template, query["Expression"]):
                uses.append(insights_use(value(template, query["Expression"]), name))
        for stat in stats:
            dimensions = tuple(
                (d["Name"], value(template, d["Value"])) for d in stat.get("Dimensions", [])
            )
            uses.append(
                Use(value(template, stat["Namespace"]), stat["MetricName"], dimensions, name)
            )
    return uses


# --- static checks --------------------------------------------------------------------------


def test_the_dashboard_reads_our_namespace_and_aws_metrics_only(template: dict[str, Any]) -> None:
    namespace = resolve(template, "MetricsNamespace")
    uses = dashboard_uses(dashboard(template)) + alarm_uses(template)
    assert {use.namespace for use in uses} == {namespace, *AWS_METRICS}
    assert len({use.metric for use in uses if use.namespace == namespace}) >= 15


def test_aws_metrics_name_the_template_resources(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    api = resources["Api"]["Properties"]
    # SAM names the REST API after the stack unless it is given a Name.
    assert "Name" not in api
    stage = value(template, api["StageName"])
    for use in dashboard_uses(dashboard(template)) + alarm_uses(template):
        if use.namespace not in AWS_METRICS:
            continue
        assert use.metric in AWS_METRICS[use.namespace], use
        dimensions = dict(use.dimensions)
        assert set(dimensions) == AWS_DIMENSIONS[use.namespace], use
        if use.namespace == "AWS/Lambda":
            function = dimensions["FunctionName"] or ""
            assert function.strip("<>") in of_type(template, FUNCTION_TYPE), use
        elif use.namespace == "AWS/SQS":
            queue, _, attribute = (dimensions["QueueName"] or "").strip("<>").partition(".")
            assert queue in of_type(template, "AWS::SQS::Queue") and attribute == "QueueName", use
        else:
            assert dimensions == {"ApiName": "<AWS::StackName>", "Stage": stage}, use


def test_every_function_is_watched(template: dict[str, Any]) -> None:
    functions = of_type(template, FUNCTION_TYPE)
    uses = dashboard_uses(dashboard(template)) + alarm_uses(template)

    def functions_in(metric: str, where: str | None = None) -> set[str]:
        return {
            (dict(use.dimensions)["FunctionName"] or "").strip("<>")
            for use in uses
            if use.metric == metric
            and use.namespace == "AWS/Lambda"
            and (where is None or use.where == where)
        }

    assert functions_in("ConcurrentExecutions") == functions
    assert functions_in("Throttles") == functions
    assert functions_in("Throttles", "LambdaThrottlesAlarm") == functions


def test_cold_starts_are_read_from_the_request_path_log_groups(template: dict[str, Any]) -> None:
    logs = [w for w in dashboard(template)["widgets"] if w["type"] == "log"]
    assert len(logs) == 1
    query = logs[0]["properties"]["query"]
    sources = re.findall(r"SOURCE '<(\w+)>'", query)
    expected = {
        template["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for function in ("ApiFunction", "ApiStreamFunction", "KeysFunction")
    }
    assert set(sources) == expected
    assert all(s in of_type(template, "AWS::Logs::LogGroup") for s in sources)
    assert "@initDuration" in query and "Restore Duration" in query


def test_every_alarm_is_on_the_dashboard_and_notifies_the_report_topic(
    template: dict[str, Any],
) -> None:
    alarms = of_type(template, ALARM_TYPE)
    assert len(alarms) >= 7
    shown = [w for w in dashboard(template)["widgets"] if w["type"] == "alarm"]
    assert {a.strip("<>").removesuffix(".Arn") for a in shown[0]["properties"]["alarms"]} == alarms
    thresholds = []
    for name in alarms:
        properties = template["Resources"][name]["Properties"]
        assert properties["AlarmActions"] == [{"Ref": "ReportTopic"}], name
        # Each threshold is a parameter of its own, with a default.
        parameter = properties["Threshold"]["Ref"]
        assert "Default" in template["Parameters"][parameter], name
        thresholds.append(parameter)
        queries = properties.get("Metrics", [])
        if queries:
            assert sum(1 for q in queries if q.get("ReturnData", True)) == 1, name
            ids = {q["Id"] for q in queries}
            math = " ".join(
                value(template, q["Expression"])
                for q in queries
                if "Expression" in q and not value(template, q["Expression"]).startswith("SELECT")
            )
            # Metric math uses every metric it fetches, and only those (functions are upper case).
            assert set(re.findall(r"\b[a-z]\w*\b", math)) == ids - {
                q["Id"] for q in queries if "Expression" in q
            }, name
    assert len(set(thresholds)) == len(thresholds)
    assert "BudgetAlertShare" in thresholds and "BudgetExhaustedShare" in thresholds


def test_alarms_may_publish_to_the_encrypted_topic(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    key_ref = resources["ReportTopic"]["Properties"]["KmsMasterKeyId"]
    # SNS's AWS managed key would refuse CloudWatch: its policy cannot be changed.
    assert key_ref == {"Ref": "ReportTopicKey"}
    key = resources["ReportTopicKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    alarms = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(alarms) == 1
    assert set(alarms[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    # Only for alarms named after the stack, as all of this stack's are.
    source = alarms[0]["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(":alarm:${AWS::StackName}-*")
    for name in of_type(template, ALARM_TYPE):
        alarm_name = resources[name]["Properties"]["AlarmName"]["Fn::Sub"]
        assert alarm_name.startswith("${AWS::StackName}-"), name
    # The report function still publishes its summary: as under SNS's managed key, the
    # account's principals may use the key through SNS, and only so.
    through_sns = [s for s in statements if s["Sid"] == "PublishThroughSns"]
    assert through_sns[0]["Condition"]["StringEquals"] == {
        "kms:CallerAccount": {"Ref": "AWS::AccountId"},
        "kms:ViaService": {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"},
    }


# --- the code emits what they read ----------------------------------------------------------

CONFIG = gateway_config(
    openai_double(),
    deployment(
        "broken",
        "openai/gpt-3.5-turbo",
        api_base="http://127.0.0.1:9/v1",
        api_key="os.environ/OPENAI_API_KEY",
    ),
    router_settings=NO_RETRIES,
    litellm_settings={"cache": True},
    general_settings=MASTER_KEY_FROM_SECRET,
)


def emitted(output: str) -> set[tuple[str, str, frozenset[tuple[str, str]]]]:
    """(namespace, metric, its dimensions with their values) of every EMF record written."""
    found = set()
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                values = frozenset((name, blob[name]) for name in dimension_set)
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], values))
    return found


def satisfied(use: Use, seen: set[tuple[str, str, frozenset[tuple[str, str]]]]) -> bool:
    for namespace, metric, values in seen:
        if (namespace, metric) != (use.namespace, use.metric):
            continue
        if {name for name, _ in values} != use.names:
            continue
        got = dict(values)
        if all(wanted is None or got[name] == wanted for name, wanted in use.dimensions):
            return True
    return False


def environment(template: Mapping[str, Any], function: str) -> dict[str, str]:
    """The metric settings a function runs with as deployed."""
    variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}, function
    return {
        "POWERTOOLS_METRICS_NAMESPACE": resolve(template, "MetricsNamespace"),
        "POWERTOOLS_SERVICE_NAME": variables["POWERTOOLS_SERVICE_NAME"],
    }


@pytest.fixture
def queues(aws: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A dead-letter queue and a quarantine of this test's own."""
    sqs = boto3.client("sqs")
    urls = [
        str(sqs.create_queue(QueueName=f"{kind}-{uuid.uuid4().hex[:8]}")["QueueUrl"])
        for kind in ("dlq", "quarantine")
    ]
    yield urls[0], urls[1]
    for url in urls:
        sqs.delete_queue(QueueUrl=url)


def ask(base: str, key: str, model: str, content: str, agent: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **({"x-agent": agent} if agent else {})}
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers=headers,
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        timeout=30,
    )


def drive_the_gateway(base: str, aws: dict[str, str]) -> str:
    """Successes, a cache hit, a provider failure and a 429, from the master key and from a
    virtual key with a $5 budget (returned)."""
    question = f"Say hi ({uuid.uuid4().hex})"
    answered = [
        ask(base, MASTER_KEY, "gpt-3.5-turbo", question, agent="coder"),
        ask(base, MASTER_KEY, "gpt-3.5-turbo", question, agent="coder"),  # from the cache
        ask(base, MASTER_KEY, "broken", "Say hi"),  # the provider is unreachable: 502
    ]
    assert [r.status_code for r in answered] == [200, 200, 502], answered[-1].text
    assert answered[1].headers.get("x-litellm-cache-hit") == "true"
    made = httpx.post(
        f"{base}/key/generate",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"key_alias": "team-a", "max_budget": 5, "rpm_limit": 1, "agent": "reviewer"},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    key = made.json()["key"]
    limited = [ask(base, key, "gpt-3.5-turbo", f"Say hi ({n})") for n in range(2)]
    assert [r.status_code for r in limited] == [200, 429], limited[-1].text
    for response in [*answered, *limited]:
        usage_item(aws["UsageTable"], response.headers["x-request-id"])
    return str(key)


def drive_the_usage_store(aws: dict[str, str], dead_letters: str, quarantine: str) -> None:
    """A record DynamoDB cannot take now (its table is missing): dead-lettered; one it refuses
    as it is (an empty request id): quarantined."""
    missing = UsageTable(f"missing-{uuid.uuid4().hex[:8]}", 90, dead_letter_queue=dead_letters)
    assert not missing.write(usage_record(endpoint="/v1/embeddings"))
    store = UsageTable(aws["UsageTable"], 90, quarantine_queue=quarantine)
    assert not store.write(usage_record(request_id="", endpoint="/v1/embeddings"))


def drive_the_replay(dead_letters: str) -> None:
    """Letters the replay repairs (over DynamoDB's item size) and quarantines (not JSON)."""
    record = usage_record()
    huge = {**record.to_item(90), "deployment_model": "openai/" + "z" * 500_000}
    sqs = boto3.client("sqs")
    for body in (encode(huge), "not json at all"):
        sqs.send_message(QueueUrl=dead_letters, MessageBody=body)
    result = load_function("usage_replay").handler({}, None)
    assert result["written"] >= 1 and result["quarantined"] >= 1, result


def test_every_metric_the_dashboard_and_alarms_read_is_emitted(
    template: dict[str, Any],
    aws: dict[str, str],
    gateway_for: Callable[..., str],
    queues: tuple[str, str],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = resolve(template, "MetricsNamespace")
    wanted = [
        use
        for use in dashboard_uses(dashboard(template)) + alarm_uses(template)
        if use.namespace == namespace
    ]
    dead_letters, quarantine = queues
    base = gateway_for(CONFIG)
    capfd.readouterr()

    for name, setting in environment(template, "ApiFunction").items():
        monkeypatch.setenv(name, setting)
    key = drive_the_gateway(base, aws)
    drive_the_usage_store(aws, dead_letters, quarantine)

    for name, setting in environment(template, "UsageReplayFunction").items():
        monkeypatch.setenv(name, setting)
    for name, setting in {
        "LLM_PROXY__USAGE_TABLE": aws["UsageTable"],
        "LLM_PROXY__ROLLUPS_TABLE": aws["RollupsTable"],
        "LLM_PROXY__USAGE_DLQ_URL": dead_letters,
        "LLM_PROXY__USAGE_QUARANTINE_URL": quarantine,
    }.items():
        monkeypatch.setenv(name, setting)
    drive_the_replay(dead_letters)

    for name, setting in environment(template, "CostReportFunction").items():
        monkeypatch.setenv(name, setting)
    monkeypatch.setenv("LLM_PROXY__REPORT_BUCKET", aws["ReportBucket"])
    today = datetime.now(UTC).date().isoformat()
    load_function("cost_report").handler({"start": today, "end": today}, None)

    out = capfd.readouterr().out
    seen = emitted(out)
    missing = [use for use in wanted if not satisfied(use, seen)]
    assert not missing, "read but never emitted:\n" + "\n".join(map(str, missing))
    # The services the dashboard names are those the functions emit under.
    services = {dict(use.dimensions).get("service") for use in wanted}
    assert services == {
        environment(template, f)["POWERTOOLS_SERVICE_NAME"]
        for f in ("ApiFunction", "UsageReplayFunction", "CostReportFunction")
    }
    assert environment(template, "ApiStreamFunction") == environment(template, "ApiFunction")
    # No dimension carries a key: the budget metric names the key's alias, and its value is
    # the key's spend (as the keys API reads it) over its budget, from the one request settled.
    for _, metric, values in seen:
        assert not any(v.startswith("sk-") or re.fullmatch(r"[0-9a-f]{64}", v) for _, v in values)
        if metric == "BudgetShare":
            assert dict(values).get("key_alias") in (None, "team-a")
    info = httpx.get(
        f"{base}/key/info",
        params={"key": key},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    ).json()["info"]
    assert info["spend"] > 0
    shares = [
        blob["BudgetShare"][0]
        for line in out.splitlines()
        if '"BudgetShare"' in line and (blob := json.loads(line)).get("key_alias") == "team-a"
    ]
    assert shares == [pytest.approx(info["spend"] / 5)]


def test_settling_a_budget_returns_the_spend_the_metric_shows(aws: dict[str, str]) -> None:
    """A key with a token limit and a budget: its token counter settles in one call, its spend
    in another that reads the new spend back."""
    counters = CountersTable(aws["CountersTable"])
    key = virtual_key(key_name="sk-...", key_alias="team-b", max_budget=2, tpm_limit=10**6)
    # Both in one minute window, whenever the test runs.
    now = time.time()
    first = counters.admit(key, tokens=500, cost=0.5, now=now)
    assert (first.budget, first.budget_owner) == (Decimal(2), "team-b")
    assert counters.settle(first, 120, 0.25, {}, None) == Decimal("0.25")
    second = counters.admit(key, tokens=500, cost=0.5, now=now)
    assert counters.settle(second, 100, 0.3, {}, None) == Decimal("0.55")
    assert counters.spend(key) == 0.55
    minute = boto3.resource("dynamodb").Table(aws["CountersTable"])
    counter = minute.get_item(Key={"counter_id": second.minute_items[0]})["Item"]
    assert counter["tokens"] == 220
    # Reserved exactly what it cost: nothing to settle, so no spend to report.
    third = counters.admit(key, tokens=10, cost=0.1)
    assert counters.settle(third, 10, 0.1, {}, None) is None
    assert counters.spend(key) == pytest.approx(0.65)
