"""Metering: one usage item per request, success or failure, in the usage table."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import aws
from .logs import logger

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


def _dynamo_value(value: Any) -> Any:
    # DynamoDB numbers must be Decimal; str() keeps the float's shortest exact form.
    if isinstance(value, float):
        return Decimal(str(round(value, 12)))
    return value


class UsageStore:
    def __init__(self, table_name: str | None, retention_days: int) -> None:
        self.table_name = table_name
        self.retention_days = retention_days

    def _table(self) -> Any:
        return aws.resource_table(self.table_name)

    def write(self, record: UsageRecord) -> bool:
        """Write one item; a failure is logged and never fails the response."""
        if not self.table_name:
            return False
        try:
            self._table().put_item(Item=record.to_item(self.retention_days))
        except Exception as exc:
            logger.error(
                "usage write failed",
                extra={"request_id": record.request_id, "error": type(exc).__name__},
            )
            return False
        return True

    def ping(self) -> None:
        if self.table_name:
            aws.client("dynamodb").describe_table(TableName=self.table_name)
