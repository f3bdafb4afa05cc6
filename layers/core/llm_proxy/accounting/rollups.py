"""Daily rollups: one item per day x model x key x agent x team x user, kept by atomic ADDs at
write time
(the rollups table: `store.rollups.RollupsTable`). What a rollup is, the key a usage item
adds to, and the cut that keeps its labels within DynamoDB's bounds are here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from llm_proxy.accounting.totals import Totals
from llm_proxy.errors import PAST_VALIDATION_CODES

NONE = "-"
# The model of a request refused before routing, whatever name it asked for (the metrics' name
# for it too): a caller can make up any number of names, and a refusal costs it nothing, not
# even a request of its rate limit, so no name of its choosing may add a row to the report.
UNROUTED = "unrouted"
# DynamoDB caps a sort key at 1,024 bytes: each of the five labels of
# `model#key_id#agent#team_id#user_id` is cut to this many (5 x 200 + 4 separators = 1,004), so
# every usage item has a rollup key that fits.
LABEL_BYTES = 200


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
    team_id: str = NONE
    user_id: str = NONE

    @property
    def sort_key(self) -> str:
        return f"{self.model}#{self.key_id}#{self.agent}#{self.team_id}#{self.user_id}"

    def dynamo_key(self) -> dict[str, Any]:
        return {"day": {"S": self.day}, "rollup_key": {"S": self.sort_key}}


@dataclass
class Rollup(Totals):
    """One day's totals for a model, key, agent, team and user. Its labels are read from the
    item's attributes, not its sort key: an item written before rollups named the team and the
    user (sort key `model#key_id#agent`) has neither attribute and reads as team and user
    `NONE`."""

    day: str
    model: str
    key_id: str
    agent: str
    team_id: str = NONE
    user_id: str = NONE

    @property
    def key(self) -> RollupKey:
        return RollupKey(self.day, self.model, self.key_id, self.agent, self.team_id, self.user_id)


def key_of(item: Mapping[str, Any]) -> RollupKey:
    """A usage item's rollup: its model (`model_of`), key, agent, team and user, each cut to
    `LABEL_BYTES` (a usage item's own labels already are; see `usage.bounded`)."""

    def label(name: str) -> str:
        return cut(str(item.get(name) or NONE), LABEL_BYTES)

    return RollupKey(
        day=str(item["day"]),
        model=cut(model_of(item), LABEL_BYTES),
        key_id=label("key_id"),
        agent=label("agent"),
        team_id=label("team_id"),
        user_id=label("user_id"),
    )


def model_of(item: Mapping[str, Any]) -> str:
    """The model group that answered; else the name asked for, where the gateway accepted it
    (an answer from the cache; a refusal by the key's limits or by the provider, which come
    after validation), so a name the gateway does not serve is never a label; else
    `UNROUTED`: any refusal before routing (an unknown model, a bad parameter)."""
    if item.get("model_group"):
        return str(item["model_group"])
    requested = item.get("model_requested")
    answered = int(item.get("status", 200)) < 400
    if requested and (answered or item.get("error_code") in PAST_VALIDATION_CODES):
        return str(requested)
    return UNROUTED


def days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)
