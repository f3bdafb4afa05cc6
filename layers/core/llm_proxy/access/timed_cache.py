"""What one container remembers of the keys table for a while (keys, teams, users, and when it
last wrote a key's `last_active`): a map bounded in size, the oldest entry dropped first, each
entry fresh for as long as its reader says. Known and unknown names alike are kept, so a caller
trying names at random costs a read each, never unbounded memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TimedCache[Value]:
    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Value | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, ttl_s: float) -> tuple[bool, Value | None]:
        """(fresh, the value) where it was put less than `ttl_s` ago; else (False, None)."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or time.monotonic() - entry[0] > ttl_s:
            return False, None
        return True, entry[1]

    def put(self, name: str, value: Value | None) -> None:
        with self._lock:
            self._put(name, value, time.monotonic())

    def claim(self, name: str, every_s: float) -> bool:
        """Whether `name` was put `every_s` ago or more (or never), in which case it is put now:
        one caller at a time gets True."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and now - entry[0] < every_s:
                return False
            self._put(name, None, now)
        return True

    def pop(self, *names: str | None) -> None:
        with self._lock:
            for name in names:
                if name:
                    self._entries.pop(name, None)

    def _put(self, name: str, value: Value | None, at: float) -> None:
        self._entries[name] = (at, value)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
