"""The work a request leaves for after its response runs once the response is done, and work
left after that (a stream cut by a hang-up finishes its metering late) still runs."""

from __future__ import annotations

import asyncio

from llm_proxy import after_response
from llm_proxy.after_response import AfterResponse


def test_work_left_before_and_after_the_response_all_runs() -> None:
    ran: list[str] = []

    async def serve() -> None:
        later = AfterResponse()
        later.add(lambda: ran.append("first"))
        for work in later.close():
            work()
            if len(ran) == 1:
                # Left while the earlier work runs: still part of this round.
                later.add(lambda: ran.append("during"))
        assert ran == ["first", "during"]
        later.add(lambda: ran.append("late"))
        pending = set(after_response.in_flight())
        assert pending, "late work is held until it is done"
        await asyncio.wait(pending)

    asyncio.run(serve())
    assert ran == ["first", "during", "late"]
