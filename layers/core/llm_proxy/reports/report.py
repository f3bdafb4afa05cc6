"""The cost report, built from daily rollups only (never the usage table): totals per day,
model, key, agent, team and user, and the keys past a share of their budget.

The reports package must stay free of litellm and FastAPI: the cost-report function ships
without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from llm_proxy.access.key_record import VirtualKey
from llm_proxy.accounting.rollups import Rollup, RollupKey
from llm_proxy.accounting.totals import Totals, money
from llm_proxy.reports.period import Period, parse_period, yesterday
from llm_proxy.settings import DEFAULT_BUDGET_ALERT_SHARE, SharedSettings
from llm_proxy.store.keys import KeysTable
from llm_proxy.store.rollups import RollupsTable


@dataclass(frozen=True)
class Budget:
    key_id: str
    max_budget: Decimal
    alias: str | None = None


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
    by_team: dict[str, Totals]
    by_user: dict[str, Totals]
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
            "by_team": grouped(self.by_team),
            "by_user": grouped(self.by_user),
            "budget_alert_share": self.budget_share,
            "keys_over_budget_share": [flag.as_dict() for flag in self.flagged],
        }


def _by(rows: Iterable[Rollup], attribute: str) -> dict[str, Totals]:
    groups: dict[str, Totals] = {}
    for row in rows:
        groups.setdefault(getattr(row, attribute), Totals()).add(row)
    # Most expensive first: what a reader looks for.
    return dict(sorted(groups.items(), key=lambda pair: (-pair[1].cost_usd, pair[0])))


def merged(rows: Iterable[Rollup]) -> list[Rollup]:
    """One row per day and labels: an item written before rollups named the team and the user
    (sort key `model#key_id#agent`) and one written since for the same labels are one row."""
    by_key: dict[RollupKey, Rollup] = {}
    for row in rows:
        if row.key in by_key:
            by_key[row.key].add(row)
        else:
            by_key[row.key] = replace(row)
    return list(by_key.values())


def build(
    period: Period,
    rows: list[Rollup],
    budgets: Mapping[str, Budget] | None = None,
    budget_share: float = DEFAULT_BUDGET_ALERT_SHARE,
    now: datetime | None = None,
) -> Report:
    rows = merged(rows)
    total = Totals()
    by_day = {day: Totals() for day in period.days()}
    for row in rows:
        total.add(row)
        by_day.setdefault(row.day, Totals()).add(row)
    by_key = _by(rows, "key_id")
    flagged = []
    for key_id, budget in (budgets or {}).items():
        spend = by_key.get(key_id, Totals()).cost_usd
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
        by_team=_by(rows, "team_id"),
        by_user=_by(rows, "user_id"),
        rows=sorted(rows, key=lambda row: astuple(row.key)),
        budget_share=budget_share,
        flagged=flagged,
    )


def read_budgets(keys_table: str | None, key_ids: Iterable[str]) -> dict[str, Budget]:
    """Budgets of these keys from the virtual keys table (the usage items' `key_id` is the
    key's `token`); none when no keys table is configured."""
    budgets: dict[str, Budget] = {}
    for item in KeysTable(keys_table).get_many(key_ids):
        key = VirtualKey.from_item(item)
        if key.max_budget is not None:
            budgets[key.token] = Budget(key.token, Decimal(str(key.max_budget)), key.key_alias)
    return budgets


def report_for(period: Period, settings: SharedSettings, now: datetime | None = None) -> Report:
    """Read the period's rollups (one Query a day) and the keys' budgets; build the report. No
    rollups table is a DomainError (rollups_not_configured): there are no rollups to read."""
    rows = RollupsTable(settings.rollups_table).between(period.start, period.end)
    budgets = read_budgets(settings.keys_table, (row.key_id for row in rows))
    return build(period, rows, budgets, settings.budget_alert_share, now)


def spend(start: str | None, end: str | None, settings: SharedSettings) -> Report:
    """GET /spend/report (master key): the rollups' view of a period, yesterday by default."""
    # Without a rollups table there is no report to give: a 503 before the period is read.
    RollupsTable(settings.rollups_table).require()
    return report_for(parse_period(start, end, yesterday()), settings)
