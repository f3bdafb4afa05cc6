"""The usage dead-letter queue: usage items that DynamoDB refused after every retry wait in
SQS (14 days) until a replay writes them. Beside it, the quarantine queue: records that can
never be written as they are, and messages that are no record at all, each with its reason,
for a person to look at."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llm_proxy import aws
from llm_proxy.accounting.rollups import cut
from llm_proxy.logs import logger

# SQS receives at most 10 messages a call.
BATCH = 10
# A reason is a short diagnosis; DynamoDB's messages are well under this.
REASON_BYTES = 1024


def encode(item: Mapping[str, Any]) -> str:
    # The item's Decimals came from floats (`UsageRecord.to_item`), so a float is exact for
    # them; `decode` reads them back as Decimals for DynamoDB. Non-ASCII is escaped, so the
    # body holds only characters SQS accepts.
    return json.dumps(item, default=float, separators=(",", ":"))


def decode(body: str) -> Any:
    return json.loads(body, parse_float=Decimal)


@dataclass
class Letter:
    receipt: str
    body: str
    # None when the body is no usage item; `problem` says why.
    item: dict[str, Any] | None
    problem: str = ""


def read(receipt: str, body: str) -> Letter:
    """A message as a usage item, or as what is wrong with it. A quarantined record moved
    back to this queue (once its cause is fixed) is read as the record it holds."""
    try:
        value = decode(body)
    except ValueError as exc:
        return Letter(receipt, body, None, f"unreadable: not JSON ({exc})")
    if isinstance(value, dict) and set(value) == {"reason", "item"}:
        value = value["item"]
    elif isinstance(value, dict) and set(value) == {"reason", "body"}:
        return Letter(receipt, str(value["body"]), None, str(value["reason"]))
    if not isinstance(value, dict):
        return Letter(receipt, body, None, "unreadable: not a JSON object")
    return Letter(receipt, body, value)


class DeadLetters:
    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url

    def send(self, item: Mapping[str, Any]) -> bool:
        try:
            aws.client("sqs").send_message(
                QueueUrl=self.queue_url,
                MessageBody=encode(item),
                MessageAttributes={
                    "request_id": {"DataType": "String", "StringValue": str(item["request_id"])}
                },
            )
        except Exception as exc:
            logger.error("usage dead-letter send failed", extra={"error": type(exc).__name__})
            return False
        return True

    def receive(self, wait_s: int = 1) -> list[Letter]:
        response = aws.client("sqs").receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=wait_s
        )
        letters = []
        for message in response.get("Messages", []):
            letter = read(message["ReceiptHandle"], str(message.get("Body", "")))
            if letter.item is None:
                logger.error(
                    "unreadable usage dead letter",
                    extra={"id": message["MessageId"], "problem": letter.problem},
                )
            letters.append(letter)
        return letters

    def delete(self, receipts: list[str]) -> None:
        if receipts:
            aws.client("sqs").delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts)],
            )


class Quarantine:
    """Records that DynamoDB refuses as invalid even once repaired, and messages that are no
    usage item. The body is JSON, `{"reason", "item"}` (or `{"reason", "body"}` with the
    message as it came), so a record moved back to the dead-letter queue is replayed as it
    was; the reason is also a message attribute, to read without opening the body."""

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url

    def send(
        self, reason: str, *, item: Mapping[str, Any] | None = None, body: str | None = None
    ) -> bool:
        reason = cut("".join(c if c.isprintable() else " " for c in reason), REASON_BYTES)
        # The record when there is one; else the message as it came.
        envelope: dict[str, Any] = {"reason": reason}
        if item is not None:
            envelope["item"] = dict(item)
        else:
            envelope["body"] = body or ""
        attributes = {"reason": {"DataType": "String", "StringValue": reason}}
        request_id = item.get("request_id") if item is not None else None
        if isinstance(request_id, str) and request_id:
            attributes["request_id"] = {
                "DataType": "String",
                "StringValue": cut(request_id, REASON_BYTES),
            }
        try:
            aws.client("sqs").send_message(
                QueueUrl=self.queue_url, MessageBody=encode(envelope), MessageAttributes=attributes
            )
        except Exception as exc:
            logger.error("usage quarantine send failed", extra={"error": type(exc).__name__})
            return False
        return True
