"""The rollups table: one item per day x model x key x agent x team x user, kept by atomic ADDs
at write time.

The partition key is the day, so one Query returns a day's aggregates and the report never
reads the usage table. The ADD travels in the same transaction as the usage item (see
`store.usage`), so a usage item is counted once or not at all. `latency_ms_max` cannot be an
ADD: it is raised by a conditional SET, which is idempotent and may be repeated on replay.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from llm_proxy.accounting.rollups import Rollup, RollupKey, days, key_of
from llm_proxy.accounting.totals import Totals
from llm_proxy.errors import ROLLUPS_NOT_CONFIGURED
from llm_proxy.store.base import Table
from llm_proxy.store.values import from_attributes, number_attribute

# Past this many rollups, this container forgets the maxima it knows are stored.
KNOWN_MAX_SIZE = 10_000


class RollupsTable(Table):
    """The rollup table's access pattern: add a usage item (in its transaction), raise a day's
    latency maximum, read days back.

    Not configured: a usage item adds to no rollup and no maximum is raised; reading rollups
    (the report) requires the table (503 `rollups_not_configured`)."""

    variable = "LLM_PROXY__ROLLUPS_TABLE"
    missing = ROLLUPS_NOT_CONFIGURED
    missing_message = "No rollups table is configured ({variable})."

    def __init__(self, table_name: str | None) -> None:
        super().__init__(table_name)
        # The highest maximum this container knows is stored: a lower latency needs no call.
        self._known_max: dict[RollupKey, Decimal] = {}
        self._lock = threading.Lock()

    def add_update(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The UpdateItem (low-level form, for the usage item's transaction) that adds a usage
        item to its rollup. Requires the table: the caller adds it only where there is one."""
        return self._update(key_of(item), Totals.of_usage(item))

    def add_updates(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The UpdateItems that add several usage items to their rollups: one per rollup, its
        items' totals summed (a transaction may name an item once)."""
        totals: dict[RollupKey, Totals] = {}
        for item in items:
            totals.setdefault(key_of(item), Totals()).add(Totals.of_usage(item))
        return [self._update(key, added) for key, added in totals.items()]

    def _update(self, key: RollupKey, added: Totals) -> dict[str, Any]:
        added_names = Totals.added_names()
        names = {f"#{name}": name for name in added_names}
        values = {f":{name}": number_attribute(getattr(added, name)) for name in added_names}
        labels = {
            "model": key.model,
            "key_id": key.key_id,
            "agent": key.agent,
            "team_id": key.team_id,
            "user_id": key.user_id,
        }
        names.update({f"#{name}": name for name in labels})
        values.update({f":{name}": {"S": value} for name, value in labels.items()})
        return {
            "TableName": self.require(),
            "Key": key.dynamo_key(),
            "UpdateExpression": "SET "
            + ", ".join(f"#{name} = :{name}" for name in labels)
            + " ADD "
            + ", ".join(f"#{name} :{name}" for name in added_names),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def raise_latency_max(self, item: Mapping[str, Any]) -> None:
        """Raise the item's rollup's `latency_ms_max` to its latency; skipped without a table."""
        if not self.enabled:
            return
        key, latency = key_of(item), Decimal(item.get("latency_ms", 0))
        with self._lock:
            if latency <= self._known_max.get(key, Decimal(-1)):
                return
        try:
            self.client().update_item(
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
            stored_item: Any = exc.response.get("Item")
            old = from_attributes(stored_item).get("latency_ms_max")
            stored = Decimal(old) if old is not None else latency
        with self._lock:
            if len(self._known_max) > KNOWN_MAX_SIZE:
                self._known_max.clear()
            self._known_max[key] = max(stored, self._known_max.get(key, stored))

    def day(self, day: str) -> list[Rollup]:
        """A day's rollups (one Query, paged). Requires the table."""
        table = self.resource()
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
        """Every rollup from `start` to `end`, both included: one Query per day. Requires the
        table (an empty period included)."""
        self.require()
        return [row for day in days(start, end) for row in self.day(day.isoformat())]
