"""Usage records and their store: one item per request, success or failure, in the usage
table, with its daily rollup; never lost: retried, then dead-lettered to SQS for a replay."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from llm_proxy import aws
from llm_proxy.accounting import metrics
from llm_proxy.accounting.dead_letters import DeadLetters
from llm_proxy.accounting.rollups import Rollups, add_update
from llm_proxy.logs import logger

SECONDS_PER_DAY = 86_400


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
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
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
            key: _dynamo_value(value)
            for key, value in asdict(self).items()
            if value is not None and key != "started_at"
        }
        item["total_tokens"] = self.prompt_tokens + self.completion_tokens
        item["timestamp"] = started.isoformat(timespec="milliseconds")
        item["day"] = started.strftime("%Y-%m-%d")
        item["expires_at"] = int(self.started_at) + retention_days * SECONDS_PER_DAY
        return item


def emit_metrics(record: UsageRecord) -> None:
    model = record.model_group or record.model_requested or "unknown"
    metrics.emit(
        {
            "Requests": (MetricUnit.Count, 1),
            "Errors": (MetricUnit.Count, 1 if record.status >= 400 else 0),
            "PromptTokens": (MetricUnit.Count, record.prompt_tokens),
            "CompletionTokens": (MetricUnit.Count, record.completion_tokens),
            "CostUSD": (MetricUnit.NoUnit, record.cost_usd),
            "Latency": (MetricUnit.Milliseconds, record.latency_ms),
        },
        {"model": model},
    )


def _dynamo_value(value: Any) -> Any:
    return aws.dynamo_number(round(value, 12) if isinstance(value, float) else value)


class Outcome(Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"
    FAILED = "failed"


# Errors worth another try: throttling, DynamoDB's own failures, a lost connection.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
    }
)
RETRYABLE_REASONS = frozenset(
    {
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "TransactionConflict",
        "RequestLimitExceeded",
    }
)


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


class UsageStore:
    """One usage item per request, its rollup added in the same transaction; what DynamoDB
    refuses after the retries goes to the dead-letter queue."""

    def __init__(
        self,
        table_name: str | None,
        retention_days: int,
        *,
        rollups_table: str | None = None,
        dead_letter_queue: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.table_name = table_name
        self.retention_days = retention_days
        self.rollups = Rollups(rollups_table) if rollups_table else None
        self.dead_letters = DeadLetters(dead_letter_queue) if dead_letter_queue else None
        self.backoff = backoff or Backoff()

    def write(self, record: UsageRecord) -> bool:
        """Meter one request; a failure is logged and never fails the response."""
        emit_metrics(record)
        if not self.table_name:
            return False
        item = record.to_item(self.retention_days)
        if self.store(item) is not Outcome.FAILED:
            return True
        if self.dead_letters is not None and self.dead_letters.send(item):
            logger.warning("usage item dead-lettered", extra={"request_id": record.request_id})
            metrics.emit({"UsageDeadLettered": (MetricUnit.Count, 1)})
        else:
            # The last copy: the log line can still be replayed by hand.
            logger.error("usage item lost to DynamoDB and SQS", extra={"usage_item": item})
        return False

    def store(self, item: Mapping[str, Any]) -> Outcome:
        """Write the item and its rollup once, retrying with backoff. Idempotent by request id:
        an item already stored is a DUPLICATE and its rollup is not added again."""
        started = time.monotonic()
        for attempt in range(self.backoff.attempts):
            try:
                aws.client("dynamodb", max_attempts=1).transact_write_items(
                    TransactItems=self._transaction(item)
                )
            except Exception as exc:
                if _is_duplicate(exc):
                    return Outcome.DUPLICATE
                delay = self.backoff.delay(attempt)
                last = attempt + 1 == self.backoff.attempts
                if (
                    not _retryable(exc)
                    or last
                    or (time.monotonic() - started + delay > self.backoff.deadline_s)
                ):
                    logger.error(
                        "usage write failed",
                        extra={
                            "request_id": item.get("request_id"),
                            "error": _error_name(exc),
                            "attempts": attempt + 1,
                        },
                    )
                    return Outcome.FAILED
                time.sleep(delay)
                continue
            self._raise_latency_max(item)
            return Outcome.WRITTEN
        return Outcome.FAILED

    def _transaction(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        put = {
            "TableName": self.table_name,
            "Item": {name: aws.attribute_value(value) for name, value in item.items()},
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
            logger.warning("rollup latency max not raised", extra={"error": _error_name(exc)})

    def ping(self) -> None:
        if self.table_name:
            aws.client("dynamodb").describe_table(TableName=self.table_name)


def _error_name(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


def _reasons(exc: Exception) -> list[str]:
    if not isinstance(exc, ClientError):
        return []
    return [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]


def _is_duplicate(exc: Exception) -> bool:
    # The Put is the first action: its condition failing means the item is already stored.
    reasons = _reasons(exc)
    return bool(reasons) and reasons[0] == "ConditionalCheckFailed"


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, BotoCoreError):
        return True  # connection refused, timeouts
    if not isinstance(exc, ClientError):
        return False
    if any(reason in RETRYABLE_REASONS for reason in _reasons(exc)):
        return True
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return _error_name(exc) in RETRYABLE_CODES or status >= 500
