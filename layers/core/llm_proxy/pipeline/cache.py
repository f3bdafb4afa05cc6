"""The pipeline's cache step: the opt-in response cache, exact-match chat completions and
Responses API answers in DynamoDB (`store.answer_cache.AnswerCache`), expired by TTL.

The key is a hash of the model, the messages and the generation parameters, never of the
caller's key, so agents asking the same thing share an answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import litellm

from llm_proxy.config import ProxyConfig
from llm_proxy.errors import invalid_request

# Parameters that change how an answer is delivered, billed or kept, not what it says (a
# `previous_response_id` is in the key as the conversation it names).
NOT_IN_KEY = frozenset(
    {"stream", "stream_options", "user", "metadata", "cache", "store", "previous_response_id"}
)
CACHE_HIT_HEADER = "x-litellm-cache-hit"
MAX_TTL_S = 365 * 86_400
# Marks an answer served from the cache, in its hidden params as litellm keeps them.
CACHE_HIT = "cache_hit"


def mark_cache_hit(response: Any) -> None:
    response._hidden_params = {CACHE_HIT: True}


def is_cache_hit(response: Any) -> bool:
    hidden = getattr(response, "_hidden_params", None)
    return isinstance(hidden, dict) and bool(hidden.get(CACHE_HIT))


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = False
    ttl_s: int = 3600

    @classmethod
    def from_config(cls, config: ProxyConfig) -> CacheSettings:
        """The seed's `general_settings.cache: {ttl}` or LiteLLM's `litellm_settings.cache:
        true` with `cache_params: {ttl}`. The `type` (redis, ...) is read as DynamoDB here."""
        seed = (config.general_settings.model_extra or {}).get("cache")
        params = config.litellm_settings.get("cache_params")
        params = params if isinstance(params, dict) else {}
        if not (isinstance(seed, dict) or seed is True or config.litellm_settings.get("cache")):
            return cls()
        seed_ttl = seed.get("ttl") if isinstance(seed, dict) else None
        return cls(True, int(seed_ttl or params.get("ttl") or cls.ttl_s))


@dataclass(frozen=True)
class CacheControl:
    """A request's own `cache` field (LiteLLM's): `no-cache` skips the lookup, `no-store`
    the write, and `ttl` sets this answer's lifetime."""

    lookup: bool
    store: bool
    ttl_s: int

    @classmethod
    def of(cls, body: dict[str, Any], settings: CacheSettings) -> CacheControl:
        control = body.get("cache") or {}
        if not isinstance(control, dict):
            raise invalid_request(
                '\'cache\' must be an object such as {"no-cache": true, "ttl": 600}.',
                param="cache",
                code="invalid_cache_control",
            )
        ttl = control.get("ttl", control.get("s-maxage", settings.ttl_s))
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL_S:
            raise invalid_request(
                f"'cache.ttl' must be a positive number of seconds, at most {MAX_TTL_S}.",
                param="cache.ttl",
                code="invalid_cache_control",
            )
        cacheable = settings.enabled and not body.get("n", 1) > 1
        return cls(
            lookup=cacheable and not control.get("no-cache"),
            store=cacheable and not control.get("no-store"),
            ttl_s=int(ttl),
        )


def cache_key(model: str, body: dict[str, Any]) -> str:
    content = {k: v for k, v in body.items() if k not in NOT_IN_KEY and k != "model"}
    canonical = json.dumps({"model": model, **content}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def replayed_stream(response: litellm.ModelResponse) -> AsyncIterator[Any]:
    """A cached answer as the chunks of a stream: the message, then the finish and usage."""
    choice = response.choices[0]
    message = choice.message
    delta: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
    if message.tool_calls:
        delta["tool_calls"] = [
            {**call.model_dump(), "index": index} for index, call in enumerate(message.tool_calls)
        ]
    base = {"id": response.id, "created": response.created, "model": response.model}
    yield litellm.ModelResponseStream(**base, choices=[{"index": 0, "delta": delta}])
    yield litellm.ModelResponseStream(
        **base,
        choices=[{"index": 0, "delta": {}, "finish_reason": choice.finish_reason or "stop"}],
        usage=getattr(response, "usage", None),
    )
