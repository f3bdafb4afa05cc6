"""After-response work: what a request leaves to run once its answer is sent (the usage item,
the counters' settlement, the cache and stored-response writes).

Each HTTP request gets an `AfterResponse`; the pipeline adds work to it and the request
middleware runs it once the response is out: on threads of its own under uvicorn, or in the
Lambda extension (`lambda_extension.AfterResponseExtension`), which keeps the environment
thawed until it is done. Work added after that has run (a stream cut by a hang-up finishes its
metering late) runs at once, on the same threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llm_proxy.logs import logger

Work = Callable[[], object]

# Threads of their own, so that a slow table delays only this work, never the worker-thread
# calls of the requests being served.
AFTER_RESPONSE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-response")

# Futures in flight that nothing else references (the loop keeps only weak references): a
# stream's shielded finish, late work. Each is held until done.
_IN_FLIGHT: set[asyncio.Future[Any]] = set()


def hold[T](future: asyncio.Future[T]) -> asyncio.Future[T]:
    """Keep `future` referenced until it is done; a failure nobody awaited is logged."""
    _IN_FLIGHT.add(future)
    future.add_done_callback(_released)
    return future


def in_flight() -> frozenset[asyncio.Future[Any]]:
    return frozenset(_IN_FLIGHT)


def _released(future: asyncio.Future[Any]) -> None:
    _IN_FLIGHT.discard(future)
    if not future.cancelled() and future.exception() is not None:
        logger.error("work after the response failed", exc_info=future.exception())


class AfterResponse:
    """The work one request leaves for after its response."""

    def __init__(self) -> None:
        self._work: list[Work] = []
        self._closed = False

    def add(self, work: Work) -> None:
        if not self._closed:
            self._work.append(work)
            return
        hold(asyncio.get_running_loop().run_in_executor(AFTER_RESPONSE_THREADS, work))

    def close(self) -> Iterator[Work]:
        """The work added so far, then any added while it runs; later work runs at once."""
        while self._work:
            yield self._work.pop(0)
        self._closed = True


async def run_here(work: Work) -> None:
    """Run one piece of work on the after-response threads; a failure is logged."""
    try:
        await asyncio.get_running_loop().run_in_executor(AFTER_RESPONSE_THREADS, work)
    except Exception:
        logger.exception("work after the response failed")
