"""The key management API (`/key/*`, master key only), in LiteLLM's request and response
shapes: keys come back with their limits, spend and what is left of the budget."""

from __future__ import annotations

from typing import Any

from llm_proxy.access.virtual_keys import KeyStore, VirtualKey
from llm_proxy.json_bodies import refuse_non_finite, refuse_unencodable_text
from llm_proxy.store.counters import CountersTable


class KeyAdmin:
    def __init__(self, store: KeyStore, counters: CountersTable) -> None:
        self.store = store
        self.counters = counters

    def generate(self, fields: dict[str, Any]) -> dict[str, Any]:
        checked(fields)
        raw, key = self.store.generate(fields)
        # The only time the raw key is ever shown.
        return {"key": raw, **key.public()}

    def update(self, fields: dict[str, Any]) -> dict[str, Any]:
        checked(fields)
        key = self.store.update(fields.pop("key"), fields)
        return {"key": key.token, "info": self._info(key)}

    def delete(self, keys: list[str]) -> dict[str, Any]:
        return {"deleted_keys": self.store.delete(keys)}

    def info(self, key_or_token: str) -> dict[str, Any]:
        key = self.store.get(key_or_token)
        return {"key": key.token, "info": self._info(key)}

    def list(self, full: bool) -> dict[str, Any]:
        keys = self.store.list()
        listed: list[Any] = [self._info(key) for key in keys] if full else [k.token for k in keys]
        return {"keys": listed, "total_count": len(keys)}

    def _info(self, key: VirtualKey) -> dict[str, Any]:
        spend = self.counters.spend(key)
        remaining = None if key.max_budget is None else max(key.max_budget - spend, 0.0)
        return {**key.public(), "spend": spend, "remaining_budget": remaining}


def checked(fields: dict[str, Any]) -> None:
    """A key's fields are stored as sent: text a table can hold, finite numbers."""
    refuse_unencodable_text(fields)
    refuse_non_finite(fields)
