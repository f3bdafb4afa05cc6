"""A container's timed memory of the keys table: fresh for its reader's TTL, bounded in size,
and claimed by one caller at a time."""

from __future__ import annotations

import time

from llm_proxy.access.timed_cache import TimedCache


def test_an_entry_is_fresh_for_the_readers_ttl_and_unknown_names_are_kept() -> None:
    cache: TimedCache[str] = TimedCache(10)
    assert cache.get("a", 30) == (False, None)
    cache.put("a", "key")
    cache.put("unknown", None)
    assert cache.get("a", 30) == (True, "key")
    assert cache.get("unknown", 30) == (True, None)
    time.sleep(0.02)
    assert cache.get("a", 0.01) == (False, None)
    cache.pop("a", None)
    assert cache.get("a", 30) == (False, None)


def test_the_oldest_entry_goes_first_past_the_size() -> None:
    cache: TimedCache[int] = TimedCache(2)
    for name, value in (("a", 1), ("b", 2), ("a", 3), ("c", 4)):
        cache.put(name, value)
    assert cache.get("b", 30) == (False, None)
    assert (cache.get("a", 30), cache.get("c", 30)) == ((True, 3), (True, 4))


def test_a_claim_holds_until_its_interval_has_passed() -> None:
    cache: TimedCache[None] = TimedCache(10)
    assert cache.claim("k", 0.05)
    assert not cache.claim("k", 0.05)
    time.sleep(0.06)
    assert cache.claim("k", 0.05)
