"""The cost report, built from daily rollups only (never the usage table): totals per day,
model, key and agent, budget flags, and its JSON, CSV and text forms.

This module must stay free of litellm: the cost-report function ships without it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from llm_proxy import aws
from llm_proxy.accounting.rollups import Rollup, Rollups, days
from llm_proxy.errors import ProxyError, invalid_request

# A period longer than this is a mistake, and one Query a day would make it slow.
MAX_DAYS = 366
DEFAULT_BUDGET_SHARE = 0.8
COST_PLACES = Decimal("0.0000000001")


@dataclass(frozen=True)
class Period:
    """Whole UTC days, `start` to `end`, both included (rollups are daily)."""

    start: date
    end: date

    @property
    def label(self) -> str:
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()}_{self.end.isoformat()}"

    def days(self) -> list[str]:
        return [day.isoformat() for day in days(self.start, self.end)]


def yesterday(now: datetime | None = None) -> Period:
    day = (now or datetime.now(UTC)).date() - timedelta(days=1)
    return Period(day, day)


def last_hours(hours: int = 24, now: datetime | None = None) -> Period:
    """The days the last `hours` touch: with daily rollups, the last 24 hours are yesterday and
    today."""
    now = now or datetime.now(UTC)
    return Period((now - timedelta(hours=hours)).date(), now.date())


def _day(value: str, param: str) -> date:
    try:
        # A date, or a timestamp whose UTC day is meant.
        if len(value) > 10:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            return moment.date()
        return date.fromisoformat(value)
    except ValueError:
        raise invalid_request(
            f"'{param}' must be a date (YYYY-MM-DD) or an ISO 8601 timestamp.",
            param=param,
            code="invalid_period",
        ) from None


def parse_period(start: str | None, end: str | None, default: Period) -> Period:
    """A period from `start`/`end` (either may be left out: one day), or the default."""
    if not start and not end:
        return default
    first = _day(start or str(end), "start")
    last = _day(end or str(start), "end")
    if last < first:
        raise invalid_request("'end' is before 'start'.", param="end", code="invalid_period")
    if (last - first).days + 1 > MAX_DAYS:
        raise invalid_request(
            f"The period is longer than {MAX_DAYS} days.", param="end", code="invalid_period"
        )
    return Period(first, last)


@dataclass(frozen=True)
class ReportSettings:
    rollups_table: str | None
    bucket: str | None
    topic_arn: str | None
    # Optional: the virtual keys table (`key_id`, `max_budget`, ...); no flags without it.
    keys_table: str | None
    budget_share: float
    prefix: str = "reports"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReportSettings:
        env = os.environ if environ is None else environ
        return cls(
            rollups_table=env.get("LLM_PROXY__ROLLUPS_TABLE") or None,
            bucket=env.get("LLM_PROXY__REPORT_BUCKET") or None,
            topic_arn=env.get("LLM_PROXY__REPORT_TOPIC_ARN") or None,
            keys_table=env.get("LLM_PROXY__KEYS_TABLE") or None,
            budget_share=float(
                env.get("LLM_PROXY__BUDGET_ALERT_SHARE") or str(DEFAULT_BUDGET_SHARE)
            ),
        )


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    cache_hits: int = 0
    latency_ms_sum: Decimal = field(default_factory=Decimal)
    latency_ms_max: Decimal = field(default_factory=Decimal)

    def add(self, row: Rollup | Totals) -> None:
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cache_hits"):
            setattr(self, name, getattr(self, name) + getattr(row, name))
        self.cost_usd += row.cost_usd
        self.latency_ms_sum += row.latency_ms_sum
        self.latency_ms_max = max(self.latency_ms_max, row.latency_ms_max)

    def as_dict(self) -> dict[str, Any]:
        average = self.latency_ms_sum / self.requests if self.requests else Decimal(0)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": money(self.cost_usd),
            "cache_hits": self.cache_hits,
            "latency_ms_avg": round(float(average), 1),
            "latency_ms_max": round(float(self.latency_ms_max), 1),
        }


def money(value: Decimal) -> float:
    return float(value.quantize(COST_PLACES))


@dataclass(frozen=True)
class Budget:
    key_id: str
    max_budget: Decimal
    alias: str | None = None
    # The key's lifetime spend when the keys table keeps one; else the period's is used.
    spend: Decimal | None = None


@dataclass(frozen=True)
class BudgetFlag:
    key_id: str
    alias: str | None
    max_budget: Decimal
    spend: Decimal

    @property
    def share(self) -> float:
        return float(self.spend / self.max_budget)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "key_alias": self.alias,
            "max_budget": money(self.max_budget),
            "spend": money(self.spend),
            "share": round(self.share, 4),
        }


@dataclass
class Report:
    period: Period
    generated_at: str
    total: Totals
    by_day: dict[str, Totals]
    by_model: dict[str, Totals]
    by_key: dict[str, Totals]
    by_agent: dict[str, Totals]
    rows: list[Rollup]
    budget_share: float
    flagged: list[BudgetFlag]

    def as_dict(self) -> dict[str, Any]:
        def grouped(groups: Mapping[str, Totals]) -> dict[str, Any]:
            return {name: totals.as_dict() for name, totals in groups.items()}

        return {
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "generated_at": self.generated_at,
            "source": "rollups",
            "total": self.total.as_dict(),
            "by_day": grouped(self.by_day),
            "by_model": grouped(self.by_model),
            "by_key": grouped(self.by_key),
            "by_agent": grouped(self.by_agent),
            "budget_alert_share": self.budget_share,
            "keys_over_budget_share": [flag.as_dict() for flag in self.flagged],
        }


def _by(rows: Iterable[Rollup], attribute: str) -> dict[str, Totals]:
    groups: dict[str, Totals] = {}
    for row in rows:
        groups.setdefault(getattr(row, attribute), Totals()).add(row)
    # Most expensive first: what a reader looks for.
    return dict(sorted(groups.items(), key=lambda pair: (-pair[1].cost_usd, pair[0])))


def build(
    period: Period,
    rows: list[Rollup],
    budgets: Mapping[str, Budget] | None = None,
    budget_share: float = DEFAULT_BUDGET_SHARE,
    now: datetime | None = None,
) -> Report:
    total = Totals()
    by_day = {day: Totals() for day in period.days()}
    for row in rows:
        total.add(row)
        by_day.setdefault(row.day, Totals()).add(row)
    by_key = _by(rows, "key_id")
    flagged = []
    for key_id, budget in (budgets or {}).items():
        spend = budget.spend if budget.spend is not None else by_key.get(key_id, Totals()).cost_usd
        if budget.max_budget > 0 and spend >= budget.max_budget * Decimal(str(budget_share)):
            flagged.append(BudgetFlag(key_id, budget.alias, budget.max_budget, spend))
    flagged.sort(key=lambda flag: -flag.share)
    return Report(
        period=period,
        generated_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        total=total,
        by_day=by_day,
        by_model=_by(rows, "model"),
        by_key=by_key,
        by_agent=_by(rows, "agent"),
        rows=sorted(rows, key=lambda r: (r.day, r.model, r.key_id, r.agent)),
        budget_share=budget_share,
        flagged=flagged,
    )


def read_budgets(keys_table: str | None, key_ids: Iterable[str]) -> dict[str, Budget]:
    """Budgets of these keys from the virtual keys table (items keyed by `token`, the usage
    items' `key_id`, with `max_budget`); none when no keys table is configured."""
    wanted = sorted(set(key_ids))
    if not keys_table or not wanted:
        return {}
    dynamodb = aws.resource_table(keys_table).meta.client
    budgets: dict[str, Budget] = {}
    for start in range(0, len(wanted), 100):
        request: dict[str, Any] = {
            keys_table: {"Keys": [{"token": key_id} for key_id in wanted[start : start + 100]]}
        }
        while request:
            page = dynamodb.batch_get_item(RequestItems=request)
            for item in page.get("Responses", {}).get(keys_table, []):
                if item.get("max_budget") is not None:
                    metadata = item.get("metadata") or {}
                    if isinstance(metadata, str):
                        metadata = json.loads(metadata)
                    spend = item.get("spend")
                    budgets[str(item["token"])] = Budget(
                        key_id=str(item["token"]),
                        max_budget=Decimal(item["max_budget"]),
                        alias=item.get("key_alias") or metadata.get("alias"),
                        spend=Decimal(spend) if spend is not None else None,
                    )
            request = page.get("UnprocessedKeys") or {}
    return budgets


def report_for(period: Period, settings: ReportSettings, now: datetime | None = None) -> Report:
    """Read the period's rollups (one Query a day) and the keys' budgets; build the report."""
    if not settings.rollups_table:
        raise ValueError("LLM_PROXY__ROLLUPS_TABLE is not set: there are no rollups to read.")
    rows = Rollups(settings.rollups_table).between(period.start, period.end)
    budgets = read_budgets(settings.keys_table, (row.key_id for row in rows))
    return build(period, rows, budgets, settings.budget_share, now)


def spend(start: str | None, end: str | None, settings: ReportSettings) -> Report:
    """GET /spend/report (master key): the rollups' view of a period, yesterday by default."""
    if not settings.rollups_table:
        raise ProxyError(
            503,
            "No rollups table is configured (LLM_PROXY__ROLLUPS_TABLE).",
            "service_unavailable",
            code="rollups_not_configured",
        )
    return report_for(parse_period(start, end, yesterday()), settings)


# --- renderings -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "day",
    "model",
    "key_id",
    "agent",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cache_hits",
    "latency_ms_avg",
    "latency_ms_max",
)


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        totals = Totals()
        totals.add(row)
        values = totals.as_dict()
        writer.writerow(
            [row.day, row.model, row.key_id, row.agent] + [values[name] for name in CSV_COLUMNS[4:]]
        )
    return out.getvalue()


def _table(title: str, groups: Mapping[str, Totals], limit: int | None = None) -> list[str]:
    header = f"{title:<32} {'requests':>9} {'errors':>7} {'tokens':>12} {'cost USD':>14}"
    lines = [header, "-" * len(header)]
    for name, totals in list(groups.items())[:limit]:
        tokens = totals.prompt_tokens + totals.completion_tokens
        lines.append(
            f"{name[:32]:<32} {totals.requests:>9} {totals.errors:>7} {tokens:>12} "
            f"{money(totals.cost_usd):>14.6f}"
        )
    return lines


def to_text(report: Report, limit: int | None = None) -> str:
    """A readable summary: totals, then per model, key, agent and day."""
    total = report.total
    lines = [
        f"LLM Proxy cost report {report.period.start} to {report.period.end} (UTC days)",
        f"Total ${money(total.cost_usd):.6f} over {total.requests} requests "
        f"({total.errors} errors, {total.prompt_tokens + total.completion_tokens} tokens, "
        f"{total.cache_hits} cache hits)",
        "",
    ]
    for title, groups in (
        ("model", report.by_model),
        ("key", report.by_key),
        ("agent", report.by_agent),
        ("day", report.by_day),
    ):
        lines += [*_table(title, groups, limit), ""]
    if report.flagged:
        lines.append(f"Keys past {report.budget_share:.0%} of their budget:")
        lines += [
            f"  {flag.alias or flag.key_id}: ${money(flag.spend):.2f} of "
            f"${money(flag.max_budget):.2f} ({flag.share:.0%})"
            for flag in report.flagged
        ]
    else:
        lines.append(f"No key past {report.budget_share:.0%} of its budget.")
    return "\n".join(lines)
