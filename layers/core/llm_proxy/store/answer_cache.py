"""The cache table: the opt-in response cache's answers (exact-match chat completions and
Responses API answers) as their JSON, by `pipeline.cache.cache_key`, expired by TTL."""

from __future__ import annotations

import json
import time
from typing import Any

from llm_proxy.errors import CACHE_TABLE_MISSING
from llm_proxy.logs import logger
from llm_proxy.store.base import Table


class AnswerCache(Table):
    """Cached answers. A lookup that fails is a miss, and a write that fails is logged: the
    cache never fails a request.

    Not configured: every lookup is a miss and nothing is written."""

    variable = "LLM_PROXY__CACHE_TABLE"
    missing = CACHE_TABLE_MISSING
    missing_message = "No response cache table is configured ({variable})."

    def load(self, key: str) -> dict[str, Any] | None:
        """The cached answer's JSON, or None (also when the table cannot be read: a miss); the
        API's row makes it litellm's answer again (`apis.Api.from_cache`)."""
        if not self.enabled:
            return None
        try:
            item = self.resource().get_item(Key={"cache_key": key}).get("Item")
        except Exception as exc:
            logger.warning("cache lookup failed", extra={"error": type(exc).__name__})
            return None
        # DynamoDB's TTL deletes lazily; an expired entry is a miss.
        if not item or int(item.get("expires_at", 0)) <= time.time():
            return None
        answer: dict[str, Any] = json.loads(str(item["response"]))
        return answer

    def put(self, key: str, response: Any, ttl_s: int) -> None:
        """Keep `response` (a litellm answer: its `model_dump`) for `ttl_s` seconds."""
        if not self.enabled:
            return
        body = response.model_dump(exclude_none=True)
        try:
            self.resource().put_item(
                Item={
                    "cache_key": key,
                    "response": json.dumps(body, separators=(",", ":")),
                    "expires_at": int(time.time()) + ttl_s,
                }
            )
        except Exception as exc:
            logger.warning("cache write failed", extra={"error": type(exc).__name__})
