"""The gateway's EMF metrics, read back from what Powertools prints: which metric goes under
which dimensions, with what value, and that no dimension can carry a made-up or unbounded
name."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import pytest
from llm_proxy.accounting.metrics import dimension_value, emit_budget
from llm_proxy.accounting.usage import emit_metrics

from tests.support.records import usage_record


@pytest.fixture(autouse=True)
def namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LLMProxyUnit")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "llm-proxy")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


def blobs(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def published(out: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(metric, its dimensions with their values) -> the value, for every record printed."""
    found = {}
    for blob in blobs(out):
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "LLMProxyUnit"
            for names in directive["Dimensions"]:
                assert "service" in names
                dimensions = frozenset((name, blob[name]) for name in names)
                for metric in directive["Metrics"]:
                    found[metric["Name"], dimensions] = blob[metric["Name"]][0]
    return found


def dims(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset({"service": "llm-proxy", **values}.items())


def test_a_request_is_counted_per_model_agent_status_class_and_in_total(
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = usage_record(
        request_id="r1",
        agent="coder",
        model_group="gpt-4o",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.002,
        latency_ms=250.0,
        upstream_ms=200.0,
        cache_hit=True,
    )
    emit_metrics(record)
    got = published(capsys.readouterr().out)
    for where in (dims(model="gpt-4o"), dims(), dims(agent="coder"), dims(status_class="2xx")):
        assert got["Requests", where] == 1
        assert got["Errors", where] == 0
        assert got["PromptTokens", where] == 10
        assert got["CostUSD", where] == pytest.approx(0.002)
    assert got["GatewayLatency", dims(model="gpt-4o")] == pytest.approx(50.0)
    assert got["UpstreamLatency", dims()] == pytest.approx(200.0)
    assert got["CacheHits", dims(model="gpt-4o")] == 1
    assert got["ProviderErrors", dims(model="gpt-4o")] == 0
    # A success has no error type or code to count.
    assert not any(name in dict(d) for _, d in got for name in ("error_type", "error_code"))


@pytest.mark.parametrize(
    ("status", "error_type", "code", "provider"),
    [
        (502, "upstream_error", "provider_unreachable", 1),
        (504, "timeout_error", "provider_timeout", 1),
        (429, "rate_limit_error", "provider_rate_limited", 1),
        (429, "rate_limit_error", "rate_limit_exceeded", 0),
        (429, "budget_exceeded", "budget_exceeded", 0),
        (400, "invalid_request_error", None, 0),
    ],
)
def test_an_error_is_counted_by_class_type_status_and_code(
    capsys: pytest.CaptureFixture[str],
    status: int,
    error_type: str,
    code: str | None,
    provider: int,
) -> None:
    record = usage_record(request_id="r2", latency_ms=5.0)
    record.fail(status, error_type, code)
    emit_metrics(record)
    got = published(capsys.readouterr().out)
    status_class = f"{status // 100}xx"
    assert got["Errors", dims(model="unrouted")] == 1
    assert got["Requests", dims(status_class=status_class)] == 1
    assert got["Errors", dims(status_class=status_class, error_type=error_type)] == 1
    assert got["Errors", dims(status=str(status), error_code=code or str(status))] == 1
    assert got["ProviderErrors", dims(model="unrouted")] == provider
    # Not routed: no provider time to tell apart.
    assert ("GatewayLatency", dims()) not in got


def test_dimension_values_are_printable_ascii_and_bounded() -> None:
    assert dimension_value("gpt-4o") == "gpt-4o"
    assert dimension_value(None) == dimension_value("  ") == "-"
    assert dimension_value("équipe\nnuit") == "?quipe?nuit"
    long = dimension_value("a" * 5000)
    assert len(long) <= 250 and "sha256:" in long
    assert long == dimension_value("a" * 5000) != dimension_value("a" * 5001)


def test_a_budget_share_names_the_key_by_its_alias(capsys: pytest.CaptureFixture[str]) -> None:
    emit_budget("team-a", Decimal(10), Decimal("8.5"))
    assert published(capsys.readouterr().out) == {
        ("BudgetShare", dims(key_alias="team-a")): 0.85,
        ("BudgetShare", dims()): 0.85,
    }
    emit_budget(None, Decimal(10), Decimal(11))
    assert published(capsys.readouterr().out)["BudgetShare", dims(key_alias="-")] == 1.1
    # Nothing settled, or no budget to share.
    emit_budget("team-a", Decimal(10), None)
    emit_budget("team-a", Decimal(0), Decimal(1))
    emit_budget("team-a", None, Decimal(1))
    assert blobs(capsys.readouterr().out) == []


def test_nothing_is_emitted_without_a_namespace(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    emit_metrics(usage_record(request_id="r3", endpoint="/v1/embeddings"))
    emit_budget("team-a", Decimal(1), Decimal(1))
    assert blobs(capsys.readouterr().out) == []


def test_blobs_emitted_from_several_threads_keep_a_line_each(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The usage writer emits from a thread of its own while requests log theirs: each blob is
    # one write of its own line, or CloudWatch could not parse a line two blobs share.
    def emit_many(agent: str) -> None:
        for n in range(200):
            emit_metrics(usage_record(request_id=f"{agent}-{n}", agent=agent, latency_ms=1.0))

    emit_metrics(usage_record(request_id="one", agent="one", latency_ms=1.0))
    per_record = len(capfd.readouterr().out.splitlines())
    threads = [threading.Thread(target=emit_many, args=(f"agent-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [line for line in capfd.readouterr().out.splitlines() if line]
    assert len(blobs("\n".join(lines))) == len(lines) == 4 * 200 * per_record
