"""Every budget that holds a request, in one admission: a key's windows and per-model budget,
its team's and user's budgets and limits, against the counters table on the moto server
(through boto3), including from many threads at once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import boto3
import pytest
from llm_proxy.access.budgets import BudgetRefused, key_budget, plan_for
from llm_proxy.access.principals import Team, User
from llm_proxy.errors import ProxyError
from llm_proxy.store.counters import CountersTable

from tests.support.records import virtual_key


def new_team(name: str, **fields: Any) -> Team:
    return Team(team_id=f"{name}-{time.time_ns()}", **fields)


def new_user(name: str, **fields: Any) -> User:
    return User(user_id=f"{name}-{time.time_ns()}", **fields)


def admit_all(counters: CountersTable, plans: list[Any], cost: float) -> list[str]:
    """Each plan admitted once, in order: "ok" or the refusal's code."""
    outcomes = []
    for key, plan in plans:
        try:
            counters.admit(key, 10, cost, plan=plan)
            outcomes.append("ok")
        except BudgetRefused as refused:
            outcomes.append(refused.error.code)
        except ProxyError as error:
            outcomes.append(error.code)
    return outcomes


def test_a_teams_budget_is_shared_by_all_its_keys(aws: dict[str, str]) -> None:
    counters = CountersTable(aws["CountersTable"])
    team = new_team("shared", max_budget=0.3)
    first, second = (virtual_key(team_id=team.team_id) for _ in range(2))
    plans = [(key, plan_for(key, team, None, "m")) for key in (first, second, first, second)]
    assert admit_all(counters, plans, 0.1) == ["ok", "ok", "ok", "budget_exceeded"]
    team_budget = plans[0][1].budgets[-1]
    assert team_budget.counter == f"team#{team.team_id}"
    assert counters.budget_spend(team_budget) == pytest.approx(0.3)
    # Each key keeps its own spend as well, for its info.
    assert counters.spend(first) == pytest.approx(0.2)
    assert counters.spend(second) == pytest.approx(0.1)


def test_the_refusal_names_the_budget_that_is_spent(aws: dict[str, str]) -> None:
    counters = CountersTable(aws["CountersTable"])
    team = new_team("named", max_budget=0.1, budget_duration="1h")
    key = virtual_key(team_id=team.team_id)
    counters.admit(key, 10, 0.1, plan=plan_for(key, team, None, "m"))
    with pytest.raises(BudgetRefused) as refused:
        counters.admit(key, 10, 0.05, plan=plan_for(key, team, None, "m"))
    error = refused.value.error
    assert (error.status, error.code) == (429, "budget_exceeded")
    assert f"Team '{team.team_id}'" in error.message
    assert "Current cost: 0.1, Max budget: 0.1" in error.message
    assert 0 < int(error.headers["Retry-After"]) <= 3600


def test_a_team_key_answers_to_its_teams_budget_and_counts_to_its_user(
    aws: dict[str, str],
) -> None:
    """LiteLLM's rule: a key with a team uses the team's budget instead of its user's; the
    user's spend counts it all the same. A developer's own key is held to the user's."""
    counters = CountersTable(aws["CountersTable"])
    team = new_team("t", max_budget=10)
    user = new_user("dev", max_budget=0.1)
    team_key = virtual_key(team_id=team.team_id, user_id=user.user_id)
    own_key = virtual_key(user_id=user.user_id)
    plan = plan_for(team_key, team, user, "m")
    counters.admit(team_key, 10, 0.1, plan=plan)
    counters.admit(team_key, 10, 0.1, plan=plan)
    user_budget = plan.budgets[-1]
    assert user_budget.limit is None and counters.budget_spend(user_budget) == pytest.approx(0.2)
    with pytest.raises(BudgetRefused) as refused:
        counters.admit(own_key, 10, 0.1, plan=plan_for(own_key, None, user, "m"))
    assert f"User '{user.user_id}'" in refused.value.error.message


def test_a_per_model_budget_refuses_only_its_model(aws: dict[str, str]) -> None:
    counters = CountersTable(aws["CountersTable"])
    key = virtual_key(model_max_budget={"dear": {"budget_limit": 0.2, "time_period": "1d"}})
    dear, cheap = plan_for(key, model="dear"), plan_for(key, model="cheap")
    plans = [(key, dear), (key, dear), (key, dear), (key, cheap), (key, cheap)]
    assert admit_all(counters, plans, 0.1) == ["ok", "ok", "budget_exceeded", "ok", "ok"]
    with pytest.raises(BudgetRefused) as refused:
        counters.admit(key, 10, 0.1, plan=dear)
    assert refused.value.budget.model == "dear"
    assert "this key's budget for model 'dear'" in refused.value.error.message
    # The key's spend counts every model.
    assert counters.spend(key) == pytest.approx(0.4)


def test_every_window_is_counted_and_any_spent_one_refuses(aws: dict[str, str]) -> None:
    counters = CountersTable(aws["CountersTable"])
    key = virtual_key(
        budget_limits=[
            {"budget_duration": "10s", "max_budget": 0.2},
            {"budget_duration": "30d", "max_budget": 0.4},
        ]
    )
    plan = plan_for(key, model="m")
    start = 1_000_000_000.0  # the start of a 10 s window
    for offset in (0, 1):
        counters.admit(key, 10, 0.1, now=start + offset, plan=plan)
    with pytest.raises(BudgetRefused) as refused:
        counters.admit(key, 10, 0.1, now=start + 2, plan=plan)
    assert refused.value.budget.duration == "10s"
    assert refused.value.error.headers["Retry-After"] == "8"
    # The short window resets; the long one has room for two more.
    counters.admit(key, 10, 0.1, now=start + 10, plan=plan)
    counters.admit(key, 10, 0.1, now=start + 11, plan=plan)
    with pytest.raises(BudgetRefused) as refused:
        counters.admit(key, 10, 0.1, now=start + 20, plan=plan)
    assert refused.value.budget.duration == "30d"


def test_a_waived_budget_is_counted_not_refused(aws: dict[str, str]) -> None:
    """A budget fallback past a spent budget: the fallback's cost still counts to it."""
    counters = CountersTable(aws["CountersTable"])
    key = virtual_key(max_budget=0.1)
    counters.admit(key, 10, 0.1)
    with pytest.raises(BudgetRefused):
        counters.admit(key, 10, 0.05)
    waived = plan_for(key, model="cheap", waived=frozenset({key_budget(key).counter}))
    reservation = counters.admit(key, 10, 0.05, plan=waived)
    assert counters.spend(key) == pytest.approx(0.15)
    counters.settle(reservation, 10, 0.01, {}, None)
    assert counters.spend(key) == pytest.approx(0.11)


def test_team_and_user_rate_limits_are_shared(aws: dict[str, str]) -> None:
    counters = CountersTable(aws["CountersTable"])
    team = new_team("rpm", rpm_limit=3)
    keys = [virtual_key(team_id=team.team_id) for _ in range(2)]
    plans = [(key, plan_for(key, team, None, "m")) for key in keys * 2]
    now = time.time()
    if now % 60 > 50:
        time.sleep(61 - now % 60)
    assert admit_all(counters, plans, 0.0) == ["ok", "ok", "ok", "rate_limit_exceeded"]


def test_one_admission_writes_every_counter_in_one_transaction(aws: dict[str, str]) -> None:
    """A key with a budget, two windows and a per-model budget, of a team and a user with
    budgets and rate limits: nine counters, one TransactWriteItems; and refused as a whole,
    none of them is left counting a request that was not admitted."""
    counters = CountersTable(aws["CountersTable"])
    team = new_team("all", max_budget=1, rpm_limit=100)
    user = new_user("all", max_budget=1, tpm_limit=10**6)
    key = virtual_key(
        team_id=team.team_id,
        user_id=user.user_id,
        max_budget=1,
        rpm_limit=100,
        budget_limits=[
            {"budget_duration": "1h", "max_budget": 1},
            {"budget_duration": "30d", "max_budget": 1},
        ],
        model_max_budget={"m": {"budget_limit": 0.25}},
    )
    plan = plan_for(key, team, None, "m")
    plan_with_user = plan_for(key, team, user, "m")
    assert len(plan_with_user.rates) + len(plan_with_user.budgets) == 9
    calls: list[str] = []
    client = counters.client()
    client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    try:
        reservation = counters.admit(key, 10, 0.25, plan=plan_with_user)
        with pytest.raises(BudgetRefused):
            counters.admit(key, 10, 0.25, plan=plan)
    finally:
        client.meta.events.unregister("before-call.dynamodb.*")
    assert calls == ["TransactWriteItems", "TransactWriteItems"]
    table = boto3.resource("dynamodb").Table(aws["CountersTable"])
    spends = {
        item: table.get_item(Key={"counter_id": item})["Item"]["spend"]
        for item in reservation.spend_items
    }
    assert set(spends.values()) == {Decimal("0.25")}


def test_a_teams_budget_holds_under_a_burst_of_its_keys(aws: dict[str, str]) -> None:
    """Many threads on several keys of one team: exactly what fits is admitted."""
    counters = CountersTable(aws["CountersTable"])
    team = new_team("burst", max_budget=0.5)
    keys = [virtual_key(team_id=team.team_id) for _ in range(4)]

    def one(index: int) -> str:
        key = keys[index % len(keys)]
        return admit_all(counters, [(key, plan_for(key, team, None, "m"))], 0.1)[0]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(20)))
    assert outcomes.count("ok") == 5
    assert outcomes.count("budget_exceeded") == 15
    team_budget = plan_for(keys[0], team, None, "m").budgets[-1]
    assert counters.budget_spend(team_budget) == pytest.approx(0.5)
