"""The report from rollups, without AWS: periods, totals, budget flags and the renderings."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from llm_proxy.accounting.rollups import Rollup
from llm_proxy.errors import ProxyError
from llm_proxy.reports.html import to_html
from llm_proxy.reports.period import Period, last_hours, parse_period, yesterday
from llm_proxy.reports.render import to_csv, to_json, to_text
from llm_proxy.reports.report import Budget, build

from devstack.rollups import aggregate

NOW = datetime(2024, 5, 2, 6, 0, tzinfo=UTC)
DAY = Period(date(2024, 5, 1), date(2024, 5, 1))


def item(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"day": "2024-05-01", "model_group": "gpt-4", "key_id": "k1"}
    return {**base, **fields}


def test_default_periods() -> None:
    assert yesterday(NOW) == DAY
    assert last_hours(24, NOW) == Period(date(2024, 5, 1), date(2024, 5, 2))
    assert parse_period(None, None, DAY) == DAY
    assert parse_period("2024-04-01", None, DAY) == Period(date(2024, 4, 1), date(2024, 4, 1))
    assert parse_period("2024-04-01T23:30:00-02:00", "2024-04-03", DAY).start == date(2024, 4, 2)


@pytest.mark.parametrize(
    ("start", "end", "param"),
    [
        ("2024-05-02", "2024-05-01", "end"),
        ("soon", None, "start"),
        ("2020-01-01", "2024-01-01", "end"),
    ],
)
def test_bad_periods_are_400_naming_the_parameter(start: str, end: str | None, param: str) -> None:
    with pytest.raises(ProxyError) as raised:
        parse_period(start, end, DAY)
    assert (raised.value.status, raised.value.param, raised.value.code) == (
        400,
        param,
        "invalid_period",
    )


def test_aggregate_matches_what_the_adds_count() -> None:
    rows = aggregate(
        [
            item(
                prompt_tokens=10,
                completion_tokens=5,
                cost_usd=Decimal("0.001"),
                latency_ms=Decimal(100),
            ),
            item(status=500, latency_ms=Decimal(300), cache_hit=True),
            item(model_group=None, model_requested="ghost", agent="coder"),
        ]
    )
    by_model = {row.model: row for row in rows}
    gpt = by_model["gpt-4"]
    assert (gpt.requests, gpt.errors, gpt.cache_hits, gpt.prompt_tokens) == (2, 1, 1, 10)
    assert (gpt.latency_ms_sum, gpt.latency_ms_max, gpt.agent) == (400, 300, "-")
    assert by_model["ghost"].agent == "coder"


def test_build_flags_keys_past_their_budget_share() -> None:
    rows = [
        Rollup("2024-05-01", "gpt-4", "k1", "coder", requests=3, cost_usd=Decimal("8.5")),
        Rollup("2024-05-01", "gpt-4", "k2", "ask", requests=1, cost_usd=Decimal("9.9")),
    ]
    budgets = {
        "k1": Budget("k1", Decimal(10), alias="coder key"),
        "k2": Budget("k2", Decimal(10)),
        "k3": Budget("k3", Decimal(0)),  # no budget: never flagged
    }
    report = build(DAY, rows, budgets, 0.8, NOW)
    assert [(f.key_id, f.share) for f in report.flagged] == [("k2", 0.99), ("k1", 0.85)]
    assert report.total.cost_usd == Decimal("18.4")
    data = json.loads(to_json(report))
    assert data["keys_over_budget_share"][1]["key_alias"] == "coder key"
    assert "coder key: $8.50 of $10.00 (85%)" in to_text(report)


def test_empty_period_renders() -> None:
    report = build(Period(date(2024, 5, 1), date(2024, 5, 3)), [], None, 0.8, NOW)
    assert list(report.by_day) == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert "No usage in this period." in to_html(report)
    assert next(iter(csv.reader(io.StringIO(to_csv(report)))))[0] == "day"


def test_html_escapes_names() -> None:
    rows = [Rollup("2024-05-01", "<script>x</script>", "k&1", "a", requests=1, cost_usd=Decimal(1))]
    page = to_html(build(DAY, rows, None, 0.8, NOW))
    assert "<script>" not in page and "&lt;script&gt;" in page and "k&amp;1" in page
