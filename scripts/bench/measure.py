"""Every figure of the gateway bench, as the JSON document it writes:

- comparison: the gateway, the LiteLLM proxy and the Portkey gateway against direct calls to
  the same upstream, interleaved, at each concurrency (at 1 both with a pause after each
  request and back to back), JSON and streamed; added latency = target minus direct, and the
  gateway's against the references'; CPU per request of each process, moto's apart;
- dynamodb_item_bytes: the billed size of the usage and rollup items the comparison wrote;
- soak: the gateway over many requests, first against last, and its and moto's memory;
- usage_before_response: a second gateway that writes each usage item before answering, as
  both Lambda functions do, against the first (which writes after, as `make dev` does);
- usage_write_ms: the gateway's usage transaction alone against the local DynamoDB;
- litellm_overhead_ms: `litellm.acompletion` against a direct async call, in this process;
- cold_init, lambda_restore and size_mb (cold.py): lambda_restore is the first request of each
  path after a restore under the runtime client, from the built layers, against warm ones, in
  CPU time (lambda_restore.py);
- restore: the same through the Mangum handler in one process (restore.py).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from devstack.stats import ratio, summary
from scripts.bench.cold import measure_size_and_cold_init
from scripts.bench.lambda_bill import item_bytes
from scripts.bench.load import MESSAGES, MODEL, interleaved, run
from scripts.bench.references import LITELLM_PROXY, PORTKEY, Upstream, references
from scripts.bench.restore import measure_restore
from scripts.bench.soak import soak
from scripts.bench.stack import Stack

TARGETS: dict[str, Any] = {
    # Our added latency against the LiteLLM proxy's, same upstream, same run, per phase
    # (compare's names): with the pause, back to back, and at concurrency 8.
    "added_vs_litellm_proxy": {
        "c1_json": 0.35,
        "c1_back_to_back_json": 0.5,
        "c1_stream": 0.5,
        "c1_back_to_back_stream": 0.5,
        "c8_json": 0.4,
    },
    # The gateway process's CPU per request at concurrency 1, in ms: what Lambda bills.
    "gateway_cpu_ms_c1": {"json": 10.0, "stream": 18.0},
    # The soak's last-window median against its first.
    "soak_last_vs_first": 1.25,
    "soak_rss_growth_mb": 200.0,
    "init_time_vs_bare_import": 1.1,
    "init_rss_vs_bare_import": 1.2,
    # The first request after a SnapStart restore against a warm one, CPU time.
    "restore_first_vs_warm_cpu": 1.5,
    # 150 MB budget with at least 10 MB of margin.
    "size_mb": 140.0,
}


@dataclass(frozen=True)
class Plan:
    requests: int = 300
    warmup: int = 20
    concurrency: Sequence[int] = (1, 8)
    references: Sequence[str] = (LITELLM_PROXY, PORTKEY)
    soak: int = 5000
    cold_runs: int = 3
    restore_runs: int = 3
    skip_size: bool = False


def _added(latency: Mapping[str, Mapping[str, float]], name: str) -> dict[str, float]:
    return {stat: latency[name][stat] - latency["direct"][stat] for stat in ("median", "p99")}


def phase_name(concurrency: int, stream: bool, back_to_back: bool) -> str:
    """c1_json (with the pause), c1_back_to_back_json, c8_stream, ..."""
    mode = "_back_to_back" if back_to_back and concurrency == 1 else ""
    return f"c{concurrency}{mode}_{'stream' if stream else 'json'}"


def compare(stack: Stack, plan: Plan) -> dict[str, Any]:
    """Each phase: at concurrency 1 with the pause (one agent's sequential calls) and back to
    back (a busy process), and at each other concurrency; JSON and streamed."""
    upstream = Upstream(stack.upstream_url, stack.upstream_key)
    phases: dict[str, Any] = {}
    with references(plan.references, upstream, stack.master_key) as (others, status):
        targets = [stack.direct(), stack.target(), *others]
        loops = [
            (concurrency, back_to_back, stream)
            for concurrency in plan.concurrency
            for back_to_back in ((False, True) if concurrency == 1 else (False,))
            for stream in (False, True)
        ]
        for concurrency, back_to_back, stream in loops:
            phase = run(
                interleaved(
                    targets,
                    stream=stream,
                    concurrency=concurrency,
                    requests=plan.requests,
                    warmup=plan.warmup,
                    extra_pids={"moto": stack.aws.pid},
                    back_to_back=back_to_back,
                )
            )
            latency = phase["latency_ms"]
            phase["added_ms"] = {t.name: _added(latency, t.name) for t in targets[1:]}
            gateway = phase["added_ms"]["gateway"]["median"]
            phase["ratio_to"] = {
                name: ratio(gateway, added["median"])
                for name, added in phase["added_ms"].items()
                if name != "gateway"
            }
            phases[phase_name(concurrency, stream, back_to_back)] = phase
    return {"references": status, "phases": phases}


def measure_item_bytes(stack: Stack) -> dict[str, float]:
    """The size DynamoDB bills of the usage and rollup items the run wrote (median usage item,
    largest rollup): what a request's write units follow (lambda_bill.py)."""
    import boto3

    client = boto3.client(
        "dynamodb",
        endpoint_url=stack.aws.endpoint,
        region_name=stack.aws.region,
        aws_access_key_id=stack.aws.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.aws.env["AWS_SECRET_ACCESS_KEY"],
    )
    sizes: dict[str, list[int]] = {}
    for name, variable in (
        ("usage", "LLM_PROXY__USAGE_TABLE"),
        ("rollup", "LLM_PROXY__ROLLUPS_TABLE"),
    ):
        pages = client.get_paginator("scan").paginate(TableName=stack.env[variable])
        sizes[name] = [item_bytes(item) for page in pages for item in page["Items"]]
    return {"usage": statistics.median(sizes["usage"]), "rollup": float(max(sizes["rollup"]))}


def measure_soak(stack: Stack, requests: int) -> dict[str, Any]:
    assert stack.aws.pid is not None
    pids = {"gateway": stack.gateway.pid, "moto": stack.aws.pid}
    return dict(run(soak(stack.target(), stack.direct(), pids, requests)))


def measure_usage_before_response(stack: Stack, plan: Plan) -> dict[str, Any]:
    """The same requests against the gateway as `make dev` runs it (usage written after the
    response) and against one that writes before, as both Lambda functions do: ApiSettings reads
    AWS_LAMBDA_FUNCTION_NAME to tell it runs in Lambda."""
    with stack.another_gateway({"AWS_LAMBDA_FUNCTION_NAME": "llm-proxy-bench"}) as inline:
        targets = [stack.direct(), stack.target("after"), stack.target("before", inline)]
        phase = run(
            interleaved(
                targets,
                stream=False,
                concurrency=1,
                requests=plan.requests,
                warmup=plan.warmup,
                extra_pids={"moto": stack.aws.pid},
            )
        )
    latency = phase["latency_ms"]
    return {
        "latency_ms": latency,
        "added_ms": {"after": _added(latency, "after"), "before": _added(latency, "before")},
    }


def measure_usage_write(stack: Stack, requests: int, warmup: int) -> dict[str, float]:
    """The gateway's usage transaction (the item and its rollup) timed alone against the
    local DynamoDB, on a table as full as the run has made it."""
    from llm_proxy.accounting.usage import UsageRecord
    from llm_proxy.store.usage import UsageTable

    saved = dict(os.environ)
    os.environ.update(stack.aws.env)
    try:
        store = UsageTable(
            stack.env["LLM_PROXY__USAGE_TABLE"],
            90,
            rollups_table=stack.env.get("LLM_PROXY__ROLLUPS_TABLE"),
        )
        samples: list[float] = []
        for index in range(warmup + requests):
            record = UsageRecord(
                request_id=f"bench-write-{index}",
                endpoint="/v1/chat/completions",
                key_id="bench-write",
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
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return summary(samples)


async def _litellm_samples(stack: Stack, requests: int, warmup: int) -> dict[str, list[float]]:
    import litellm

    api_base = f"{stack.upstream_url}/v1"
    url = f"{api_base}/chat/completions"
    headers = {"Authorization": f"Bearer {stack.upstream_key}"}
    body = {"model": MODEL, "messages": MESSAGES}

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
            # litellm's logging worker is one process-wide task bound to the loop that last
            # used it; stop it before this loop closes.
            from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

            await GLOBAL_LOGGING_WORKER.flush()
            await GLOBAL_LOGGING_WORKER.stop()
        return samples


def measure_litellm_overhead(stack: Stack, requests: int, warmup: int) -> dict[str, Any]:
    samples = run(_litellm_samples(stack, requests, warmup))
    direct, sdk = summary(samples["direct"]), summary(samples["litellm"])
    return {
        "direct_async": direct,
        "acompletion": sdk,
        "overhead": {
            "median": sdk["median"] - direct["median"],
            "p99": sdk["p99"] - direct["p99"],
        },
    }


def measure(stack: Stack, plan: Plan) -> dict[str, Any]:
    """Every figure, as the JSON document the bench writes."""
    results: dict[str, Any] = {
        "config": {
            "requests": plan.requests,
            "warmup": plan.warmup,
            "concurrency": list(plan.concurrency),
            "soak": plan.soak,
            "cold_runs": plan.cold_runs,
            "restore_runs": plan.restore_runs,
            "python": sys.version.split()[0],
            "litellm": _version("litellm"),
            "cpus": os.cpu_count(),
        },
        "targets": TARGETS,
    }
    results["comparison"] = compare(stack, plan)
    results["dynamodb_item_bytes"] = measure_item_bytes(stack)
    results["soak"] = measure_soak(stack, plan.soak) if plan.soak > 0 else None
    results["usage_before_response"] = measure_usage_before_response(stack, plan)
    results["usage_write_ms"] = measure_usage_write(stack, plan.requests, plan.warmup)
    results["litellm_overhead_ms"] = measure_litellm_overhead(stack, plan.requests, plan.warmup)
    # Requests that reached the double: every loop's, if nothing answered in its place.
    results["upstream_requests"] = len(stack.upstream.requests)
    results.update(
        measure_size_and_cold_init(stack, plan.cold_runs, plan.skip_size, plan.restore_runs)
    )
    results["restore"] = measure_restore(stack, plan.cold_runs) if plan.cold_runs > 0 else None
    return results


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
