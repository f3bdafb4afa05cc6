"""Daily rollups: one item per day x model x key x agent, kept by atomic ADDs at write time.

The partition key is the day, so one Query returns a day's aggregates and the report never
reads the usage table. The ADD travels in the same transaction as the usage item (see
`usage.py`), so a usage item is counted once or not at all. `latency_ms_max` cannot be an
ADD: it is raised by a conditional SET, which is idempotent and may be repeated on replay.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from llm_proxy import aws
from llm_proxy.accounting.counters import Counters
from llm_proxy.store.values import number_attribute

NONE = "-"
# DynamoDB caps a sort key at 1,024 bytes: each of the three labels of `model#key_id#agent` is
# cut to this many, so every usage item has a rollup key that fits.
LABEL_BYTES = 256


def cut(value: str, limit: int) -> str:
    """`value` if it fits in `limit` UTF-8 bytes; else its start, marked with the whole value's
    size and digest, in `limit` bytes. The same long value always gives the same result, so
    its requests still add up in one rollup."""
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        # Lone surrogates (a JSON "\ud800") are not UTF-8, so DynamoDB cannot store them.
        raw = value.encode(errors="replace")
        value = raw.decode()
    if len(raw) <= limit:
        return value
    mark = f"...[{len(raw)} bytes, sha256:{hashlib.sha256(raw).hexdigest()[:16]}]"
    return raw[: max(limit - len(mark), 0)].decode(errors="ignore") + mark


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
class Rollup(Counters):
    """One day's totals for a model, key and agent."""

    day: str
    model: str
    key_id: str
    agent: str

    @property
    def key(self) -> RollupKey:
        return RollupKey(self.day, self.model, self.key_id, self.agent)


def key_of(item: Mapping[str, Any]) -> RollupKey:
    """A usage item's rollup: the model group that answered (or was asked for), key, agent,
    each cut to `LABEL_BYTES` (a usage item's own labels already are; see `usage.bounded`)."""
    model = item.get("model_group") or item.get("model_requested") or "unknown"
    return RollupKey(
        day=str(item["day"]),
        model=cut(str(model), LABEL_BYTES),
        key_id=cut(str(item.get("key_id") or NONE), LABEL_BYTES),
        agent=cut(str(item.get("agent") or NONE), LABEL_BYTES),
    )


def add_update(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The UpdateItem (low-level form, for a transaction) that adds a usage item to its rollup."""
    key, added = key_of(item), Counters.of_usage(item)
    counters = Counters.added_names()
    names = {f"#{name}": name for name in counters}
    values = {f":{name}": number_attribute(getattr(added, name)) for name in counters}
    labels = {"model": key.model, "key_id": key.key_id, "agent": key.agent}
    names.update({f"#{name}": name for name in labels})
    values.update({f":{name}": {"S": value} for name, value in labels.items()})
    return {
        "TableName": table,
        "Key": key.dynamo_key(),
        "UpdateExpression": "SET "
        + ", ".join(f"#{name} = :{name}" for name in labels)
        + " ADD "
        + ", ".join(f"#{name} :{name}" for name in counters),
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
                ExpressionAttributeValues={":latency": number_attribute(latency)},
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


def days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)
