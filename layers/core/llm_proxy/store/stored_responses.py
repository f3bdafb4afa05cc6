"""The responses table: stored responses of the Responses API (`store`,
`previous_response_id`, `GET` and `DELETE /v1/responses/{id}`): in DynamoDB with a TTL, so a
follow-up works on any container, and scoped to the key that made them (another key gets
404, as for an unknown id).

A stored item keeps the conversation as the provider saw it (the input items, previous turns
expanded) and the response, so a follow-up is the stored items plus its own input, whatever
deployment answers it.

A conversation over DynamoDB's item limit (400 KB) is kept in an S3 object instead
(`responses/<key scope>/<id>.json`, expired by the bucket's lifecycle rule with the same
retention), the item keeping its key, ids and TTL and naming the object. Without a bucket
such a response is refused before it is answered (`check_fits`), never answered with an id
that was not stored."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from llm_proxy import aws
from llm_proxy.errors import (
    DEPENDENCY_UNAVAILABLE,
    RESPONSE_NOT_FOUND,
    RESPONSE_TOO_LARGE_TO_STORE,
    RESPONSES_TABLE_MISSING,
    ProxyError,
)
from llm_proxy.logs import logger
from llm_proxy.store.base import Table

SECONDS_PER_DAY = 86_400
# DynamoDB's item limit counts attribute names and values; the conversation may take this much
# of it, which leaves room for the ids, the key and the TTL.
ITEM_LIMIT_KB = 400
INLINE_LIMIT_BYTES = 380 * 1024
# Not a variable: the template grants the api functions `responses/*` of the bucket only, and
# its lifecycle rule expires that prefix.
SPILL_PREFIX = "responses"


@dataclass(frozen=True)
class StoredResponse:
    response_id: str
    key_id: str
    # The items the response answered (earlier turns included), and the response itself.
    input: list[Any]
    response: dict[str, Any]

    @property
    def conversation(self) -> list[Any]:
        """What a follow-up continues: the input, then the response's output items."""
        return [*self.input, *(self.response.get("output") or [])]

    # Serialized once, for the size check before the answer and the write after it.
    @cached_property
    def input_json(self) -> str:
        return compact(self.input)

    @cached_property
    def response_json(self) -> str:
        return compact(self.response)

    @property
    def size(self) -> int:
        """The conversation's bytes as an item holds it."""
        return len(self.input_json.encode()) + len(self.response_json.encode())


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def not_found(response_id: str, param: str | None = None) -> ProxyError:
    return RESPONSE_NOT_FOUND(
        f"No response with id '{response_id[:100]}' is stored for this key.", param=param
    )


def too_large(size: int) -> ProxyError:
    return RESPONSE_TOO_LARGE_TO_STORE(
        f"This response cannot be stored: its conversation is {size // 1024} KB, over the "
        f"{INLINE_LIMIT_BYTES // 1024} KB a stored response may hold (DynamoDB's item limit is "
        f"{ITEM_LIMIT_KB} KB) and no responses bucket is configured. Send `store: false` and "
        "the whole conversation as `input` instead of `previous_response_id`.",
        param="store",
    )


def object_key(stored: StoredResponse) -> str:
    """Where a spilled conversation lives: under the prefix, then a scope of its key (a hash,
    so no key id is written in an object name), then the response id."""
    scope = hashlib.sha256(stored.key_id.encode()).hexdigest()[:32]
    return f"{SPILL_PREFIX}/{scope}/{stored.response_id}.json"


class StoredResponses(Table):
    """Stored responses, each kept `retention_days`; conversations over the item limit in
    `bucket`.

    Not configured: nothing is stored, and every response id is unknown (404
    `response_not_found`, as for another key's)."""

    variable = "LLM_PROXY__RESPONSES_TABLE"
    missing = RESPONSES_TABLE_MISSING
    missing_message = "No responses table is configured ({variable})."

    def __init__(
        self, table_name: str | None, retention_days: int, bucket: str | None = None
    ) -> None:
        super().__init__(table_name)
        self.retention_days = retention_days
        self.bucket = bucket

    def check_fits(self, stored: StoredResponse) -> None:
        """A 400 (`response_too_large_to_store`) for a response that could be stored nowhere:
        over the item limit with no bucket. Called before the provider with the input alone,
        and before a JSON answer with the whole response."""
        if self.enabled and not self.bucket and stored.size > INLINE_LIMIT_BYTES:
            raise too_large(stored.size)

    def put(self, stored: StoredResponse) -> None:
        """Best effort: the answer is already the client's; a failed write is logged (and the
        id is unknown: a pointer is written only after its object)."""
        if not self.enabled:
            return
        item: dict[str, Any] = {
            "response_id": stored.response_id,
            "key_id": stored.key_id,
            "expires_at": int(time.time()) + self.retention_days * SECONDS_PER_DAY,
        }
        try:
            if stored.size <= INLINE_LIMIT_BYTES:
                item.update(input=stored.input_json, response=stored.response_json)
            else:
                item["object_key"] = self._spill(stored)
            self.resource().put_item(Item=item)
        except Exception as exc:
            code = exc.code if isinstance(exc, ProxyError) else None
            logger.error(
                "response not stored",
                extra={
                    "response_id": stored.response_id,
                    "bytes": stored.size,
                    "error": code or type(exc).__name__,
                },
            )

    def _spill(self, stored: StoredResponse) -> str:
        if not self.bucket:
            raise too_large(stored.size)
        key = object_key(stored)
        body = f'{{"input":{stored.input_json},"response":{stored.response_json}}}'
        aws.client("s3").put_object(
            Bucket=self.bucket, Key=key, Body=body.encode(), ContentType="application/json"
        )
        return key

    def get(self, response_id: str, key_id: str, param: str | None = None) -> StoredResponse:
        """The caller's stored response; 404 when unknown, expired or another key's."""
        item = self._item(response_id, key_id, param)
        if "object_key" in item:
            body = self._read_object(str(item["object_key"]), response_id, param)
            conversation, response = body["input"], body["response"]
        else:
            conversation, response = (
                json.loads(str(item["input"])),
                json.loads(str(item["response"])),
            )
        return StoredResponse(response_id, key_id, input=conversation, response=response)

    def delete(self, response_id: str, key_id: str) -> None:
        """Delete the caller's stored response, its object first (so a failure leaves the
        item, and a retry, in place); 404 as `get`."""
        item = self._item(response_id, key_id)
        if "object_key" in item:
            try:
                self._s3().delete_object(Bucket=self.bucket, Key=str(item["object_key"]))
            except ProxyError:
                raise
            except Exception as exc:
                raise unreadable("deleted", exc) from None
        self.resource().delete_item(Key={"response_id": response_id})

    def _item(self, response_id: str, key_id: str, param: str | None = None) -> dict[str, Any]:
        if not self.enabled:
            raise not_found(response_id, param)
        try:
            item = self.resource().get_item(Key={"response_id": response_id}).get("Item")
        except Exception as exc:
            raise DEPENDENCY_UNAVAILABLE(
                f"The responses table cannot be read ({type(exc).__name__})."
            ) from None
        # DynamoDB's TTL deletes lazily: an expired item is gone already for the client.
        expired = item is not None and int(item.get("expires_at", 0)) <= time.time()
        if item is None or expired or item.get("key_id") != key_id:
            raise not_found(response_id, param)
        return dict(item)

    def _read_object(self, key: str, response_id: str, param: str | None) -> dict[str, Any]:
        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ProxyError:
            raise
        except Exception as exc:
            # Deleted or expired between the item and its object: gone, as the item will be.
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchKey":
                raise not_found(response_id, param) from None
            raise unreadable("read", exc) from None
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    def _s3(self) -> Any:
        if not self.bucket:
            raise DEPENDENCY_UNAVAILABLE(
                "This response is stored in S3 and no responses bucket is configured "
                "(LLM_PROXY__RESPONSES_BUCKET)."
            )
        return aws.client("s3")


def unreadable(verb: str, exc: Exception) -> ProxyError:
    return DEPENDENCY_UNAVAILABLE(
        f"The stored response's object cannot be {verb} ({type(exc).__name__})."
    )
