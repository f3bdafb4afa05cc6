"""A long-running server's usage items, written in batches off the request path.

In `make dev` or a container, each request's usage item used to be one transaction on a
thread of its own right after the response, so a busy process paid for it during the next
request. Here a request only queues its record; one thread writes what has queued once the
oldest record has waited `wait_s` (or `MAX_RECORDS` are queued), as one transaction
(`UsageTable.write_many`): the items, and one update per rollup. Nothing is dropped: a batch
DynamoDB refuses is written record by record with the retries, dead letters and quarantine of
a single write, and what is still queued when the process exits is written before it does.
Lambda writes each request's item in its own invocation instead (`pipeline.meter.Metering`).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque

from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.logs import logger
from llm_proxy.store.usage import UsageTable

# Records per transaction: two actions each at most (an item, a rollup), within DynamoDB's
# 100 actions and 4 MB per transaction (a usage item is bounded to a few kilobytes).
MAX_RECORDS = 25


class UsageBatch:
    def __init__(self, usage: UsageTable, wait_s: float) -> None:
        self.usage = usage
        self.wait_s = wait_s
        self._queued: deque[tuple[float, UsageRecord]] = deque()
        self._ready = threading.Condition()
        # Held while a batch is written, so a flush at exit writes after it, never beside it.
        self._writing = threading.Lock()
        # The writer runs while records are queued, and ends when none are left.
        self._writer: threading.Thread | None = None
        _BATCHES.add(self)

    def submit(self, record: UsageRecord) -> None:
        with self._ready:
            self._queued.append((time.monotonic(), record))
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="usage-batch", daemon=True)
                self._writer.start()
            elif len(self._queued) >= MAX_RECORDS:
                self._ready.notify()

    def pending(self) -> int:
        with self._ready:
            return len(self._queued)

    def flush(self) -> None:
        """Write everything queued now, in this thread."""
        with self._writing:
            while batch := self._take():
                self._write(batch)

    def _run(self) -> None:
        while True:
            with self._ready:
                if not self._queued:
                    self._writer = None
                    return
                due = self._queued[0][0] + self.wait_s
                while len(self._queued) < MAX_RECORDS and (left := due - time.monotonic()) > 0:
                    self._ready.wait(left)
            with self._writing:
                if batch := self._take():
                    self._write(batch)

    def _take(self) -> list[UsageRecord]:
        with self._ready:
            count = min(len(self._queued), MAX_RECORDS)
            return [self._queued.popleft()[1] for _ in range(count)]

    def _write(self, batch: list[UsageRecord]) -> None:
        try:
            self.usage.write_many(batch)
        except Exception:
            # write_many keeps each record it cannot store (dead letters); this is anything else.
            logger.exception("usage batch failed", extra={"records": len(batch)})


_BATCHES: weakref.WeakSet[UsageBatch] = weakref.WeakSet()


@atexit.register
def flush_all() -> None:
    """What every batch still holds, written now: at the process's exit (daemon threads stop
    there), or sooner by a server that stops what the writes need (`make dev`'s local AWS)."""
    for batch in list(_BATCHES):
        batch.flush()
