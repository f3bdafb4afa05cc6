"""The pipeline's cache step: the opt-in response cache, exact-match chat completions and
Responses API answers in DynamoDB (`store.answer_cache`), expired by TTL.

The key is a hash of the model, the messages and the generation parameters, never of the
caller's key, so agents asking the same thing share an answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llm_proxy.config import ProxyConfig
from llm_proxy.errors import INVALID_CACHE_CONTROL

# Parameters that change how an answer is delivered, billed or kept, not what it says (a
# `previous_response_id` is in the key as the conversation it names).
NOT_IN_KEY = frozenset(
    {"stream", "stream_options", "user", "metadata", "cache", "store", "previous_response_id"}
)
CACHE_HIT_HEADER = "x-litellm-cache-hit"
MAX_TTL_S = 365 * 86_400


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
            raise INVALID_CACHE_CONTROL(
                '\'cache\' must be an object such as {"no-cache": true, "ttl": 600}.', param="cache"
            )
        ttl = control.get("ttl", control.get("s-maxage", settings.ttl_s))
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL_S:
            raise INVALID_CACHE_CONTROL(
                f"'cache.ttl' must be a positive number of seconds, at most {MAX_TTL_S}.",
                param="cache.ttl",
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
