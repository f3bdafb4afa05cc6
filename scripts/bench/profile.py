"""Where the gateway's time goes under the bench's load. The gateway of `make dev`'s stack
serves sequential chat completions (JSON, then streamed) under cProfile, started after its
warm-up and stopped before it shuts down; its time is then split by the package whose code
ran, the standard library and C calls counted to the package that made them, and listed for
the calls that matter.

The usage write is left out of that profile (no usage table): it runs in a worker thread,
and cProfile on Python 3.12 mixes the threads' call stacks. It is profiled apart, in this
process: the gateway's transaction (usage item and rollup), written as the gateway writes it.

    python -m scripts.bench.profile [--requests N] [--output build/profile/gateway.prof]

Open a profile with any pstats viewer (`python -m pstats FILE`, snakeviz, ...).
Under the profiler every call costs more: read the shares, not the absolute figures.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from scripts.bench.load import Target, run, turn
from scripts.bench.load import client as http_client
from scripts.bench.stack import Stack, bench_stack

# Package -> the part of the request path it stands for; the first match of the path wins.
PARTS: tuple[tuple[str, str], ...] = (
    ("/llm_proxy/", "llm_proxy (ours)"),
    ("/functions/api/", "llm_proxy (ours)"),
    ("/litellm/", "litellm"),
    ("/openai/", "openai SDK (litellm's client)"),
    ("/httpx/", "httpx, httpcore (upstream client)"),
    ("/httpcore/", "httpx, httpcore (upstream client)"),
    ("/aiohttp/", "aiohttp (upstream client)"),
    ("/uvicorn/", "uvicorn, h11 (HTTP server)"),
    ("/h11/", "uvicorn, h11 (HTTP server)"),
    ("/starlette/", "FastAPI, Starlette"),
    ("/fastapi/", "FastAPI, Starlette"),
    ("/pydantic", "pydantic"),
    ("/botocore/", "boto3, botocore"),
    ("/boto3/", "boto3, botocore"),
    ("/urllib3/", "boto3, botocore"),
    ("/aws_lambda_powertools/", "Powertools (logs, metrics)"),
    ("/asyncio/", "asyncio (event loop)"),
    ("/anyio/", "anyio"),
)
# Builtins that wait rather than work: the event loop's poll, idle threads.
# A blocking socket read is a wait for the other side's answer (boto3 waiting for DynamoDB).
WAITING = ("'poll' of", "acquire", "time.sleep", "'select' of", "'recv_into' of")
# The calls whose cumulative time the report lists: (path suffix, function name or "").
KEY_CALLS: tuple[tuple[str, str], ...] = (
    ("llm_proxy/http/middleware.py", "__call__"),
    ("llm_proxy/pipeline/pipeline.py", "run"),
    ("llm_proxy/gateway.py", "authenticate"),
    ("llm_proxy/pipeline/validate.py", "validate_request"),
    ("llm_proxy/pipeline/provider_call.py", "call_provider"),
    ("llm_proxy/pipeline/meter.py", ""),
    ("llm_proxy/pipeline/streams.py", ""),
    ("llm_proxy/pipeline/chat.py", ""),
    ("llm_proxy/store/usage.py", "write"),
    ("llm_proxy/accounting/metrics.py", ""),
    ("llm_proxy/logs.py", ""),
    ("litellm/router.py", "acompletion"),
    ("litellm/router.py", "_acompletion"),
    ("litellm/main.py", "acompletion"),
    ("litellm/utils.py", "function_setup"),
    ("litellm/utils.py", "wrapper_async"),
    ("litellm/litellm_core_utils/litellm_logging.py", "__init__"),
    ("litellm/litellm_core_utils/litellm_logging.py", "update_environment_variables"),
    ("litellm/litellm_core_utils/litellm_logging.py", "pre_call"),
    ("litellm/litellm_core_utils/litellm_logging.py", "_success_handler_helper_fn"),
    ("litellm/litellm_core_utils/litellm_logging.py", "success_handler"),
    ("litellm/litellm_core_utils/litellm_logging.py", "async_success_handler"),
    ("litellm/litellm_core_utils/litellm_logging.py", "get_standard_logging_object_payload"),
    ("litellm/cost_calculator.py", "response_cost_calculator"),
    ("litellm/cost_calculator.py", "completion_cost"),
    ("litellm/litellm_core_utils/streaming_handler.py", "__anext__"),
    ("litellm/litellm_core_utils/streaming_handler.py", "chunk_creator"),
    ("litellm/llms/openai/openai.py", "acompletion"),
    ("litellm/llms/openai/openai.py", "make_openai_chat_completion_request"),
    ("litellm/litellm_core_utils/logging_worker.py", ""),
    ("openai/_base_client.py", "request"),
    ("fastapi/routing.py", "app"),
    ("uvicorn/protocols/http/h11_impl.py", "handle_events"),
)

Key = tuple[str, int, str]
Stats = Mapping[Key, tuple[int, int, float, float, Mapping[Key, Any]]]


def _part(key: Key) -> str | None:
    """The package part a function belongs to; None for the standard library and C."""
    filename, _, function = key
    if filename == "~":
        return "waiting" if any(word in function for word in WAITING) else None
    for marker, part in PARTS:
        if marker in filename:
            return part
    return None


def attribute(stats: Stats) -> dict[str, float]:
    """Self time by part; a standard-library or C function's time goes to the parts that
    called it, in proportion to the time each call edge took."""

    @cache
    def owners(key: Key, depth: int = 0) -> tuple[tuple[str, float], ...]:
        part = _part(key)
        if part is not None:
            return ((part, 1.0),)
        callers = stats[key][4] if key in stats else {}
        total = sum(edge[3] for edge in callers.values())
        if depth > 12 or not callers or total <= 0:
            return (("standard library, unattributed", 1.0),)
        shares: dict[str, float] = defaultdict(float)
        for caller, edge in callers.items():
            for owner, share in owners(caller, depth + 1):
                shares[owner] += share * edge[3] / total
        return tuple(shares.items())

    by_part: dict[str, float] = defaultdict(float)
    for key, (_, _, self_time, _, _) in stats.items():
        for owner, share in owners(key):
            by_part[owner] += self_time * share
    return dict(by_part)


def breakdown(stats: Stats, requests: int) -> list[str]:
    """The report: time by part, and the key calls' cumulative time, per request."""
    by_part = attribute(stats)
    working = sum(value for part, value in by_part.items() if part != "waiting")
    lines = [
        f"time by part, ms per request ({requests} requests; standard library and C calls "
        "counted to their callers; waiting left out)"
    ]
    for part, value in sorted(by_part.items(), key=lambda item: -item[1]):
        if part != "waiting":
            share = value / working * 100 if working else 0.0
            lines.append(f"  {part:<44} {value * 1000 / requests:8.2f}  {share:5.1f}%")
    lines.append(f"  {'total':<44} {working * 1000 / requests:8.2f}")
    lines += ["", "cumulative time of key calls, ms per request (calls per request)"]
    for path, name in KEY_CALLS:
        matches = [
            (key, value)
            for key, value in stats.items()
            if key[0].endswith(path) and (not name or key[2] == name)
        ]
        for (filename, line, function), (_, calls, _, cumulative, _) in sorted(
            matches, key=lambda item: -item[1][3]
        )[:3]:
            where = filename.split("site-packages/")[-1].split("layers/core/")[-1]
            lines.append(
                f"  {cumulative * 1000 / requests:8.2f}  ({calls / requests:5.2f})  "
                f"{function}  {where}:{line}"
            )
    return lines


async def _load(target: Target, requests: int, stream: bool) -> None:
    async with http_client(1, 1) as http:
        for _ in range(requests):
            await turn(http, target, stream, 1, 1)


def _wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or path.stat().st_size == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway wrote no profile to {path}")
        time.sleep(0.1)
    time.sleep(0.5)


def profile_gateway(stack: Stack, profile: Path, requests: int, warmup: int) -> dict[str, Path]:
    """One profile per kind of request, JSON and streamed; the gateway writes each to
    `profile`, and each is moved beside it under its kind's name."""
    written: dict[str, Path] = {}
    for kind, stream in (("json", False), ("stream", True)):
        profile.unlink(missing_ok=True)
        run(_load(stack.target(), warmup, stream))
        os.kill(stack.gateway.pid, signal.SIGUSR1)
        time.sleep(0.5)
        run(_load(stack.target(), requests, stream))
        os.kill(stack.gateway.pid, signal.SIGUSR2)
        _wait_for(profile)
        written[kind] = profile.rename(profile.with_name(f"{profile.stem}-{kind}{profile.suffix}"))
    return written


def profile_usage_write(stack: Stack, output: Path, requests: int) -> Path:
    """The gateway's usage transaction (item and rollup) from this process, under cProfile."""
    from llm_proxy.accounting.usage import UsageRecord
    from llm_proxy.store.usage import UsageTable

    os.environ.update(stack.aws.env)
    store = UsageTable(
        stack.env["LLM_PROXY__USAGE_TABLE"], 90, rollups_table=stack.env["LLM_PROXY__ROLLUPS_TABLE"]
    )
    items = [
        UsageRecord(
            request_id=f"profile-write-{index}",
            endpoint="/v1/chat/completions",
            key_id="master",
            model_requested="gpt-3.5-turbo",
            model_group="gpt-3.5-turbo",
            provider="openai",
            prompt_tokens=8,
            completion_tokens=5,
            cost_usd=0.0000115,
            latency_ms=3.5,
        ).to_item(90)
        for index in range(requests + 20)
    ]
    for item in items[:20]:
        store.store(item)
    profiler = cProfile.Profile()
    profiler.enable()
    for item in items[20:]:
        store.store(item)
    profiler.disable()
    path = output.with_name(f"{output.stem}-usage-write{output.suffix}")
    profiler.dump_stats(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.profile", description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per kind")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("build") / "profile" / "gateway.prof",
        help="where the profiles go (one per kind, named after this)",
    )
    parser.add_argument("--top", type=int, default=30, help="functions listed by self time")
    args = parser.parse_args(argv)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    output = args.output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    # No usage table: the usage write runs in a worker thread (profiled apart, below).
    with bench_stack(variables={"LLM_PROXY__USAGE_TABLE": ""}, profile=output) as stack:
        profiles = profile_gateway(stack, output, args.requests, args.warmup)
    with bench_stack() as stack:
        profiles["usage write"] = profile_usage_write(stack, output, args.requests)
    for kind, path in profiles.items():
        stats = pstats.Stats(str(path))
        print(f"\n=== {kind}: {path}")
        print("\n".join(breakdown(stats.stats, args.requests)))  # type: ignore[attr-defined]
        print(f"\ntop {args.top} functions by self time:")
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
