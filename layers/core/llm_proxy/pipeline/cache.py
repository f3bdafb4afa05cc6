"""The pipeline's cache step: the opt-in response cache, exact-match chat completions and
Responses API answers in DynamoDB (`store.answer_cache`), expired by TTL.

The key is a hash of whose answers the request may share (its virtual key's, or its key's
team where the operator shares team-wide), the model, the messages and the generation
parameters, so one tenant never gets another's answer."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from llm_proxy.access.auth import Caller
from llm_proxy.config import ConfigError, ProxyConfig
from llm_proxy.errors import INVALID_CACHE_CONTROL

# Parameters that change how an answer is delivered or kept, not what it says nor what it
# echoes: a provider never sees `metadata` (the Responses answer carries the caller's own),
# is always asked to store nothing, and is sent the conversation a `previous_response_id`
# names, which is in the key as that conversation. `user` is echoed (Responses), so keyed.
NOT_IN_KEY = frozenset(
    {"stream", "stream_options", "metadata", "cache", "store", "previous_response_id"}
)
CACHE_HIT_HEADER = "x-litellm-cache-hit"
# Who shares answers: each virtual key (the master key is one caller of its own), or each
# key's team (`team_id`; a key without one shares with itself only).
SCOPES = ("key", "team")


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = False
    ttl_s: int = 3600
    scope: str = "key"

    @classmethod
    def from_config(cls, config: ProxyConfig) -> CacheSettings:
        """The seed's `general_settings.cache: {ttl, scope}` or LiteLLM's `litellm_settings.cache:
        true` with `cache_params: {ttl, scope}`. The `type` (redis, ...) is read as DynamoDB
        here."""
        seed = (config.general_settings.model_extra or {}).get("cache")
        params = config.litellm_settings.get("cache_params")
        params = params if isinstance(params, dict) else {}
        if not (isinstance(seed, dict) or seed is True or config.litellm_settings.get("cache")):
            return cls()
        seed = seed if isinstance(seed, dict) else {}
        scope = seed.get("scope") or params.get("scope") or cls.scope
        if scope not in SCOPES:
            where = (
                "general_settings.cache" if seed.get("scope") else "litellm_settings.cache_params"
            )
            raise ConfigError(f"{where}.scope: must be 'key' or 'team'; got {str(scope)[:40]!r}")
        return cls(True, int(seed.get("ttl") or params.get("ttl") or cls.ttl_s), str(scope))

    def owner(self, caller: Caller) -> str:
        """Whose cached answers a caller shares: its key's, or its key's team's."""
        key = caller.key
        if self.scope == "team" and key is not None and key.team_id:
            return f"team:{key.team_id}"
        return f"key:{caller.key_id}"


@dataclass(frozen=True)
class CacheControl:
    """A request's own `cache` field (LiteLLM's): `no-cache` skips the lookup, `no-store`
    the write, and `ttl` (or `s-maxage`) shortens this answer's lifetime; a longer one than
    the operator's is cut to it."""

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
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0:
            raise INVALID_CACHE_CONTROL(
                "'cache.ttl' must be a positive number of seconds.", param="cache.ttl"
            )
        cacheable = settings.enabled and not body.get("n", 1) > 1
        return cls(
            lookup=cacheable and not control.get("no-cache"),
            store=cacheable and not control.get("no-store"),
            ttl_s=math.ceil(min(ttl, settings.ttl_s)),
        )


def cache_key(model: str, body: dict[str, Any], owner: str) -> str:
    """The question's hash, within `owner`'s answers (`CacheSettings.owner`)."""
    content = {k: v for k, v in body.items() if k not in NOT_IN_KEY and k != "model"}
    canonical = json.dumps([owner, model, content], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
