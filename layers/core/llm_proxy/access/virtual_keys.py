"""Virtual keys: one per agent or team, each with its own models, limits and budget.

Only a key's SHA-256 (LiteLLM's `token`) is stored; the raw key is shown once, at generation
(or regeneration). The keys table (`store.keys.KeysTable`) is read on a warm container's cache
miss only (KEY_CACHE_TTL_S).

Regenerating a key gives it a new secret and keeps everything else: its item, its token (the
id its counters, spend and usage are kept under) and its settings. The item names the secret
that opens it (`secret`; the token itself until the first regeneration) and, for a grace
period, the one before (`previous_secret` until `previous_secret_until`)."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from llm_proxy.access.key_record import VirtualKey, duration_s, token_of
from llm_proxy.access.principals import SHARED_SETTINGS
from llm_proxy.access.timed_cache import TimedCache
from llm_proxy.errors import (
    DEPENDENCY_UNAVAILABLE,
    INVALID_API_KEY,
    KEY_ALIAS_TAKEN,
    KEY_NOT_FOUND,
    DomainError,
    ProxyError,
)
from llm_proxy.logs import logger
from llm_proxy.store.keys import POINTER, KeysTable

# How long a warm container trusts a key's metadata: a revoked or changed key takes effect
# within this many seconds on every container.
KEY_CACHE_TTL_S = 30.0
KEY_CACHE_SIZE = 10_000
# A key's `last_active` is written at most this often per key by one container: a conditional
# UpdateItem after the response, not a write per request.
LAST_ACTIVE_EVERY_S = 60.0
KEY_PREFIX = "sk-"
# A key's SHA-256 in hex, as stored.
TOKEN = re.compile(r"^[0-9a-f]{64}$")
# Fields an operator may set, with LiteLLM's names.
SETTABLE = (
    "key_alias",
    *SHARED_SETTINGS,
    "team_id",
    "expires",
    "aliases",
    "max_parallel_requests",
    "user_id",
    "tags",
    "model_max_budget",
    "budget_limits",
    "budget_fallbacks",
)

# The settings whose null means empty (or false).
EMPTY: dict[str, Any] = {
    "models": list,
    "metadata": dict,
    "aliases": dict,
    "tags": list,
    "blocked": bool,
    "model_max_budget": dict,
    "budget_limits": list,
    "budget_fallbacks": dict,
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """Virtual keys: authentication through this container's cache of the keys table, and
    their management (hashed keys with their limits; spend lives in the counters table)."""

    def __init__(self, table_name: str | None) -> None:
        self.table = KeysTable(table_name)
        self._cache: TimedCache[VirtualKey] = TimedCache(KEY_CACHE_SIZE)
        # When this container last wrote each key's `last_active`.
        self._touched: TimedCache[None] = TimedCache(KEY_CACHE_SIZE)

    @property
    def enabled(self) -> bool:
        return self.table.enabled

    # -- the request path ------------------------------------------------------------------

    def is_cached(self, raw_key: str) -> bool:
        """Whether `authenticate` can answer from this container's cache, without a read."""
        return not self.enabled or self._cache.get(token_of(raw_key), KEY_CACHE_TTL_S)[0]

    def authenticate(self, raw_key: str) -> VirtualKey:
        """The key's metadata, from this container's cache when fresh; 401 when unknown,
        blocked or expired (every key is unknown without a keys table)."""
        if not self.enabled:
            raise INVALID_API_KEY("Invalid API key.")
        secret = token_of(raw_key)
        fresh, key = self._cache.get(secret, KEY_CACHE_TTL_S)
        if not fresh:
            key = self._read(secret)
            self._cache.put(secret, key)
        if key is None:
            raise INVALID_API_KEY("Invalid API key.")
        if not key.opens(secret, time.time()):
            raise INVALID_API_KEY("This key has been regenerated: use its new key.")
        if key.blocked:
            raise INVALID_API_KEY("This key has been blocked.")
        if key.expired(time.time()):
            raise INVALID_API_KEY(f"This key expired at {key.expires}.")
        return key

    def used(self, token: str) -> bool:
        """Whether the key's `last_active` is due to be written (at most once a minute per key
        in this container); counts as written from now on."""
        return self._touched.claim(token, LAST_ACTIVE_EVERY_S)

    def touch(self, token: str) -> None:
        """Record the key's use now (after the response: a failure is only logged)."""
        try:
            self.table.touch(token, _now_iso())
        except Exception:
            logger.exception("the key's last_active write failed")

    def _read(self, token: str) -> VirtualKey | None:
        """The key this token or secret's SHA-256 names: a regenerated secret's item points to
        the key's."""
        try:
            item = self.table.get(token)
            if item and POINTER in item:
                item = self.table.get(str(item[POINTER]))
        except (ProxyError, DomainError):
            raise
        except Exception as exc:
            raise DEPENDENCY_UNAVAILABLE(
                f"The keys table cannot be read ({type(exc).__name__})."
            ) from None
        return VirtualKey.from_item(item) if item else None

    # -- management (master key only) ----------------------------------------------------

    def generate(self, fields: dict[str, Any]) -> tuple[str, VirtualKey]:
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        now = _now_iso()
        key = VirtualKey(
            token=token_of(raw),
            key_name=f"{raw[:5]}...{raw[-4:]}",
            created_at=now,
            updated_at=now,
        )
        self._apply(key, fields)
        self._alias_free(key)
        self.table.create(key.to_item())
        return raw, key

    def update(self, key_or_token: str, fields: dict[str, Any]) -> VirtualKey:
        key = self.get(key_or_token)
        self._apply(key, fields)
        if "key_alias" in fields:
            self._alias_free(key)
        key.updated_at = _now_iso()
        self.table.put(key.to_item())
        self._forget(key)
        return key

    def regenerate(
        self, key_or_token: str, fields: dict[str, Any], grace_s: int | None
    ) -> tuple[str, VirtualKey]:
        """The same key under a new secret, with `fields` applied: the old secret opens it for
        `grace_s` more seconds, or no longer. The new secret's item is written before the key
        names it, so a failure halfway leaves the old secret working and the new one unknown."""
        key = self.get(key_or_token)
        self._apply(key, fields)
        if "key_alias" in fields:
            self._alias_free(key)
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        retired = {key.secret or key.token, key.previous_secret}
        if grace_s:
            key.previous_secret = key.secret or key.token
            key.previous_secret_until = datetime.fromtimestamp(
                time.time() + grace_s, tz=UTC
            ).isoformat(timespec="seconds")
        else:
            key.previous_secret = key.previous_secret_until = None
        key.secret = token_of(raw)
        key.key_name = f"{raw[:5]}...{raw[-4:]}"
        key.updated_at = _now_iso()
        self.table.point(key.secret, key.token)
        self.table.put(key.to_item())
        # The items of secrets that no longer open the key (the key's own item stays).
        for secret in retired - key.secrets - {None}:
            self.table.delete(str(secret))
        self._forget(key, *retired)
        return raw, key

    def delete(self, keys_or_tokens: list[str]) -> list[str]:
        deleted = []
        for value in keys_or_tokens:
            named = self.resolve(value)
            if not TOKEN.match(named):
                continue
            # Managing keys requires the table: a 503 rather than "no such key".
            self.table.require()
            key = self._read(named)
            if key is None:
                continue
            # The key first: a secret's item left behind points to nothing.
            if self.table.delete(key.token):
                deleted.append(value)
            for secret in key.secrets - {key.token}:
                self.table.delete(secret)
            self._forget(key, named)
        return deleted

    def get(self, key_or_token: str) -> VirtualKey:
        token = self.resolve(key_or_token)
        key = None
        if TOKEN.match(token):
            # Managing keys requires the table: a 503 rather than "no such key".
            self.table.require()
            key = self._read(token)
        if key is None:
            raise KEY_NOT_FOUND("No such key.", param="key")
        return key

    def list(self) -> list[VirtualKey]:
        keys = [VirtualKey.from_item(item) for item in self.table.scan()]
        return sorted(keys, key=lambda key: key.created_at)

    def _alias_free(self, key: VirtualKey) -> None:
        """A key alias names one key, as LiteLLM requires (checked before the write, as LiteLLM
        does: key management is the operator's, not a race between callers)."""
        if not key.key_alias:
            return
        if any(token != key.token for token in self.table.tokens_with_alias(key.key_alias)):
            raise KEY_ALIAS_TAKEN(
                f"Key with alias '{key.key_alias}' already exists. Unique key aliases across all "
                "keys are required.",
                param="key_alias",
            )

    @staticmethod
    def resolve(key_or_token: str) -> str:
        """A raw key (sk-...) or its token: both name a key in the management API."""
        if key_or_token.startswith(KEY_PREFIX):
            return token_of(key_or_token)
        return key_or_token

    def _forget(self, key: VirtualKey, *also: str | None) -> None:
        """Drop this container's cached answers for every secret of the key."""
        self._cache.pop(*key.secrets, *also)

    @staticmethod
    def _apply(key: VirtualKey, fields: dict[str, Any]) -> None:
        for name in SETTABLE:
            if name in fields:
                value = fields[name]
                if value is None and name in EMPTY:
                    # LiteLLM's null for a list, a map or a flag: empty, unblocked.
                    value = EMPTY[name]()
                setattr(key, name, value)
        if "duration" in fields:
            seconds = duration_s(str(fields["duration"]), "duration") if fields["duration"] else 0
            key.expires = (
                datetime.fromtimestamp(time.time() + seconds, tz=UTC).isoformat(timespec="seconds")
                if seconds
                else None
            )
        if key.budget_duration:
            duration_s(key.budget_duration, "budget_duration")
        metadata = dict(key.metadata or {})
        for name in ("agent", "team"):
            if fields.get(name):
                metadata[name] = fields[name]
        key.metadata = metadata
