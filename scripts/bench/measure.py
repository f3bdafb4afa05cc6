"""What the gateway bench measures with the gateway warm: its added latency against a direct
call to the same upstream, litellm's own SDK overhead for comparison, CPU per request and the
usage write alone; and every figure together, cold init and size included (`cold.py`)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from devstack.stats import ratio, summary
from scripts.bench.cold import measure_size_and_cold_init
from scripts.bench.stack import MESSAGES, MODEL, Stack

TARGETS = {
    "added_median_vs_litellm_overhead": 2.0,
    "init_time_vs_bare_import": 1.1,
    "init_rss_vs_bare_import": 1.2,
    "size_mb": 150.0,
}


# --- 1 and 3: warm added latency and CPU per request ----------------------------------------


def _chat_body() -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES}


def _timed_loop(client: httpx.Client, url: str, key: str, count: int) -> tuple[list[float], float]:
    """`count` sequential chat completions: per-request latency (ms) and process CPU (s)."""
    headers = {"Authorization": f"Bearer {key}"}
    body = _chat_body()
    samples: list[float] = []
    cpu_started = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        response = client.post(url, json=body, headers=headers)
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or not response.json().get("choices"):
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
        samples.append(elapsed * 1000)
    return samples, time.process_time() - cpu_started


@contextmanager
def _metering_inline(gateway: Any) -> Iterator[None]:
    """The gateway writing each usage item before its response, as it does in Lambda."""
    saved = gateway.meter_after_response
    gateway.meter_after_response = False
    try:
        yield
    finally:
        gateway.meter_after_response = saved


def _added(gateway: Mapping[str, float], direct: Mapping[str, float]) -> dict[str, float]:
    return {stat: gateway[stat] - direct[stat] for stat in ("median", "p99")}


def measure_latency(stack: Stack, requests: int, warmup: int) -> dict[str, Any]:
    direct_url = f"{stack.upstream_url}/v1/chat/completions"
    gateway_url = f"{stack.gateway_url}/v1/chat/completions"
    inline: list[float] = []
    with httpx.Client(timeout=30.0) as client:
        _timed_loop(client, direct_url, stack.upstream_key, warmup)
        _timed_loop(client, gateway_url, stack.master_key, warmup)
        direct, direct_cpu_s = _timed_loop(client, direct_url, stack.upstream_key, requests)
        gateway, gateway_cpu_s = _timed_loop(client, gateway_url, stack.master_key, requests)
        if stack.gateway is not None and stack.gateway.meter_after_response:
            with _metering_inline(stack.gateway):
                _timed_loop(client, gateway_url, stack.master_key, warmup)
                inline, _ = _timed_loop(client, gateway_url, stack.master_key, requests)
    direct_stats, gateway_stats = summary(direct), summary(gateway)
    latency: dict[str, Any] = {
        "direct": direct_stats,
        "gateway": gateway_stats,
        "added": _added(gateway_stats, direct_stats),
    }
    if inline:
        # The usage write in the client's wait, as in Lambda (after the loop above: the
        # emulated table is larger by then, and moto's transactions slow down as it grows).
        latency["gateway_usage_before_response"] = summary(inline)
        latency["added_usage_before_response"] = _added(summary(inline), direct_stats)
    return {
        "latency_ms": latency,
        "cpu_ms_per_request": {
            "gateway_loop": gateway_cpu_s * 1000 / requests,
            "direct_loop": direct_cpu_s * 1000 / requests,
            "note": "process CPU over each loop / N; includes the client, the upstream double "
            "but not the moto server, which runs in its own process",
        },
    }


def measure_usage_write(stack: Stack, requests: int, warmup: int) -> dict[str, float]:
    """One usage item written to the local DynamoDB the way the gateway writes it (a
    TransactWriteItems), timed alone: the share of the added latency that the emulated write
    accounts for where it is made before the response (real DynamoDB costs a network round
    trip; moto copies the whole table for each transaction, so its cost grows with the table)."""
    import boto3
    from llm_proxy.accounting.usage import UsageRecord, UsageStore

    session = boto3.session.Session()
    table = session.resource(
        "dynamodb",
        endpoint_url=stack.api_env["AWS_ENDPOINT_URL"],
        region_name=stack.api_env["AWS_REGION"],
        aws_access_key_id=stack.api_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.api_env["AWS_SECRET_ACCESS_KEY"],
    ).Table(stack.api_env["LLM_PROXY__USAGE_TABLE"])
    store = UsageStore(table.name, 90)
    samples: list[float] = []
    written: list[dict[str, Any]] = []
    for index in range(warmup + requests):
        record = UsageRecord(
            request_id=f"bench-write-{index}",
            endpoint="/v1/chat/completions",
            key_id="master",
            model_requested=MODEL,
            model_group=MODEL,
            provider="openai",
            prompt_tokens=8,
            completion_tokens=5,
            cost_usd=0.0000115,
            latency_ms=3.5,
        )
        item = record.to_item(90)
        started = time.perf_counter()
        store.store(item)
        if index >= warmup:
            samples.append((time.perf_counter() - started) * 1000)
        written.append(item)
    # Synthetic items must not show up in usage totals read from the same table later.
    key_names = [key["AttributeName"] for key in table.key_schema]
    with table.batch_writer() as batch:
        for item in written:
            batch.delete_item(Key={name: item[name] for name in key_names})
    return summary(samples)


# --- 2: litellm's own SDK overhead ----------------------------------------------------------


async def _litellm_samples(stack: Stack, requests: int, warmup: int) -> dict[str, list[float]]:
    import litellm

    api_base = f"{stack.upstream_url}/v1"
    url = f"{api_base}/chat/completions"
    headers = {"Authorization": f"Bearer {stack.upstream_key}"}
    body = _chat_body()

    async with httpx.AsyncClient(timeout=30.0) as client:

        async def direct() -> None:
            response = await client.post(url, json=body, headers=headers)
            response.raise_for_status()
            response.json()

        async def sdk() -> None:
            await litellm.acompletion(
                model=f"openai/{MODEL}",
                api_base=api_base,
                api_key=stack.upstream_key,
                messages=MESSAGES,
            )

        samples: dict[str, list[float]] = {"direct": [], "litellm": []}
        try:
            for name, call in (("direct", direct), ("litellm", sdk)):
                for _ in range(warmup):
                    await call()
                for _ in range(requests):
                    started = time.perf_counter()
                    await call()
                    samples[name].append((time.perf_counter() - started) * 1000)
        finally:
            await _stop_litellm_logging_worker()
        return samples


async def _stop_litellm_logging_worker() -> None:
    # litellm's logging worker is one process-wide task bound to the loop that last used it;
    # stop it before this loop closes, or a task of a closed loop is left behind.
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await GLOBAL_LOGGING_WORKER.flush()
    await GLOBAL_LOGGING_WORKER.stop()


def measure_litellm_overhead(stack: Stack, requests: int, warmup: int) -> dict[str, Any]:
    # A private loop rather than asyncio.run, which would also clear this thread's current
    # loop, one that an embedding program (a Mangum handler, say) may still hold tasks on.
    loop = asyncio.new_event_loop()
    try:
        samples = loop.run_until_complete(_litellm_samples(stack, requests, warmup))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    direct, sdk = summary(samples["direct"]), summary(samples["litellm"])
    return {
        "direct_async": direct,
        "acompletion": sdk,
        "overhead": {
            "median": sdk["median"] - direct["median"],
            "p99": sdk["p99"] - direct["p99"],
        },
    }


# --- all figures ----------------------------------------------------------------------------


def measure(
    stack: Stack, requests: int, warmup: int = 20, cold_runs: int = 3, skip_size: bool = False
) -> dict[str, Any]:
    """Every figure, as the JSON document the bench writes."""
    results: dict[str, Any] = {
        "config": {
            "requests": requests,
            "warmup": warmup,
            "cold_runs": cold_runs,
            "python": sys.version.split()[0],
            "litellm": _version("litellm"),
            "cpus": os.cpu_count(),
        },
        "targets": TARGETS,
    }
    results["litellm_overhead_ms"] = measure_litellm_overhead(stack, requests, warmup)
    results.update(measure_latency(stack, requests, warmup))
    results["usage_write_ms"] = measure_usage_write(stack, requests, warmup)
    results["ratio_added_to_litellm_overhead"] = ratio(
        results["latency_ms"]["added"]["median"],
        results["litellm_overhead_ms"]["overhead"]["median"],
    )
    # Requests that reached the double: every loop's, if nothing answered in its place.
    results["upstream_requests"] = len(stack.upstream.requests)
    results.update(measure_size_and_cold_init(stack, cold_runs, skip_size))
    return results


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
