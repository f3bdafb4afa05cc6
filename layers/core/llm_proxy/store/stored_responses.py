"""The responses table: stored responses of the Responses API (`store`,
`previous_response_id`, `GET` and `DELETE /v1/responses/{id}`): in DynamoDB with a TTL, so a
follow-up works on any container, and scoped to the key that made them (another key gets
404, as for an unknown id).

A stored item keeps the conversation as the provider saw it (the input items, previous turns
expanded) and the response, so a follow-up is the stored items plus its own input, whatever
deployment answers it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from llm_proxy.errors import (
    DEPENDENCY_UNAVAILABLE,
    RESPONSE_NOT_FOUND,
    RESPONSES_TABLE_MISSING,
    ProxyError,
)
from llm_proxy.logs import logger
from llm_proxy.store.base import Table

SECONDS_PER_DAY = 86_400


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


def not_found(response_id: str, param: str | None = None) -> ProxyError:
    return RESPONSE_NOT_FOUND(
        f"No response with id '{response_id[:100]}' is stored for this key.", param=param
    )


class StoredResponses(Table):
    """Stored responses, each kept `retention_days`.

    Not configured: nothing is stored, and every response id is unknown (404
    `response_not_found`, as for another key's)."""

    variable = "LLM_PROXY__RESPONSES_TABLE"
    missing = RESPONSES_TABLE_MISSING
    missing_message = "No responses table is configured ({variable})."

    def __init__(self, table_name: str | None, retention_days: int) -> None:
        super().__init__(table_name)
        self.retention_days = retention_days

    def put(self, stored: StoredResponse) -> None:
        """Best effort: the answer is already the client's; a failed write is logged."""
        if not self.enabled:
            return
        item = {
            "response_id": stored.response_id,
            "key_id": stored.key_id,
            "input": json.dumps(stored.input, separators=(",", ":")),
            "response": json.dumps(stored.response, separators=(",", ":")),
            "expires_at": int(time.time()) + self.retention_days * SECONDS_PER_DAY,
        }
        try:
            self.resource().put_item(Item=item)
        except Exception as exc:
            logger.warning("response not stored", extra={"error": type(exc).__name__})

    def get(self, response_id: str, key_id: str, param: str | None = None) -> StoredResponse:
        """The caller's stored response; 404 when unknown, expired or another key's."""
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
        return StoredResponse(
            response_id=response_id,
            key_id=key_id,
            input=json.loads(str(item["input"])),
            response=json.loads(str(item["response"])),
        )

    def delete(self, response_id: str, key_id: str) -> None:
        """Delete the caller's stored response; 404 as `get`."""
        self.get(response_id, key_id)
        self.resource().delete_item(Key={"response_id": response_id})
