"""Daily rollups: one item per day x model x key x agent, kept by atomic ADDs at write time.

The partition key is the day, so one Query returns a day's aggregates and the report never
reads the usage table. The ADD travels in the same transaction as the usage item (see
`usage.py`), so a usage item is counted once or not at all. `latency_ms_max` cannot be an
ADD: it is raised by a conditional SET, which is idempotent and may be repeated on replay.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from llm_proxy import aws

NONE = "-"
# Attributes added per usage item, in the order a report lists them.
COUNTERS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cache_hits",
    "latency_ms_sum",
)


@dataclass(frozen=True)
class RollupKey:
    day: str
    model: str
    key_id: str
    agent: str

    @property
    def sort_key(self) -> str:
        return f"{self.model}#{self.key_id}#{self.agent}"

    def dynamo_key(self) -> dict[str, Any]:
        return {"day": {"S": self.day}, "rollup_key": {"S": self.sort_key}}


@dataclass
class Rollup:
    """One day's totals for a model, key and agent."""

    day: str
    model: str
    key_id: str
    agent: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    cache_hits: int = 0
    latency_ms_sum: Decimal = field(default_factory=Decimal)
    latency_ms_max: Decimal = field(default_factory=Decimal)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Rollup:
        names = {f.name for f in fields(cls)}
        values = {name: item[name] for name in names if name in item}
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cache_hits"):
            values[name] = int(values.get(name, 0))
        for name in ("cost_usd", "latency_ms_sum", "latency_ms_max"):
            values[name] = Decimal(values.get(name, 0))
        return cls(**values)

    def add(self, increments: Mapping[str, Decimal | int], latency_ms: Decimal) -> None:
        for name, value in increments.items():
            setattr(self, name, getattr(self, name) + value)
        self.latency_ms_max = max(self.latency_ms_max, latency_ms)

    def to_item(self) -> dict[str, Any]:
        item = {f.name: getattr(self, f.name) for f in fields(self)}
        item["rollup_key"] = RollupKey(self.day, self.model, self.key_id, self.agent).sort_key
        return item


def key_of(item: Mapping[str, Any]) -> RollupKey:
    """A usage item's rollup: the model group that answered (or was asked for), key, agent."""
    model = item.get("model_group") or item.get("model_requested") or "unknown"
    return RollupKey(
        day=str(item["day"]),
        model=str(model),
        key_id=str(item.get("key_id") or NONE),
        agent=str(item.get("agent") or NONE),
    )


def increments(item: Mapping[str, Any]) -> dict[str, Decimal | int]:
    return {
        "requests": 1,
        "errors": 1 if int(item.get("status", 200)) >= 400 else 0,
        "prompt_tokens": int(item.get("prompt_tokens", 0)),
        "completion_tokens": int(item.get("completion_tokens", 0)),
        "cost_usd": Decimal(item.get("cost_usd", 0)),
        "cache_hits": 1 if item.get("cache_hit") else 0,
        "latency_ms_sum": Decimal(item.get("latency_ms", 0)),
    }


def _number(value: Decimal | int) -> dict[str, str]:
    return {"N": str(value)}


def add_update(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The UpdateItem (low-level form, for a transaction) that adds a usage item to its rollup."""
    key = key_of(item)
    names = {f"#{name}": name for name in COUNTERS}
    values = {f":{name}": _number(value) for name, value in increments(item).items()}
    labels = {"model": key.model, "key_id": key.key_id, "agent": key.agent}
    names.update({f"#{name}": name for name in labels})
    values.update({f":{name}": {"S": value} for name, value in labels.items()})
    return {
        "TableName": table,
        "Key": key.dynamo_key(),
        "UpdateExpression": "SET "
        + ", ".join(f"#{name} = :{name}" for name in labels)
        + " ADD "
        + ", ".join(f"#{name} :{name}" for name in COUNTERS),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


class Rollups:
    """The rollup table's access pattern: raise a day's latency maximum, read days back."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        # The highest maximum this container knows is stored: a lower latency needs no call.
        self._known_max: dict[RollupKey, Decimal] = {}
        self._lock = threading.Lock()

    def raise_latency_max(self, item: Mapping[str, Any]) -> None:
        key, latency = key_of(item), Decimal(item.get("latency_ms", 0))
        with self._lock:
            if latency <= self._known_max.get(key, Decimal(-1)):
                return
        try:
            aws.client("dynamodb").update_item(
                TableName=self.table_name,
                Key=key.dynamo_key(),
                UpdateExpression="SET latency_ms_max = :latency",
                ConditionExpression="attribute_not_exists(latency_ms_max) "
                "OR latency_ms_max < :latency",
                ExpressionAttributeValues={":latency": _number(latency)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            stored = latency
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            stored_item: Any = exc.response.get("Item") or {}
            old = stored_item.get("latency_ms_max", {}).get("N")
            stored = Decimal(old) if old is not None else latency
        with self._lock:
            if len(self._known_max) > 10_000:
                self._known_max.clear()
            self._known_max[key] = max(stored, self._known_max.get(key, stored))

    def day(self, day: str) -> list[Rollup]:
        table = aws.resource_table(self.table_name)
        query: dict[str, Any] = {
            "KeyConditionExpression": "#day = :day",
            "ExpressionAttributeNames": {"#day": "day"},
            "ExpressionAttributeValues": {":day": day},
        }
        rows: list[Rollup] = []
        while True:
            page = table.query(**query)
            rows.extend(Rollup.from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return rows
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def between(self, start: date, end: date) -> list[Rollup]:
        """Every rollup from `start` to `end`, both included: one Query per day."""
        return [row for day in days(start, end) for row in self.day(day.isoformat())]

    def put(self, rows: Iterable[Rollup]) -> None:
        """Write whole rollups (backfills and synthetic benchmarks), 25 items a batch."""
        with aws.resource_table(self.table_name).batch_writer() as batch:
            for row in rows:
                batch.put_item(Item=row.to_item())


def days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def aggregate(items: Iterable[Mapping[str, Any]]) -> list[Rollup]:
    """What the ADDs make of these usage items, computed in memory."""
    rows: dict[RollupKey, Rollup] = {}
    for item in items:
        key = key_of(item)
        row = rows.get(key) or rows.setdefault(
            key, Rollup(key.day, key.model, key.key_id, key.agent)
        )
        row.add(increments(item), Decimal(item.get("latency_ms", 0)))
    return list(rows.values())
