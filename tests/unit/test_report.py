"""The report from rollups, without AWS: periods, totals, budget flags and the renderings."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from llm_proxy.accounting.rollups import NONE, Rollup, key_of
from llm_proxy.accounting.usage import bounded
from llm_proxy.errors import DomainError
from llm_proxy.reports.html import OTHER, OTHER_COLOUR, PALETTE, to_html
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
    with pytest.raises(DomainError) as raised:
        parse_period(start, end, DAY)
    answered = raised.value.as_proxy_error()
    assert (answered.status, answered.param, answered.code) == (400, param, "invalid_period")


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


def test_rollups_are_kept_per_team_and_user() -> None:
    rows = aggregate(
        [
            item(team_id="t1", user_id="u1", cost_usd=Decimal(1)),
            item(team_id="t1", user_id="u1", cost_usd=Decimal(2)),
            item(team_id="t1", user_id="u2", cost_usd=Decimal(4)),
            item(cost_usd=Decimal(8)),
        ]
    )
    costs = {(row.team_id, row.user_id): row.cost_usd for row in rows}
    assert costs == {("t1", "u1"): 3, ("t1", "u2"): 4, (NONE, NONE): 8}
    assert key_of(item(team_id="t1", user_id="u2")).sort_key == "gpt-4#k1#-#t1#u2"


def test_the_rollup_key_fits_whatever_its_labels() -> None:
    # Five labels of 4-byte characters, far past the bound: the sort key stays within
    # DynamoDB's 1,024 bytes, and the usage item's labels are its rollup's.
    wide = "\N{GRINNING FACE}" * 600
    usage = bounded(
        item(model_group=wide, key_id=wide, agent=wide, team_id=wide + "t", user_id=wide + "u")
    )
    key = key_of(usage)
    assert len(key.sort_key.encode()) <= 1024
    assert (key.team_id, key.user_id) == (usage["team_id"], usage["user_id"])
    assert key.team_id != key.user_id
    assert {"team_id", "user_id"} <= set(usage["truncated"])


def test_rollups_written_before_teams_read_as_no_team_and_merge() -> None:
    # An item of the three-label key (`model#key_id#agent`) has no team or user attribute.
    old = Rollup.from_item(
        {
            "day": "2024-05-01",
            "rollup_key": "gpt-4#k1#coder",
            "model": "gpt-4",
            "key_id": "k1",
            "agent": "coder",
            "requests": 2,
            "cost_usd": Decimal(3),
            "latency_ms_max": Decimal(9),
        }
    )
    assert (old.team_id, old.user_id) == (NONE, NONE)
    new = Rollup("2024-05-01", "gpt-4", "k1", "coder", requests=1, cost_usd=Decimal(1))
    report = build(DAY, [old, new], None, 0.8, NOW)
    # One row for the same labels, whichever key it was written under.
    assert [(r.requests, r.cost_usd, r.latency_ms_max) for r in report.rows] == [(3, 4, 9)]
    assert report.by_team == {NONE: report.total}
    assert (old.requests, new.requests) == (2, 1)  # the rows read are left as they were


def team_rows() -> list[Rollup]:
    def row(key: str, team: str, user: str, cost: str) -> Rollup:
        return Rollup(
            "2024-05-01", "gpt-4", key, "coder", team, user, requests=1, cost_usd=Decimal(cost)
        )

    return [
        row("k1", "search", "ann", "1.5"),
        row("k2", "search", "bob", "2"),
        row("k3", "=HYPERLINK(1)", "ann", "4"),
        row("k4", NONE, NONE, "0.25"),
    ]


def test_spend_by_team_and_user_in_every_format() -> None:
    report = build(DAY, team_rows(), None, 0.8, NOW)
    data = json.loads(to_json(report))
    costliest_first = ["=HYPERLINK(1)", "search", NONE]
    assert list(data["by_team"]) == costliest_first
    assert {team: v["cost_usd"] for team, v in data["by_team"].items()} == {
        "=HYPERLINK(1)": 4.0,
        "search": 3.5,
        NONE: 0.25,
    }
    assert {user: v["requests"] for user, v in data["by_user"].items()} == {
        "ann": 2,
        "bob": 1,
        NONE: 1,
    }
    for grouped in ("by_team", "by_user"):
        assert sum(v["cost_usd"] for v in data[grouped].values()) == data["total"]["cost_usd"]
    lines = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [(r["key_id"], r["team_id"], r["user_id"]) for r in lines] == [
        ("k1", "search", "ann"),
        ("k2", "search", "bob"),
        ("k3", "'=HYPERLINK(1)", "ann"),  # never a formula
        ("k4", NONE, NONE),
    ]
    text = to_text(report)
    assert "team " in text and "user " in text
    assert text.index("search") < text.index("bob")
    page = to_html(report)
    assert "Cost per team" in page and "Cost per user" in page
    assert "<tr><td>search</td><td>2</td>" in page and "<tr><td>ann</td><td>2</td>" in page


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


def day_rows(models: int, days: int = 3) -> list[Rollup]:
    """`models` models a day for `days` days; model m<n> costs n + 1 dollars a day."""
    return [
        Rollup(f"2024-05-0{d + 1}", f"m{n}", "k1", "coder", requests=1, cost_usd=Decimal(n + 1))
        for d in range(days)
        for n in range(models)
    ]


def svgs(page: str) -> list[str]:
    found, start = [], 0
    while (start := page.find("<svg", start)) >= 0:
        end = page.index("</svg>", start) + len("</svg>")
        found.append(page[start:end])
        start = end
    return found


def test_cost_per_day_is_stacked_by_model_with_its_table_beside() -> None:
    period = Period(date(2024, 5, 1), date(2024, 5, 3))
    page = to_html(build(period, day_rows(3), None, 0.8, NOW))
    day_chart = svgs(page)[0]
    ET.fromstring(day_chart)  # noqa: S314 - the page under test
    # The costliest model first, in the first colour: a bar a day, and its legend swatch.
    assert [day_chart.count(f'fill="{colour}"') for colour in PALETTE[:4]] == [4, 4, 4, 0]
    assert "2024-05-02 m2: $3.000000" in day_chart
    table = page[page.index("<table>", page.index(day_chart)) :]
    header = table[: table.index("</tr>")]
    assert [header.index(m) for m in ("m2", "m1", "m0")] == sorted(
        header.index(m) for m in ("m2", "m1", "m0")
    )
    assert "<tr><td>2024-05-03</td><td>3.000000</td><td>2.000000</td><td>1.000000</td>" in table
    assert "<td>6.000000</td></tr>" in table  # each day's total


def test_models_past_the_palette_are_other_models_in_every_chart() -> None:
    models = len(PALETTE) + 2
    page = to_html(build(DAY, day_rows(models, days=1), None, 0.8, NOW))
    day_chart, model_chart = svgs(page)[:2]
    assert OTHER in day_chart
    # The three cheapest models stack as one bar: $1 + $2 + $3.
    assert f"2024-05-01 {OTHER}: $6.000000" in day_chart
    assert day_chart.count(f'fill="{OTHER_COLOUR}"') == 2  # its bar and its legend swatch
    # In the model chart each model keeps its day-chart colour; the grouped ones are grey.
    assert f'fill="{PALETTE[0]}"><title>m{models - 1}:' in model_chart
    assert model_chart.count(f'fill="{OTHER_COLOUR}"') == 3


def test_the_day_axis_reads_small_costs() -> None:
    rows = [Rollup("2024-05-01", "m", "k", "a", requests=1, cost_usd=Decimal("0.000021"))]
    day_chart = svgs(to_html(build(DAY, rows, None, 0.8, NOW)))[0]
    # $0.00005 at the top, in ticks of $0.0000125.
    assert ">$0.0000500</text>" in day_chart and ">$0.0000125</text>" in day_chart


def test_a_period_without_cost_says_so() -> None:
    rows = [Rollup("2024-05-01", "llama2", "k", "a", requests=2, cost_usd=Decimal(0))]
    assert "No cost in this period." in to_html(build(DAY, rows, None, 0.8, NOW))
