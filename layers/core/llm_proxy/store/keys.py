"""The keys table: one item per virtual key, by its token (the SHA-256 of the key as first
generated: its stable id), with its metadata and limits (its spend is in the counters table, by
the same token), and one per team and user (`access.principals`, `team#<id>`). A key regenerated
under a new secret keeps its item; the new secret's SHA-256 gets a small item of its own that
points to it (`key_token`). Items go in and out as the boto3 resource holds them;
`access.key_record.VirtualKey` converts them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from llm_proxy.errors import KEYS_TABLE_MISSING
from llm_proxy.store.base import Table

# BatchGetItem's most keys per call.
BATCH_KEYS = 100
# The attribute of a secret's item that names the key it opens.
POINTER = "key_token"
# The attribute of a team's or user's item that says which it is (`access.principals`).
KIND = "kind"


class KeysTable(Table):
    """Not configured: looking a key up finds nothing (an unknown key, 401 to its caller);
    managing keys (create, put, delete, scan) requires the table."""

    variable = "LLM_PROXY__KEYS_TABLE"
    missing = KEYS_TABLE_MISSING
    missing_message = "Virtual keys are not configured: set {variable}."

    def get(self, token: str) -> dict[str, Any] | None:
        """The key's item; None for an unknown key (or no table)."""
        if not self.enabled:
            return None
        item: dict[str, Any] | None = self.resource().get_item(Key={"token": token}).get("Item")
        return item or None

    def get_many(self, tokens: Iterable[str]) -> list[dict[str, Any]]:
        """The items of these keys that exist, in batches; none without a table."""
        wanted = sorted(set(tokens))
        if not self.enabled or not wanted:
            return []
        name = self.require()
        dynamodb = self.resource().meta.client
        items: list[dict[str, Any]] = []
        for start in range(0, len(wanted), BATCH_KEYS):
            batch = wanted[start : start + BATCH_KEYS]
            request: dict[str, Any] = {name: {"Keys": [{"token": token} for token in batch]}}
            while request:
                page = dynamodb.batch_get_item(RequestItems=request)
                items.extend(page.get("Responses", {}).get(name, []))
                request = page.get("UnprocessedKeys") or {}
        return items

    def create(self, item: dict[str, Any]) -> None:
        """A new key's item; refused (ConditionalCheckFailed) if its token is taken."""
        self.resource().put_item(
            Item=item,
            ConditionExpression="attribute_not_exists(#t)",
            ExpressionAttributeNames={"#t": "token"},
        )

    def put(self, item: dict[str, Any]) -> None:
        self.resource().put_item(Item=item)

    def point(self, secret: str, token: str) -> None:
        """A regenerated key's new secret: its SHA-256 names the key's item (refused if taken)."""
        self.create({"token": secret, POINTER: token})

    def touch(self, token: str, at: str) -> None:
        """The key's `last_active`, moved forward only (an existing key's; never creates one)."""
        try:
            self.resource().update_item(
                Key={"token": token},
                UpdateExpression="SET last_active = :at",
                ConditionExpression="attribute_exists(#t) AND "
                "(attribute_not_exists(last_active) OR last_active < :at)",
                ExpressionAttributeNames={"#t": "token"},
                ExpressionAttributeValues={":at": at},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def delete(self, token: str) -> bool:
        """Whether there was such a key."""
        found = self.resource().delete_item(Key={"token": token}, ReturnValues="ALL_OLD")
        return bool(found.get("Attributes"))

    def tokens_with_alias(self, alias: str) -> list[str]:
        """The tokens of the keys with this alias (a filtered scan: keys are few, and only
        key management asks)."""
        table = self.resource()
        request: dict[str, Any] = {
            "FilterExpression": "key_alias = :alias",
            "ExpressionAttributeValues": {":alias": alias},
            "ProjectionExpression": "#t",
            "ExpressionAttributeNames": {"#t": "token"},
        }
        tokens: list[str] = []
        while True:
            page = table.scan(**request)
            tokens.extend(str(item["token"]) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return tokens
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def scan(self) -> list[dict[str, Any]]:
        """Every key's item (not the items of regenerated keys' secrets, teams or users),
        read consistently: deleting a team or user deletes the keys this finds."""
        table = self.resource()
        page = table.scan(ConsistentRead=True)
        items = list(page.get("Items", []))
        while "LastEvaluatedKey" in page:
            page = table.scan(ExclusiveStartKey=page["LastEvaluatedKey"], ConsistentRead=True)
            items.extend(page.get("Items", []))
        return [item for item in items if POINTER not in item and KIND not in item]

    def scan_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every team's or every user's item (a filtered scan: management only)."""
        table = self.resource()
        request: dict[str, Any] = {
            "FilterExpression": "#k = :kind",
            "ExpressionAttributeNames": {"#k": KIND},
            "ExpressionAttributeValues": {":kind": kind},
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = table.scan(**request)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
