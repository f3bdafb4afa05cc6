"""A key's requests in flight (`max_parallel_requests`), across every container: one item per
key in the counters table, `n` requests in flight, each in a slot of its own (an attribute
named after the request's slot id, holding when its lease ends).

A slot is taken with the admission's other counters in one conditional write (`n < limit`)
and given back when the request is metered, however it ended. Giving back removes the slot
only if it is still there, so a slot is counted off once however often it is released; a slot
a crashed container never released is freed once its lease is over, by the next admission the
limit refuses (`prune`)."""

from __future__ import annotations

import uuid
from typing import Any

from llm_proxy.access.key_record import VirtualKey
from llm_proxy.access.limits import PARALLEL_SLOT_LEASE_S, Reservation
from llm_proxy.logs import logger
from llm_proxy.store.values import attribute

SLOT_PREFIX = "slot_"
# The item outlives its last lease a little, then goes with its TTL.
TTL_GRACE_S = 3600
# Slots freed by one update: its expression stays within DynamoDB's 4 KB.
PRUNE_AT_ONCE = 100


def new_slot() -> str:
    """A slot of the request's own: never the request id, which a client may choose."""
    return SLOT_PREFIX + uuid.uuid4().hex


def acquire_update(
    table_name: str | None, key: VirtualKey, reservation: Reservation, now: float
) -> dict[str, Any]:
    return {
        "TableName": table_name,
        "Key": {"counter_id": attribute(reservation.parallel_item)},
        "UpdateExpression": (
            "SET n = if_not_exists(n, :zero) + :one, #slot = :lease_end, expires_at = :expires"
        ),
        "ConditionExpression": "attribute_not_exists(n) OR n < :limit",
        "ExpressionAttributeNames": {"#slot": str(reservation.parallel_slot)},
        "ExpressionAttributeValues": {
            ":zero": attribute(0),
            ":one": attribute(1),
            ":lease_end": attribute(int(now) + PARALLEL_SLOT_LEASE_S),
            ":expires": attribute(int(now) + PARALLEL_SLOT_LEASE_S + TTL_GRACE_S),
            ":limit": attribute(int(key.max_parallel_requests or 0)),
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def release_update(table_name: str | None, reservation: Reservation) -> dict[str, Any]:
    return {
        "TableName": table_name,
        "Key": {"counter_id": attribute(reservation.parallel_item)},
        "UpdateExpression": "REMOVE #slot SET n = n - :one",
        "ConditionExpression": "attribute_exists(#slot)",
        "ExpressionAttributeNames": {"#slot": str(reservation.parallel_slot)},
        "ExpressionAttributeValues": {":one": attribute(1)},
    }


def prune(client: Any, table_name: str | None, item: str, old: dict[str, Any], now: float) -> bool:
    """Free the slots of the item (as it stood when the limit refused) whose lease is over:
    their requests' containers are gone. Whether any was there to free."""
    expired = sorted(
        name
        for name, lease_end in old.items()
        if name.startswith(SLOT_PREFIX) and float(lease_end) <= now
    )[:PRUNE_AT_ONCE]
    if not expired:
        return False
    names = {f"#s{i}": name for i, name in enumerate(expired)}
    try:
        client.update_item(
            TableName=table_name,
            Key={"counter_id": attribute(item)},
            UpdateExpression=f"REMOVE {', '.join(names)} SET n = n - :freed",
            # Each slot is counted off once, whoever frees it first (a prune or its release).
            ConditionExpression=" AND ".join(f"attribute_exists({n})" for n in names),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":freed": attribute(len(expired))},
        )
    except Exception as exc:
        logger.info("parallel slots not pruned", extra={"error": type(exc).__name__})
    return True
