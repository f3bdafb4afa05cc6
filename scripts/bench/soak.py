"""The soak: many sequential requests to the gateway, each after a direct call to the same
upstream, with the resident memory of the gateway's and moto's processes sampled as it goes.
A stack that stays flat answers its last requests as fast as its first, and holds its memory."""

from __future__ import annotations

import statistics
from typing import Any

from devstack.processes import rss_mb
from devstack.stats import ratio
from scripts.bench.load import Target, call, client

WINDOW = 500
RSS_SAMPLES = 20


def window(requests: int) -> int:
    """How many requests the first and last medians take: 500, or a tenth of a short soak."""
    return max(1, min(WINDOW, requests // 10))


def _memory(pids: dict[str, int]) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in pids.items()}


async def soak(
    gateway: Target, direct: Target, pids: dict[str, int], requests: int
) -> dict[str, Any]:
    """`requests` gateway requests at concurrency 1 (JSON), each after a direct one; the
    medians of the first and last `window` of them and how each process's RSS moved."""
    latency: dict[str, list[float]] = {"gateway": [], "direct": []}
    every = max(1, requests // RSS_SAMPLES)
    memory: list[dict[str, float]] = [{"request": 0, **_memory(pids)}]
    async with client(1, 2) as http:
        for index in range(1, requests + 1):
            latency["direct"].append(await call(http, direct, False))
            latency["gateway"].append(await call(http, gateway, False))
            if index % every == 0 or index == requests:
                memory.append({"request": index, **_memory(pids)})
    size = window(requests)
    first = {name: statistics.median(values[:size]) for name, values in latency.items()}
    last = {name: statistics.median(values[-size:]) for name, values in latency.items()}
    added_first, added_last = first["gateway"] - first["direct"], last["gateway"] - last["direct"]
    return {
        "requests": requests,
        "window": size,
        "gateway_median_ms": {"first": first["gateway"], "last": last["gateway"]},
        "direct_median_ms": {"first": first["direct"], "last": last["direct"]},
        "ratio_last_to_first": ratio(last["gateway"], first["gateway"]),
        "added_median_ms": {"first": added_first, "last": added_last},
        "ratio_added_last_to_first": ratio(added_last, added_first),
        "rss_mb": {
            name: {
                "start": memory[0][name],
                "end": memory[-1][name],
                "max": max(sample[name] for sample in memory),
                "growth": memory[-1][name] - memory[0][name],
            }
            for name in pids
        },
        "rss_samples": memory,
    }
