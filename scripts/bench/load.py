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
# At concurrency 1, the pause after each request: the gateway writes usage after answering
# (and moto serves it), so without it the next target would share the CPU with that write.
IDLE_GAP_S = 0.02


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
) -> dict[str, Any]:
    """About `requests` requests per target, the targets taking turns (each turn starts with
    the next target), at `concurrency`. Returns each target's latency summary, and the CPU
    each process (the targets' and `extra_pids`) used per request of its target."""
    per_turn = 1 if concurrency == 1 else concurrency * TURN_PER_WORKER
    gap = IDLE_GAP_S if concurrency == 1 else 0.0
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
                await asyncio.sleep(gap)
        cpu_after = _cpu(pids)
    served = turns * per_turn
    return {
        "concurrency": concurrency,
        "stream": stream,
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
