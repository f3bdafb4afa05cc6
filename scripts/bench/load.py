"""The load the gateway bench puts on its targets: chat completions, JSON or streamed, from
asyncio workers, interleaved between targets so that drift of the machine touches all alike."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from devstack.processes import cpu_s
from devstack.stats import summary

MODEL = "gpt-3.5-turbo"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Say hello in one sentence."}]
# Requests each worker makes per turn of a target at concurrency above 1: enough for the
# workers to overlap, few enough that the targets take turns often.
TURN_PER_WORKER = 2
# The pause after each turn of a target: the gateway writes usage after answering (and moto
# serves it), so without it the next target would share the CPU with that write. At
# concurrency 1 with the pause, a turn is one request: one agent's sequential calls.
IDLE_GAP_S = 0.02
# At concurrency 1 back to back, the requests in a turn: each follows the one before with no
# pause, as a busy process serves them, so the after-response work of one request lands on
# the next request of the same target (not on another target's turn).
BACK_TO_BACK_RUN = 10


@dataclass(frozen=True)
class Target:
    """Something that answers OpenAI's chat completions: the upstream itself or a gateway."""

    name: str
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # Its server process, where the bench reads CPU time and memory from.
    pid: int | None = None


def body(stream: bool) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **({"stream": True} if stream else {})}


async def call(client: httpx.AsyncClient, target: Target, stream: bool) -> float:
    """One chat completion, read to its end; its latency in ms."""
    started = time.perf_counter()
    if stream:
        async with client.stream(
            "POST", target.endpoint, json=body(True), headers=dict(target.headers)
        ) as response:
            content = await response.aread()
        complete = b"data: [DONE]" in content
    else:
        response = await client.post(target.endpoint, json=body(False), headers=target.headers)
        content = response.content
        complete = b'"choices"' in content
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or not complete:
        raise RuntimeError(f"{target.name} answered {response.status_code}: {content[:300]!r}")
    return elapsed


async def turn(
    client: httpx.AsyncClient, target: Target, stream: bool, concurrency: int, count: int
) -> list[float]:
    """`count` requests to `target` from `concurrency` workers; the latencies."""
    samples: list[float] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            samples.append(await call(client, target, stream))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def client(concurrency: int, targets: int) -> httpx.AsyncClient:
    pool = concurrency * targets + 4
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    return httpx.AsyncClient(timeout=60.0, limits=limits)


def _cpu(pids: Mapping[str, int | None]) -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in pids.items() if pid is not None}


async def interleaved(
    targets: Sequence[Target],
    *,
    stream: bool,
    concurrency: int,
    requests: int,
    warmup: int,
    extra_pids: Mapping[str, int | None] | None = None,
    back_to_back: bool = False,
) -> dict[str, Any]:
    """About `requests` requests per target, the targets taking turns (each turn starts with
    the next target), at `concurrency`, with IDLE_GAP_S between turns. At concurrency 1 a turn
    is one request (the pause after each), or BACK_TO_BACK_RUN of them with `back_to_back`;
    above 1 the workers' requests in a turn are back to back anyway. Returns each target's
    latency summary, and the CPU each process (the targets' and `extra_pids`) used per request
    of its target."""
    if concurrency > 1:
        per_turn = concurrency * TURN_PER_WORKER
    else:
        per_turn = BACK_TO_BACK_RUN if back_to_back else 1
    turns = math.ceil(requests / per_turn)
    samples: dict[str, list[float]] = {target.name: [] for target in targets}
    pids = {target.name: target.pid for target in targets} | dict(extra_pids or {})
    async with client(concurrency, len(targets)) as http:
        for target in targets:
            await turn(http, target, stream, concurrency, max(warmup, concurrency))
        cpu_before = _cpu(pids)
        for index in range(turns):
            shift = index % len(targets)
            for target in [*targets[shift:], *targets[:shift]]:
                samples[target.name] += await turn(http, target, stream, concurrency, per_turn)
                await asyncio.sleep(IDLE_GAP_S)
        cpu_after = _cpu(pids)
    served = turns * per_turn
    return {
        "concurrency": concurrency,
        "stream": stream,
        # Whether a target's requests followed each other with no pause (see BACK_TO_BACK_RUN).
        "back_to_back": concurrency > 1 or back_to_back,
        "requests": served,
        "latency_ms": {name: summary(values) for name, values in samples.items()},
        # Process CPU over the measured turns / the requests its target served.
        "cpu_ms_per_request": {
            name: (cpu_after[name] - cpu_before[name]) * 1000 / served for name in cpu_after
        },
    }


def run(coroutine: Any) -> Any:
    """Run a coroutine on a private loop (asyncio.run would also clear this thread's current
    loop, one an embedding program may still hold tasks on)."""
    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(coroutine)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        return result
    finally:
        loop.close()
