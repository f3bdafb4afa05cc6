"""The counters table: rate limits and budgets that hold across every container, changed only
by conditional atomic updates (never read-modify-write), in TTL'd windows.

An admission reserves its estimate in one round trip (the key's minute counter and its budget
together), and `settle` replaces the estimate by the real figures when the request is metered.
What a refusal says (`over_limit`, `budget_exceeded`) and what a reservation holds are the
domain's, in `access.limits`."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from llm_proxy.access.budgets import Budget, BudgetRefused, Plan, Rate, key_budget, plan_for
from llm_proxy.access.key_record import VirtualKey
from llm_proxy.access.limits import (
    MINUTE_S,
    Limits,
    Reservation,
    over_limit,
    parallel_item,
    parallel_limit_reached,
)
from llm_proxy.errors import COUNTERS_TABLE_MISSING, DEPENDENCY_UNAVAILABLE
from llm_proxy.logs import logger
from llm_proxy.store import parallel
from llm_proxy.store.base import Table
from llm_proxy.store.values import attribute, from_attribute, from_attributes

# Counters outlive their window a little, so a late settlement still finds its item.
TTL_GRACE_S = 3600


class CountersTable(Table):
    """The counters table: a key's and a deployment's minute counters (requests and tokens)
    and a key's spend in its budget window.

    Not configured: settling is skipped and a key's spend reads 0; admitting a key with
    limits (or a deployment with its own) requires the table (503 `counters_table_missing`)."""

    variable = "LLM_PROXY__COUNTERS_TABLE"
    missing = COUNTERS_TABLE_MISSING
    missing_message = "This key has limits but no counters table is configured ({variable})."

    # -- admission --------------------------------------------------------------------------

    def admit(
        self,
        key: VirtualKey | None,
        tokens: int,
        cost: float,
        now: float | None = None,
        *,
        plan: Plan | None = None,
    ) -> Reservation:
        """One round trip for every counter that holds the request (`access.budgets.plan_for`:
        the key's, its team's and its user's, each budget window): a transaction, refused as a
        whole by the first counter it does not fit (a BudgetRefused for a budget). A plan with
        counters requires the table; an empty one takes nothing."""
        now = time.time() if now is None else now
        plan = plan_for(key) if plan is None else plan
        reservation = Reservation(tokens=tokens)
        if plan.budgets:
            reservation.cost = Decimal(str(round(cost, 10)))
        updates: list[dict[str, Any]] = []
        holds: list[Rate | Budget | None] = []
        minute = int(now // MINUTE_S)
        for rate in plan.rates:
            item = rate.item(minute)
            updates.append(self._minute_update(item, rate.limits, tokens, now))
            holds.append(rate)
            if rate.limits.tpm:
                # Only a token limit needs the estimate replaced by the real count.
                reservation.minute_items.append(item)
        for budget in plan.budgets:
            item = budget.item(now)
            updates.append(budget_update(self.table_name, item, budget, reservation.cost, now))
            holds.append(budget)
            reservation.spend_items.append(item)
            if budget.is_key_budget:
                reservation.spend_item = item
                if budget.limit is not None:
                    reservation.budget = Decimal(str(float(budget.limit)))
                    reservation.budget_owner = key.key_alias or key.agent if key else None
        if key is not None and key.max_parallel_requests:
            reservation.parallel_item = parallel_item(key)
            reservation.parallel_slot = parallel.new_slot()
            updates.append(parallel.acquire_update(self.table_name, key, reservation, now))
            holds.append(None)
        if not updates:
            return reservation
        self.require()
        if not self._apply(updates, holds, key=key, now=now):
            # Slots past their lease were freed: the admission is tried once more.
            self._apply(updates, holds, key=key, now=now, prune=False)
        return reservation

    def admit_deployment(
        self, deployment_id: str, limits: Limits, tokens: int, now: float | None = None
    ) -> str:
        """The deployment's own rpm/tpm (shared by every key); returns the counter taken. Over
        its limit it raises litellm's RateLimitError, so the Router moves to another deployment
        (litellm is imported then only: this package never needs it to load). Requires the
        table."""
        self.require()
        now = time.time() if now is None else now
        item = f"deployment#{deployment_id}#minute#{int(now // MINUTE_S)}"
        update = self._minute_update(item, limits, tokens, now)
        try:
            self.client().update_item(**update)
        except Exception as exc:
            old = _old_item(exc)
            if old is None:
                raise DEPENDENCY_UNAVAILABLE(
                    f"The counters table cannot be updated ({type(exc).__name__})."
                ) from None
            from litellm.exceptions import RateLimitError

            error = over_limit(f"Deployment '{deployment_id}'", limits, old, now)
            refused = RateLimitError(
                message=error.message, llm_provider="llm-proxy", model=deployment_id
            )
            # Where litellm keeps a provider's own headers; the client gets them on the 429.
            refused.litellm_response_headers = error.headers  # type: ignore[attr-defined]
            raise refused from None
        return item

    def _minute_update(self, item: str, limits: Limits, tokens: int, now: float) -> dict[str, Any]:
        conditions, values = (
            [],
            {
                ":one": attribute(1),
                ":zero": attribute(0),
                ":tokens": attribute(tokens),
                ":expires": attribute(int(now // MINUTE_S + 1) * MINUTE_S + TTL_GRACE_S),
            },
        )
        if limits.rpm:
            conditions.append("(attribute_not_exists(n) OR n < :rpm)")
            values[":rpm"] = attribute(limits.rpm)
        if limits.tpm:
            # The estimate must fit in what is left; a request larger than the whole limit is
            # admitted only into an empty window.
            conditions.append("(attribute_not_exists(tokens) OR tokens <= :room)")
            values[":room"] = attribute(max(limits.tpm - tokens, 0))
        return {
            "TableName": self.table_name,
            "Key": {"counter_id": attribute(item)},
            "UpdateExpression": (
                "SET n = if_not_exists(n, :zero) + :one, "
                "tokens = if_not_exists(tokens, :zero) + :tokens, expires_at = :expires"
            ),
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _apply(
        self,
        updates: list[dict[str, Any]],
        holds: list[Rate | Budget | None],
        *,
        key: VirtualKey | None,
        now: float,
        prune: bool = True,
    ) -> bool:
        """True when admitted; False when only the parallel limit refused it and slots past
        their lease were freed (worth one more try); else the refusal."""
        client = self.client()
        try:
            if len(updates) == 1:
                client.update_item(**updates[0])
            else:
                client.transact_write_items(TransactItems=[{"Update": u} for u in updates])
            return True
        except Exception as exc:
            failed = _failed_updates(exc, updates)
            if failed is None:
                raise DEPENDENCY_UNAVAILABLE(
                    f"The counters table cannot be updated ({type(exc).__name__})."
                ) from None
        # The parallel limit last: pruning old slots cannot help a rate limit or a budget.
        failed.sort(key=lambda entry: holds[entry[0]] is None)
        for index, old in failed:
            hold = holds[index]
            if isinstance(hold, Rate):
                raise over_limit(hold.owner, hold.limits, old, now)
            if isinstance(hold, Budget):
                spent = float(old.get("spend", 0))
                cost = float(update_cost(updates[index]))
                if hold.limit is not None and spent < hold.limit:
                    raise BudgetRefused(hold, hold.would_overspend(spent, cost, now))
                raise BudgetRefused(hold, hold.exceeded(spent, now))
            assert key is not None
            counter = updates[index]["Key"]["counter_id"]["S"]
            if prune and parallel.prune(self.client(), self.table_name, counter, old, now):
                return False
            raise parallel_limit_reached(key)
        raise DEPENDENCY_UNAVAILABLE("The counters table refused the update.")

    def release(self, reservation: Reservation) -> None:
        """The request's parallel slot, given back. Skipped without a table; a failure is
        logged, and the slot frees when its lease ends."""
        if not self.enabled or reservation.parallel_item is None:
            return
        try:
            self.client().update_item(**parallel.release_update(self.table_name, reservation))
        except Exception as exc:
            logger.warning(
                "parallel slot not released",
                extra={"counter": reservation.parallel_item, "error": type(exc).__name__},
            )

    # -- settlement and reading ---------------------------------------------------------------

    def settle(
        self,
        reservation: Reservation,
        tokens: int,
        cost: float,
        deployment_items: dict[str, str],
        answered_by: str | None,
    ) -> Decimal | None:
        """Replace the admission's estimates by what the request really used: the deployment
        that answered keeps its real tokens, the ones that failed hand their estimate back.
        Returns the key's spend once its budget counter is settled (None when it was not).
        The request's parallel slot is released. Skipped without a table."""
        if not self.enabled:
            return None
        # The request is over: its parallel slot first, whatever the rest does.
        self.release(reservation)
        tokens_delta = tokens - reservation.tokens
        changes: list[tuple[str, str, Any]] = [
            (item, "tokens", tokens_delta) for item in reservation.minute_items if tokens_delta
        ]
        for deployment_id, item in deployment_items.items():
            delta = tokens_delta if deployment_id == answered_by else -reservation.tokens
            if delta:
                changes.append((item, "tokens", delta))
        cost_delta = Decimal(str(round(cost, 10))) - reservation.cost
        # The key's own spend apart from the rest: a transaction cannot return the new spend.
        spend: tuple[str, str, Any] | None = None
        if cost_delta:
            for item in reservation.spend_items:
                if item == reservation.spend_item:
                    spend = (item, "spend", cost_delta)
                else:
                    changes.append((item, "spend", cost_delta))
        updates = [_settle_update(self.table_name, *change) for change in changes]
        try:
            # One round trip, however many token counters the request touched.
            if len(updates) == 1:
                self.client().update_item(**updates[0])
            elif updates:
                self.client().transact_write_items(TransactItems=[{"Update": u} for u in updates])
            if spend is not None:
                update = _settle_update(self.table_name, *spend)
                answer = self.client().update_item(**update, ReturnValues="UPDATED_NEW")
                return Decimal(from_attribute(answer["Attributes"]["spend"]))
        except Exception as exc:
            unsettled = [item for item, _, _ in changes] + ([spend[0]] if spend else [])
            logger.warning(
                "counters not settled", extra={"counters": unsettled, "error": type(exc).__name__}
            )
        return None

    def spend(self, key: VirtualKey, now: float | None = None) -> float:
        """The key's spend in its current budget window (all time without a window); 0 without
        a table."""
        return self.budget_spend(key_budget(key), now)

    def budget_spend(self, budget: Budget, now: float | None = None) -> float:
        """A budget's spend in its current window (all time without a window); 0 without a
        table."""
        if not self.enabled:
            return 0.0
        now = time.time() if now is None else now
        item = self.client().get_item(
            TableName=self.table_name, Key={"counter_id": attribute(budget.item(now))}
        )
        spent = item.get("Item", {}).get("spend")
        return float(from_attribute(spent)) if spent else 0.0


def budget_update(
    table_name: str | None, item: str, budget: Budget, cost: Decimal, now: float
) -> dict[str, Any]:
    values = {":zero": attribute(0), ":cost": attribute(cost)}
    expression = "SET spend = if_not_exists(spend, :zero) + :cost"
    ends = budget.expires(now)
    if ends is not None:
        values[":expires"] = attribute(ends + TTL_GRACE_S)
        expression += ", expires_at = :expires"
    update: dict[str, Any] = {
        "TableName": table_name,
        "Key": {"counter_id": attribute(item)},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": values,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if budget.limit is not None:
        # Through float: a stored budget may be an integer too long for a DynamoDB number.
        limit = Decimal(str(float(budget.limit)))
        values[":budget"], values[":room"] = attribute(limit), attribute(limit - cost)
        update["ConditionExpression"] = (
            "attribute_not_exists(spend) OR (spend < :budget AND spend <= :room)"
        )
    return update


def _settle_update(table_name: str | None, item: str, counter: str, delta: Any) -> dict[str, Any]:
    return {
        "TableName": table_name,
        "Key": {"counter_id": attribute(item)},
        "UpdateExpression": f"ADD {counter} :delta",
        # A counter gone with its window is not brought back without its TTL.
        "ConditionExpression": "attribute_exists(counter_id)",
        "ExpressionAttributeValues": {":delta": attribute(delta)},
    }


def update_cost(update: dict[str, Any]) -> Any:
    """The cost a budget update reserves."""
    return from_attribute(update["ExpressionAttributeValues"][":cost"])


def _old_item(exc: Exception) -> dict[str, Any] | None:
    """The counter as it stood when a single update's condition failed; None for any other
    failure (the table unreachable)."""
    response = getattr(exc, "response", None) or {}
    if response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
        return None
    return from_attributes(response.get("Item"))


def _failed_updates(
    exc: Exception, updates: list[dict[str, Any]]
) -> list[tuple[int, dict[str, Any]]] | None:
    """The updates whose condition failed, by index, each with the item as it stood."""
    if len(updates) == 1:
        old = _old_item(exc)
        return None if old is None else [(0, old)]
    response = getattr(exc, "response", None) or {}
    reasons = response.get("CancellationReasons") or []
    failed = [
        (index, from_attributes(reason.get("Item")))
        for index, reason in enumerate(reasons[: len(updates)])
        if reason.get("Code") == "ConditionalCheckFailed"
    ]
    return failed or None
