"""Every budget and rate limit that holds a request, whoever set it: its key's (`max_budget`,
each `budget_limits` window, its `model_max_budget` for the model asked for, rpm and tpm), its
team's and its user's. Each is one counter in the counters table; an admission takes them all
in one transaction (`store.counters.CountersTable.admit`).

As in LiteLLM, a key of a team is held to its team's budget instead of its user's; the user's
spend still counts it. A team or user without a budget is still counted (its `spend`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llm_proxy.access.key_record import duration_s
from llm_proxy.access.limits import Limits, window_end
from llm_proxy.access.principals import Principal
from llm_proxy.errors import BUDGET_EXCEEDED, REQUEST_EXCEEDS_LIMIT, ProxyError

if TYPE_CHECKING:
    from llm_proxy.access.key_record import VirtualKey
    from llm_proxy.access.principals import Team, User


MAX_STORED_LIMIT = 10**15


@dataclass(frozen=True)
class Budget:
    """One spend counter: what it is for, its limit (None: counted, never refused) and window."""

    counter: str
    # How a refusal names it: "This key", "Team 'x'", "This key's budget for model 'm'".
    owner: str
    limit: float | None
    duration: str | None = None
    # The model group it is for (a key's model_max_budget); None: every model.
    model: str | None = None
    # The key's own max_budget: the one LiteLLM's words and the budget metric are about.
    is_key_budget: bool = False

    @property
    def window_s(self) -> int | None:
        return duration_s(self.duration, "budget_duration") if self.duration else None

    def item(self, now: float) -> str:
        window = self.window_s
        start = int(now // window) * window if window else "all"
        return f"{self.counter}#spend#{start}"

    def expires(self, now: float) -> int | None:
        window = self.window_s
        return window_end(now, window) if window else None

    def waived(self) -> Budget:
        """The same counter, counted but not refused (a budget fallback past a spent budget)."""
        return replace(self, limit=None)

    def exceeded(self, spent: float, now: float) -> ProxyError:
        """LiteLLM's words, which its users' alerting matches ("Budget has been exceeded!
        Current cost: X, Max budget: Y"), and when a windowed budget resets."""
        budget = float(self.limit or 0)
        subject = "" if self.is_key_budget else f" {self.owner}"
        message = (
            f"Budget has been exceeded!{subject} Current cost: {float(spent)}, Max budget: {budget}"
        )
        headers: dict[str, str] = {}
        window = self.window_s
        if window:
            reset_s = max(1, math.ceil(window_end(now, window) - now))
            headers["Retry-After"] = str(reset_s)
            whose = "this key's" if self.is_key_budget else f"{self.owner}'s"
            message += f" ({whose} {self.duration} budget resets in {reset_s} s)"
        return BUDGET_EXCEEDED(message, headers=headers)

    def would_overspend(self, spent: float, cost: float, now: float) -> ProxyError:
        """Under budget, but this request's worst case does not fit what is left: the request
        is reserved before the call, so it is refused rather than let overspend. A windowed
        budget is a 429 with Retry-After (waiting for the window serves it: an agent retries);
        one for ever is a 400 (only a smaller request fits)."""
        left = max(float(self.limit or 0) - spent, 0.0)
        whose = "this key's" if self.is_key_budget else f"the {self.owner}"
        message = (
            f"This request may cost up to ${cost:.6f}, more than the ${left:.6f} left of {whose} "
            f"budget (current cost: {spent}, max budget: {self.limit})"
        )
        window = self.window_s
        if not window:
            return REQUEST_EXCEEDS_LIMIT(f"{message}: lower max_tokens (or n).", param="max_tokens")
        reset_s = max(1, math.ceil(window_end(now, window) - now))
        return BUDGET_EXCEEDED(
            f"{message}; the {self.duration} budget resets in {reset_s} s (or lower max_tokens).",
            headers={"Retry-After": str(reset_s)},
        )


@dataclass(frozen=True)
class Rate:
    """One minute counter (rpm, tpm) shared by all of its owner's requests."""

    counter: str
    owner: str
    limits: Limits

    def item(self, minute: int) -> str:
        return f"{self.counter}#minute#{minute}"


@dataclass
class Plan:
    """What an admission takes: every rate and budget counter that holds the request."""

    rates: list[Rate] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)

    @property
    def counts_cost(self) -> bool:
        return bool(self.budgets)

    @property
    def counts_tokens(self) -> bool:
        return any(rate.limits.tpm for rate in self.rates)


def key_counter(token: str) -> str:
    return f"key#{token}"


def key_budget(key: VirtualKey) -> Budget:
    """The key's own budget (`max_budget` per `budget_duration`), counted even without one."""
    return Budget(
        key_counter(key.token), "This key", key.max_budget, key.budget_duration, None, True
    )


def window_budgets(key: VirtualKey) -> list[Budget]:
    """The key's `budget_limits`, one budget each, in their order."""
    budgets = []
    for window in key.budget_limits:
        duration = str(window.get("budget_duration"))
        budgets.append(
            Budget(
                f"{key_counter(key.token)}#window#{duration_s(duration, 'budget_duration')}",
                f"this key's {duration} budget",
                _amount(window.get("max_budget")),
                duration,
            )
        )
    return budgets


def model_budget(key: VirtualKey, model: str) -> Budget:
    """The key's `model_max_budget` for `model` (a group it has one for)."""
    per_model = key.model_max_budget[model]
    return Budget(
        f"{key_counter(key.token)}#model#{model}",
        f"this key's budget for model '{model}'",
        _amount(per_model.get("budget_limit", per_model.get("max_budget"))),
        per_model.get("time_period") or per_model.get("budget_duration"),
        model,
    )


class BudgetRefused(Exception):
    """A budget refused the admission: which one, and the error its caller gets (unless a
    budget fallback serves the request instead)."""

    def __init__(self, budget: Budget, error: ProxyError) -> None:
        super().__init__(error.message)
        self.budget = budget
        self.error = error


def plan_for(
    key: VirtualKey | None,
    team: Team | None = None,
    user: User | None = None,
    model: str = "",
    waived: frozenset[str] = frozenset(),
) -> Plan:
    """The counters that hold a request for `model` of this key (None: a JWT's developer),
    team and user; the budgets in `waived` (counter ids) are counted but not refused."""
    plan = Plan()
    owners: list[Principal] = [owner for owner in (team, user) if owner is not None]
    if key is not None:
        counter = key_counter(key.token)
        limits = Limits(_bounded(key.rpm_limit), _bounded(key.tpm_limit))
        if limits.rpm or limits.tpm:
            plan.rates.append(Rate(counter, "This key", limits))
        if key.max_budget is not None or key.budget_limits or key.model_max_budget or owners:
            # A key with any budget, or of a team or user, keeps its own spend too (its info).
            plan.budgets.append(key_budget(key))
        plan.budgets.extend(window_budgets(key))
        if model in key.model_max_budget:
            plan.budgets.append(model_budget(key, model))
    for owner in owners:
        limits = Limits(_bounded(owner.rpm_limit), _bounded(owner.tpm_limit))
        if limits.rpm or limits.tpm:
            plan.rates.append(Rate(owner.counter, owner.label, limits))
        # A key of a team answers to its team's budget, not its user's (LiteLLM's rule); the
        # user's spend counts it all the same.
        held = not (owner is user and key is not None and team is not None)
        limit = owner.max_budget if held else None
        plan.budgets.append(Budget(owner.counter, owner.label, limit, owner.budget_duration))
    plan.budgets = [
        budget.waived() if budget.counter in waived else budget for budget in plan.budgets
    ]
    return plan


def _amount(value: Any) -> float | None:
    return None if value is None else float(value)


def _bounded(limit: int | None) -> int | None:
    """A stored limit, capped where it is longer than a DynamoDB number holds (keys made
    before limits were bounded)."""
    return None if limit is None else min(int(limit), MAX_STORED_LIMIT)
