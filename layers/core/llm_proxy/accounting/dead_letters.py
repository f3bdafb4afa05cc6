"""The usage dead-letter queue: usage items that DynamoDB refused after every retry wait in
SQS (14 days) until a replay writes them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llm_proxy import aws
from llm_proxy.logs import logger

# SQS receives at most 10 messages a call.
BATCH = 10


def encode(item: Mapping[str, Any]) -> str:
    # The item's Decimals came from floats (`UsageRecord.to_item`), so a float is exact for
    # them; `decode` reads them back as Decimals for DynamoDB.
    return json.dumps(item, default=float, separators=(",", ":"))


def decode(body: str) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(body, parse_float=Decimal)
    return item


@dataclass
class Letter:
    receipt: str
    item: dict[str, Any]


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
            try:
                letters.append(Letter(message["ReceiptHandle"], decode(message["Body"])))
            except ValueError:
                # Left in the queue: SQS keeps it for its retention period, for a person to read.
                logger.error("unreadable usage dead letter", extra={"id": message["MessageId"]})
        return letters

    def delete(self, receipts: list[str]) -> None:
        if receipts:
            aws.client("sqs").delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts)],
            )
