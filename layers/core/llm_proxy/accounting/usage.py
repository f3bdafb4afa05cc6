"""Usage records and their store: one item per request, success or failure, in the usage
table, with its daily rollup; never lost: retried, then dead-lettered to SQS for a replay.
A record DynamoDB refuses as invalid is repaired (its strings cut to their bounds) and
written, or quarantined with the reason when even that is refused."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from llm_proxy import aws
from llm_proxy.accounting import metrics
from llm_proxy.accounting.dead_letters import REASON_BYTES, DeadLetters, Quarantine
from llm_proxy.accounting.rollups import LABEL_BYTES, Rollups, add_update, cut
from llm_proxy.accounting.write_errors import (
    error_name,
    invalid_reason,
    is_duplicate,
    retryable,
)
from llm_proxy.logs import logger
from llm_proxy.store.values import attribute, number

SECONDS_PER_DAY = 86_400
# Bounds on a usage item's strings, in UTF-8 bytes. Callers choose the agent and the model they
# ask for, so without a bound a request could make its item too large to store (400 KB) or its
# rollup key too long (1,024 bytes), or simply costly to write. The rollup's labels share the
# rollup key's bound; any other string gets FIELD_BYTES.
FIELD_BYTES = 1024
LABEL_FIELDS = frozenset({"agent", "model_requested", "model_group", "key_id"})
# What identifies the item is never cut: a cut request id could meet another request's.
IDENTITY_FIELDS = frozenset({"request_id", "day"})
# Lists the names of the fields that were cut.
TRUNCATED = "truncated"


@dataclass
class UsageRecord:
    request_id: str
    endpoint: str
    key_id: str | None = None
    agent: str | None = None
    model_requested: str | None = None
    model_group: str | None = None
    deployment_id: str | None = None
    deployment_model: str | None = None
    provider: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of the prompt tokens: those read from and written to the provider's prompt cache.
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    # The part of the latency spent in the provider call (litellm and the provider), from
    # routing to the answer or the stream's end; the rest is the gateway's own.
    upstream_ms: float | None = None
    status: int = 200
    error_type: str | None = None
    error_code: str | None = None
    cache_hit: bool = False
    # Tokens counted by the gateway because the provider reported none (some streams).
    usage_estimated: bool = False
    retries: int = 0
    fallbacks: int = 0
    started_at: float = field(default_factory=time.time)

    def fail(self, status: int, error_type: str, code: str | None) -> None:
        self.status, self.error_type, self.error_code = status, error_type, code

    def to_item(self, retention_days: int) -> dict[str, Any]:
        started = datetime.fromtimestamp(self.started_at, tz=UTC)
        item: dict[str, Any] = {
            key: number(value, digits=12)
            for key, value in asdict(self).items()
            if value is not None and key != "started_at"
        }
        item["total_tokens"] = self.prompt_tokens + self.completion_tokens
        item["timestamp"] = started.isoformat(timespec="milliseconds")
        item["day"] = started.strftime("%Y-%m-%d")
        item["expires_at"] = int(self.started_at) + retention_days * SECONDS_PER_DAY
        return bounded(item)


def bounded(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item with every string but its identity cut to its bound (`rollups.cut`: the start
    of the value, marked with its size and digest), and the cut fields' names in `truncated`."""
    result: dict[str, Any] = {}
    was_cut: list[str] = []
    for name, value in item.items():
        if isinstance(value, str) and name not in IDENTITY_FIELDS:
            short = cut(value, LABEL_BYTES if name in LABEL_FIELDS else FIELD_BYTES)
            if short != value:
                was_cut.append(name)
            value = short
        result[name] = value
    if was_cut:
        earlier = item.get(TRUNCATED)
        earlier_names = [str(n) for n in earlier] if isinstance(earlier, list) else []
        result[TRUNCATED] = sorted({*earlier_names, *was_cut})
    return result


def emit_metrics(record: UsageRecord) -> None:
    """A request's metrics: per model group, agent and status class, and in total; its error's
    type and code; the provider's share of the latency and the gateway's own."""
    # The group that answered: a bounded set. A request refused before routing names no group,
    # so a caller cannot mint a metric per model name it makes up.
    model = {"model": record.model_group or "unrouted"}
    status_class = f"{record.status // 100}xx"
    failed = record.status >= 400
    metrics.emit(
        {
            "Requests": (MetricUnit.Count, 1),
            "Errors": (MetricUnit.Count, 1 if failed else 0),
            "PromptTokens": (MetricUnit.Count, record.prompt_tokens),
            "CompletionTokens": (MetricUnit.Count, record.completion_tokens),
            "CostUSD": (MetricUnit.NoUnit, record.cost_usd),
            "Latency": (MetricUnit.Milliseconds, record.latency_ms),
        },
        model,
        {},
        {"agent": record.agent or metrics.NONE},
        {"status_class": status_class},
    )
    # What a provider caused: its error or timeout, or its own rate limit (the router's
    # cooldown follows from those).
    provider_failed = record.error_type in ("upstream_error", "timeout_error") or (
        record.error_code in ("provider_rate_limited", "all_deployments_cooling_down")
    )
    # Counted 0 or 1 per request, so a period's Average is a rate.
    detail: dict[str, tuple[MetricUnit, float]] = {
        "ProviderErrors": (MetricUnit.Count, 1 if provider_failed else 0),
        "CacheHits": (MetricUnit.Count, 1 if record.cache_hit else 0),
    }
    if record.upstream_ms is not None:
        detail["UpstreamLatency"] = (MetricUnit.Milliseconds, record.upstream_ms)
        gateway_ms = max(record.latency_ms - record.upstream_ms, 0.0)
        detail["GatewayLatency"] = (MetricUnit.Milliseconds, gateway_ms)
    metrics.emit(detail, model, {})
    if failed:
        metrics.emit(
            {"Errors": (MetricUnit.Count, 1)},
            {"status_class": status_class, "error_type": record.error_type or metrics.NONE},
            {"status": str(record.status), "error_code": record.error_code or str(record.status)},
        )


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


class UsageStore:
    """One usage item per request, its rollup added in the same transaction. What DynamoDB
    refuses after the retries goes to the dead-letter queue; what it refuses as invalid is
    repaired, or else quarantined with the reason."""

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
        self.table_name = table_name
        self.retention_days = retention_days
        self.rollups = Rollups(rollups_table) if rollups_table else None
        self.dead_letters = DeadLetters(dead_letter_queue) if dead_letter_queue else None
        self.quarantine_queue = Quarantine(quarantine_queue) if quarantine_queue else None
        self.backoff = backoff or Backoff()

    def write(self, record: UsageRecord) -> bool:
        """Meter one request; a failure is logged and never fails the response."""
        emit_metrics(record)
        if not self.table_name:
            return False
        item = record.to_item(self.retention_days)
        if TRUNCATED in item:
            logger.warning(
                "usage item fields cut to their bounds",
                extra={"request_id": record.request_id, "fields": item[TRUNCATED]},
            )
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

    def store(self, item: Mapping[str, Any]) -> Stored:
        """Write the item and its rollup once, retrying with backoff. Idempotent by request id:
        an item already stored is a DUPLICATE and its rollup is not added again. An item
        refused as invalid is written again with its strings cut to their bounds."""
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
                aws.client("dynamodb", max_attempts=1).transact_write_items(
                    TransactItems=transaction
                )
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
        if "request_id" not in item:
            raise KeyError("request_id")
        put = {
            "TableName": self.table_name,
            "Item": {name: attribute(value) for name, value in item.items()},
            "ConditionExpression": "attribute_not_exists(request_id)",
        }
        actions: list[dict[str, Any]] = [{"Put": put}]
        if self.rollups is not None:
            actions.append({"Update": add_update(self.rollups.table_name, item)})
        return actions

    def _raise_latency_max(self, item: Mapping[str, Any]) -> None:
        if self.rollups is None:
            return
        try:
            self.rollups.raise_latency_max(item)
        except Exception as exc:
            # The counters are in; only the day's maximum may read low.
            logger.warning("rollup latency max not raised", extra={"error": error_name(exc)})

    def ping(self) -> None:
        if self.table_name:
            aws.client("dynamodb").describe_table(TableName=self.table_name)
