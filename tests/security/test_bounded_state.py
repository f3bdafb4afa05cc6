"""What an anonymous or unknown caller can make a container do stays bounded: the unknown-key
cache has a size, and readiness probes AWS at most once per interval."""

from __future__ import annotations

import pytest
from llm_proxy import readiness
from llm_proxy.access import virtual_keys
from llm_proxy.access.key_record import VirtualKey
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.errors import ProxyError
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.readiness import Readiness
from llm_proxy.settings import ApiSettings
from llm_proxy.store.usage import UsageTable


class CountingKeyStore(KeyStore):
    """The keys table holds no key; reads are counted."""

    def __init__(self) -> None:
        super().__init__("keys")
        self.reads = 0

    def _read(self, token: str) -> VirtualKey | None:
        self.reads += 1
        return None


def test_unknown_keys_do_not_grow_the_cache_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(virtual_keys, "KEY_CACHE_SIZE", 50)
    store = CountingKeyStore()
    for n in range(200):
        with pytest.raises(ProxyError):
            store.authenticate(f"sk-guess-{n}")
    assert store.reads == 200
    # The latest guesses are still known to be unknown; the first ones were let go.
    assert store.is_cached("sk-guess-199") and not store.is_cached("sk-guess-0")
    with pytest.raises(ProxyError):
        store.authenticate("sk-guess-0")
    assert store.reads == 201


class CountingSecret(ProviderKeys):
    def __init__(self) -> None:
        super().__init__("secret", 300)
        self.reads = 0

    def get(self, force: bool = False) -> dict[str, str]:
        self.reads += 1
        return {}


class CountingUsage(UsageTable):
    def __init__(self) -> None:
        super().__init__("usage", 90)
        self.pings = 0

    def ping(self) -> None:
        self.pings += 1
        raise RuntimeError("ResourceNotFoundException: no such table")


def test_readiness_probes_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(readiness.time, "monotonic", lambda: clock[0])
    secret, usage = CountingSecret(), CountingUsage()
    probe = Readiness(ApiSettings.of(secret_id="secret", usage_table="usage"), secret, usage)
    for _ in range(20):
        checks = probe.checks()
    assert (secret.reads, usage.pings) == (1, 1)
    assert checks == {"config": "ok", "secret": "ok", "usage_table": "unreachable"}
    assert "ResourceNotFound" not in str(checks)
    clock[0] += readiness.READINESS_TTL_S + 1
    probe.checks()
    assert (secret.reads, usage.pings) == (2, 2)
