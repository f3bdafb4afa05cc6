"""Where the gateway's time goes, by component (`scripts.bench.components`: HTTP and
validation, admission, litellm, the after-response work, logging and metrics, the event loop,
the rest; waiting left out). The gateway of `make dev`'s stack serves four kinds of
sequential requests in turn under cProfile, started after each kind's warm-up and stopped
before the next: chat completions JSON and streamed, Anthropic's Messages streamed (as Claude
Code sends them; the gateway translates them to chat for the bench's OpenAI-format deployment)
and Responses JSON.

The usage write is left out of those profiles (no usage table): it runs in a worker thread,
and cProfile mixes the threads' call stacks. It is profiled apart, in this process, as a
long-running server now writes it: batches of MAX_RECORDS records through
`UsageTable.write_many` (one transaction: the items and their rollups), and beside it the
same records one at a time through `UsageTable.write` (one transaction each), per record.

    python -m scripts.bench.profile [--requests N] [--output build/profile/gateway.prof]

Open a profile with any pstats viewer (`python -m pstats FILE`, snakeviz, ...).
Under the profiler every call costs more: read the shares, not the absolute figures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.store.usage import UsageTable
from llm_proxy.store.usage_batch import MAX_RECORDS

from scripts.bench import components
from scripts.bench.load import MESSAGES, MODEL, run
from scripts.bench.load import client as http_client
from scripts.bench.stack import Stack, bench_stack

# Records per usage transaction, as a long-running server writes them.
BATCH = MAX_RECORDS


@dataclass(frozen=True)
class Kind:
    """One kind of request: where it goes, what it sends, and what its complete answer holds."""

    name: str
    path: str
    body: Mapping[str, Any]
    stream: bool
    complete: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


KINDS = (
    Kind(
        "chat JSON",
        "/v1/chat/completions",
        {"model": MODEL, "messages": MESSAGES},
        stream=False,
        complete=b'"choices"',
    ),
    Kind(
        "chat streamed",
        "/v1/chat/completions",
        {"model": MODEL, "messages": MESSAGES, "stream": True},
        stream=True,
        complete=b"data: [DONE]",
    ),
    # Claude Code's shape: a system prompt, a token budget, streamed, its key in x-api-key.
    Kind(
        "messages streamed",
        "/v1/messages",
        {
            "model": MODEL,
            "max_tokens": 1024,
            "system": "You are a coding agent.",
            "messages": MESSAGES,
            "stream": True,
        },
        stream=True,
        complete=b"event: message_stop",
        headers={"anthropic-version": "2023-06-01"},
    ),
    Kind(
        "responses JSON",
        "/v1/responses",
        {"model": MODEL, "input": MESSAGES[0]["content"]},
        stream=False,
        complete=b'"output"',
    ),
)

# The calls whose cumulative time the report lists: (path suffix, function name or "").
KEY_CALLS: tuple[tuple[str, str], ...] = (
    ("llm_proxy/http/middleware.py", "__call__"),
    ("llm_proxy/pipeline/pipeline.py", "run"),
    ("llm_proxy/gateway.py", "authenticate"),
    ("llm_proxy/pipeline/validate.py", "validate_request"),
    ("llm_proxy/pipeline/admit.py", ""),
    ("llm_proxy/pipeline/provider_call.py", "call_provider"),
    ("llm_proxy/pipeline/meter.py", ""),
    ("llm_proxy/pipeline/streams.py", ""),
    ("llm_proxy/pipeline/chat.py", ""),
    ("llm_proxy/pipeline/messages.py", ""),
    ("llm_proxy/pipeline/responses.py", ""),
    ("llm_proxy/store/usage.py", "write_many"),
    ("llm_proxy/store/usage.py", "write"),
    ("llm_proxy/store/usage.py", "store"),
    ("llm_proxy/accounting/usage.py", "to_item"),
    ("llm_proxy/accounting/metrics.py", ""),
    ("llm_proxy/logs.py", ""),
    ("litellm/router.py", "acompletion"),
    ("litellm/router.py", "aresponses"),
    ("litellm/main.py", "acompletion"),
    ("litellm/responses/main.py", "aresponses"),
    ("litellm/utils.py", "function_setup"),
    ("litellm/utils.py", "wrapper_async"),
    ("litellm/litellm_core_utils/litellm_logging.py", "__init__"),
    ("litellm/litellm_core_utils/litellm_logging.py", "pre_call"),
    ("litellm/litellm_core_utils/litellm_logging.py", "success_handler"),
    ("litellm/litellm_core_utils/litellm_logging.py", "async_success_handler"),
    ("litellm/litellm_core_utils/litellm_logging.py", "get_standard_logging_object_payload"),
    ("litellm/cost_calculator.py", "completion_cost"),
    ("litellm/litellm_core_utils/streaming_handler.py", "__anext__"),
    ("litellm/llms/openai/openai.py", "acompletion"),
    ("openai/_base_client.py", "request"),
    ("botocore/client.py", "_make_api_call"),
    ("fastapi/routing.py", "app"),
    ("uvicorn/protocols/http/h11_impl.py", "handle_events"),
)


def key_calls(stats: components.Stats, count: int) -> list[str]:
    """The key calls' cumulative time, ms per request or record (calls per request)."""
    lines = []
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
                f"  {cumulative * 1000 / count:8.2f}  ({calls / count:5.2f})  "
                f"{function}  {where}:{line}"
            )
    return lines


async def _call(http: httpx.AsyncClient, stack: Stack, kind: Kind) -> None:
    """One request of `kind`, read to its end."""
    key = (
        {"x-api-key": stack.master_key}
        if kind.path == "/v1/messages"
        else {"Authorization": f"Bearer {stack.master_key}"}
    )
    url = f"{stack.gateway_url}{kind.path}"
    body = dict(kind.body)
    async with http.stream("POST", url, json=body, headers={**key, **kind.headers}) as response:
        content = await response.aread()
    if response.status_code != 200 or kind.complete not in content:
        status = response.status_code
        raise RuntimeError(f"{kind.name}: the gateway answered {status}: {content[:300]!r}")


async def _load(stack: Stack, kind: Kind, requests: int) -> None:
    async with http_client(1, 1) as http:
        for _ in range(requests):
            await _call(http, stack, kind)


def _wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or path.stat().st_size == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway wrote no profile to {path}")
        time.sleep(0.1)
    time.sleep(0.5)


def profile_gateway(stack: Stack, profile: Path, requests: int, warmup: int) -> dict[str, Path]:
    """One profile per kind of request; the gateway writes each to `profile`, and each is moved
    beside it under its kind's name."""
    written: dict[str, Path] = {}
    for kind in KINDS:
        profile.unlink(missing_ok=True)
        run(_load(stack, kind, warmup))
        os.kill(stack.gateway.pid, signal.SIGUSR1)
        time.sleep(0.5)
        run(_load(stack, kind, requests))
        os.kill(stack.gateway.pid, signal.SIGUSR2)
        _wait_for(profile)
        name = kind.name.replace(" ", "-")
        written[kind.name] = profile.rename(profile.with_name(f"{profile.stem}-{name}.prof"))
    return written


def profile_usage_writes(stack: Stack, output: Path, records: int) -> dict[str, Path]:
    """The usage write from this process under cProfile, `records` records each way: in
    batches of BATCH through `write_many`, and one at a time through `write`."""
    os.environ.update(stack.aws.env)
    usage = UsageTable(
        stack.env["LLM_PROXY__USAGE_TABLE"], 90, rollups_table=stack.env["LLM_PROXY__ROLLUPS_TABLE"]
    )

    def record(name: str) -> UsageRecord:
        return UsageRecord(
            request_id=f"profile-{name}",
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

    def batch(prefix: str) -> list[UsageRecord]:
        return [record(f"{prefix}-{index}") for index in range(BATCH)]

    # Warm-up: the client, the table's description, the first connections.
    usage.write_many(batch("warmup"))
    usage.write(record("warmup-single"))

    batched = [batch(str(number)) for number in range(records // BATCH)]
    singles = [record(f"single-{number}") for number in range(records)]

    def write_batches() -> None:
        for each in batched:
            usage.write_many(each)

    def write_singles() -> None:
        for each in singles:
            usage.write(each)

    written: dict[str, Path] = {}
    for name, profiler, suffix in (
        (f"usage write, batches of {BATCH}", profiled(write_batches), "batched"),
        ("usage write, one at a time", profiled(write_singles), "single"),
    ):
        written[name] = output.with_name(f"{output.stem}-usage-write-{suffix}.prof")
        profiler.dump_stats(written[name])
    return written


def profiled(work: Callable[[], object]) -> cProfile.Profile:
    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    return profiler


def report(
    gateway: Mapping[str, Path], writes: Mapping[str, Path], requests: int, records: int, top: int
) -> list[str]:
    """The component tables, then each profile's key calls and top functions."""
    paths = {**gateway, **writes}
    out = io.StringIO()
    loaded = {name: pstats.Stats(str(path), stream=out) for name, path in paths.items()}
    stats = {name: loaded[name].stats for name in paths}  # type: ignore[attr-defined]
    lines = [
        f"=== by component, ms per request under the profiler and share ({requests} requests "
        "each; helpers counted to their callers, waiting left out)",
        *components.table({name: (stats[name], requests) for name in gateway}),
        "",
        f"=== the usage write, ms per record under the profiler and share ({records} records "
        "each way)",
        *components.table({name: (stats[name], records) for name in writes}),
    ]
    for name, path in paths.items():
        unit, count = ("record", records) if name in writes else ("request", requests)
        lines += ["", f"=== {name}: {path}"]
        lines += [f"cumulative time of key calls, ms per {unit} (calls per {unit})"]
        lines += key_calls(stats[name], count)
        out.seek(0)
        out.truncate()
        loaded[name].sort_stats("tottime").print_stats(top)
        lines += ["", f"top {top} functions by self time:", out.getvalue()]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.profile", description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per kind")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--records", type=int, default=500, help=f"usage records each way (a multiple of {BATCH})"
    )
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
    records = max(BATCH, args.records - args.records % BATCH)
    # No usage table: the usage write runs in a worker thread (profiled apart, below).
    with bench_stack(variables={"LLM_PROXY__USAGE_TABLE": ""}, profile=output) as stack:
        gateway = profile_gateway(stack, output, args.requests, args.warmup)
    with bench_stack() as stack:
        writes = profile_usage_writes(stack, output, records)
    print("\n".join(report(gateway, writes, args.requests, records, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
