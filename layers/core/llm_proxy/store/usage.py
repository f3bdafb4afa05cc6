"""The usage table: one item per request, success or failure, with its daily rollup in the
same transaction; never lost: retried, then dead-lettered to SQS for a replay. A record
DynamoDB refuses as invalid is repaired (its strings cut to their bounds) and written, or
quarantined with the reason when even that is refused."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from llm_proxy.accounting import metrics
from llm_proxy.accounting.dead_letters import REASON_BYTES, DeadLetters, Quarantine
from llm_proxy.accounting.rollups import RollupKey, cut, key_of
from llm_proxy.accounting.usage import TRUNCATED, UsageRecord, bounded, emit_metrics
from llm_proxy.accounting.write_errors import (
    error_name,
    invalid_reason,
    is_duplicate,
    retryable,
)
from llm_proxy.errors import USAGE_TABLE_MISSING
from llm_proxy.logs import logger
from llm_proxy.store.base import Table
from llm_proxy.store.rollups import RollupsTable
from llm_proxy.store.values import attribute


class Outcome(Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"
    # Refused for now (DynamoDB down, throttled, missing): a later replay may write it.
    FAILED = "failed"
    # Refused as it is (ValidationException): no retry or replay can write it.
    INVALID = "invalid"


@dataclass(frozen=True)
class Stored:
    outcome: Outcome
    # Why DynamoDB refused an INVALID item.
    reason: str = ""


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff, bounded in attempts and in total time, because in
    Lambda the response waits for the write."""

    attempts: int = 4
    base_s: float = 0.05
    cap_s: float = 0.4
    deadline_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))  # noqa: S311


def _invalid(reason: str) -> Stored:
    # Bounded: an error can quote the value it refused.
    return Stored(Outcome.INVALID, cut(reason, REASON_BYTES))


class UsageTable(Table):
    """One usage item per request, its rollup added in the same transaction. What DynamoDB
    refuses after the retries goes to the dead-letter queue; what it refuses as invalid is
    repaired, or else quarantined with the reason.

    Not configured: a request's usage is not written (`write` returns False, its metrics are
    still emitted) and readiness probes nothing; storing an item (the replay) requires the
    table. Without a rollups table an item adds to no rollup."""

    variable = "LLM_PROXY__USAGE_TABLE"
    missing = USAGE_TABLE_MISSING
    missing_message = "No usage table is configured ({variable})."

    def __init__(
        self,
        table_name: str | None,
        retention_days: int,
        *,
        rollups_table: str | None = None,
        dead_letter_queue: str | None = None,
        quarantine_queue: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(table_name)
        self.retention_days = retention_days
        self.rollups = RollupsTable(rollups_table)
        self.dead_letters = DeadLetters(dead_letter_queue) if dead_letter_queue else None
        self.quarantine_queue = Quarantine(quarantine_queue) if quarantine_queue else None
        self.backoff = backoff or Backoff()

    def write(self, record: UsageRecord) -> bool:
        """Meter one request; a failure is logged and never fails the response."""
        emit_metrics(record)
        if not self.enabled:
            return False
        return self._keep(record, self._item(record))

    def write_many(self, records: Sequence[UsageRecord]) -> None:
        """Meter several requests with one transaction (their items, and one update per
        rollup); where DynamoDB refuses it as a whole (a duplicate, an invalid item, an
        outage), each is written on its own as `write` writes it. A long-running server's
        batch: `store.usage_batch`."""
        for record in records:
            emit_metrics(record)
        if not self.enabled:
            return
        items = [self._item(record) for record in records]
        if len(items) > 1 and self._store_together(items):
            return
        for record, item in zip(records, items, strict=True):
            self._keep(record, item)

    def _item(self, record: UsageRecord) -> dict[str, Any]:
        item = record.to_item(self.retention_days)
        if TRUNCATED in item:
            logger.warning(
                "usage item fields cut to their bounds",
                extra={"request_id": record.request_id, "fields": item[TRUNCATED]},
            )
        return item

    def _keep(self, record: UsageRecord, item: dict[str, Any]) -> bool:
        """Store the item; else quarantine or dead-letter it; False when it is not stored."""
        stored = self.store(item)
        if stored.outcome in (Outcome.WRITTEN, Outcome.DUPLICATE):
            return True
        if stored.outcome is Outcome.INVALID and self.quarantine(stored.reason, item=item):
            return False
        # Without a quarantine queue an invalid item waits in the dead-letter queue too: the
        # replay, or the queue's redrive policy, moves it on.
        if self.dead_letters is not None and self.dead_letters.send(item):
            logger.warning("usage item dead-lettered", extra={"request_id": record.request_id})
            metrics.emit({"UsageDeadLettered": (MetricUnit.Count, 1)})
        else:
            # The last copy: the log line can still be replayed by hand.
            logger.error("usage item lost to DynamoDB and SQS", extra={"usage_item": item})
        return False

    def _store_together(self, items: Sequence[Mapping[str, Any]]) -> bool:
        """All the items and their rollups in one transaction, once; False when refused."""
        try:
            actions = [{"Put": self._put(item)} for item in items]
            if self.rollups.enabled:
                actions += [{"Update": update} for update in self.rollups.add_updates(items)]
        except (KeyError, TypeError, ValueError, ArithmeticError):
            return False
        try:
            self.client(max_attempts=1).transact_write_items(TransactItems=actions)
        except Exception as exc:
            logger.info(
                "usage batch refused", extra={"error": error_name(exc), "items": len(items)}
            )
            return False
        # Each rollup's maximum is raised once, by its slowest item.
        slowest: dict[RollupKey, Mapping[str, Any]] = {}
        for item in items:
            key = key_of(item)
            if key not in slowest or item.get("latency_ms", 0) > slowest[key].get("latency_ms", 0):
                slowest[key] = item
        for item in slowest.values():
            self._raise_latency_max(item)
        return True

    def store(self, item: Mapping[str, Any]) -> Stored:
        """Write the item and its rollup once, retrying with backoff. Idempotent by request id:
        an item already stored is a DUPLICATE and its rollup is not added again. An item
        refused as invalid is written again with its strings cut to their bounds. Requires the
        table."""
        self.require()
        first = self._store_once(item)
        if first.outcome is not Outcome.INVALID:
            return first
        repaired = bounded(item)
        fields = tuple(n for n, v in item.items() if n != TRUNCATED and repaired[n] != v)
        if not fields:
            return first
        second = self._store_once(repaired)
        if second.outcome is Outcome.INVALID:
            reason = f"{first.reason}; after cutting {', '.join(fields)}: {second.reason}"
            return _invalid(reason)
        if second.outcome is not Outcome.FAILED:
            logger.warning(
                "usage item repaired",
                extra={
                    "request_id": item.get("request_id"),
                    "fields": fields,
                    "reason": first.reason,
                },
            )
            metrics.emit({"UsageRepaired": (MetricUnit.Count, 1)})
        return second

    def quarantine(
        self, reason: str, *, item: Mapping[str, Any] | None = None, body: str | None = None
    ) -> bool:
        """Park a record that can never be written as it is (or, with no `item`, a message
        `body` that is no record) in the quarantine queue, with the reason; False when there is
        no quarantine queue or SQS refuses."""
        if self.quarantine_queue is None or not self.quarantine_queue.send(
            reason, item=item, body=body
        ):
            return False
        request_id = item.get("request_id") if item is not None else None
        logger.error("usage record quarantined", extra={"request_id": request_id, "reason": reason})
        metrics.emit({"UsageQuarantined": (MetricUnit.Count, 1)})
        return True

    def _store_once(self, item: Mapping[str, Any]) -> Stored:
        try:
            transaction = self._transaction(item)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            # Not a usage item's shape (a missing day, a number that is not one).
            return _invalid(f"malformed usage item: {type(exc).__name__}: {exc}")
        started = time.monotonic()
        for attempt in range(self.backoff.attempts):
            try:
                self.client(max_attempts=1).transact_write_items(TransactItems=transaction)
            except Exception as exc:
                if is_duplicate(exc):
                    return Stored(Outcome.DUPLICATE)
                reason = invalid_reason(exc)
                if reason is not None:
                    return _invalid(reason)
                delay = self.backoff.delay(attempt)
                last = attempt + 1 == self.backoff.attempts
                if (
                    not retryable(exc)
                    or last
                    or (time.monotonic() - started + delay > self.backoff.deadline_s)
                ):
                    logger.error(
                        "usage write failed",
                        extra={
                            "request_id": item.get("request_id"),
                            "error": error_name(exc),
                            "attempts": attempt + 1,
                        },
                    )
                    return Stored(Outcome.FAILED)
                time.sleep(delay)
                continue
            self._raise_latency_max(item)
            return Stored(Outcome.WRITTEN)
        return Stored(Outcome.FAILED)

    def _transaction(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        actions: list[dict[str, Any]] = [{"Put": self._put(item)}]
        if self.rollups.enabled:
            actions.append({"Update": self.rollups.add_update(item)})
        return actions

    def _put(self, item: Mapping[str, Any]) -> dict[str, Any]:
        if "request_id" not in item:
            raise KeyError("request_id")
        return {
            "TableName": self.table_name,
            "Item": {name: attribute(value) for name, value in item.items()},
            # Idempotent by request id: a replayed item is not counted twice.
            "ConditionExpression": "attribute_not_exists(request_id)",
        }

    def _raise_latency_max(self, item: Mapping[str, Any]) -> None:
        try:
            self.rollups.raise_latency_max(item)
        except Exception as exc:
            # The counters are in; only the day's maximum may read low.
            logger.warning("rollup latency max not raised", extra={"error": error_name(exc)})

    def ping(self) -> None:
        """Whether the table answers (DescribeTable); nothing to probe without a table."""
        if self.enabled:
            self.client().describe_table(TableName=self.table_name)
