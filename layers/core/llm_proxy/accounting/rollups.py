"""Daily rollups: one item per day x model x key x agent, kept by atomic ADDs at write time
(the rollups table: `store.rollups.RollupsTable`). What a rollup is, the key a usage item
adds to, and the cut that keeps its labels within DynamoDB's bounds are here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from llm_proxy.accounting.totals import Totals

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
class Rollup(Totals):
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


def days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)
