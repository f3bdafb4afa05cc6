"""Gateway benchmarks: warm added latency, litellm's own overhead, CPU per request, cold init
and the deployed size, all measured against the local stack (moto, the OpenAI-format upstream
double and the api app under uvicorn, in this process on loopback).

Run from the repository root: `python -m scripts.bench [--requests N] [--skip-size]`.
Targets are printed for information only; nothing here fails on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from scripts import build_layer
from scripts.local_stack import REPO_ROOT, create_resources
from tests.doubles.openai_upstream import OpenAIUpstream
from tests.doubles.server import BackgroundServer, free_port

API_APP = REPO_ROOT / "functions" / "api" / "app.py"

MASTER_KEY = "sk-bench-master-0123456789abcdef0123"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
NAMES = {"UsageTable": "bench-usage", "ProviderKeysSecret": "bench/provider-keys"}
MODEL = "gpt-3.5-turbo"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Say hello in one sentence."}]
RESULT_MARKER = "BENCH_RESULT "
MIB = 1024 * 1024

# One deployment on the double: the route under test, and nothing that logs warnings at init.
GATEWAY_CONFIG = """\
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: os.environ/TEST_OPENAI_BASE
      api_key: os.environ/OPENAI_API_KEY
router_settings:
  num_retries: 0
general_settings:
  master_key: os.environ/LLM_PROXY__MASTER_KEY
"""

TARGETS = {
    "added_median_vs_litellm_overhead": 2.0,
    "init_time_vs_bare_import": 1.1,
    "init_rss_vs_bare_import": 1.2,
    "size_mb": 150.0,
}


@dataclass(frozen=True)
class Stack:
    """Where the running stack listens, and the environment the api function imports with."""

    upstream_url: str
    gateway_url: str
    upstream_key: str
    master_key: str
    api_env: dict[str, str]
    # The served app's gateway, to measure it also with the usage write before the response.
    gateway: Any = None


def api_env(
    aws_endpoint: str, config_path: Path, secret_id: str, usage_table: str, upstream_url: str
) -> dict[str, str]:
    """The deployed function's environment, pointed at the local stack."""
    return {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "LLM_PROXY__ENV": "aws",
        "LLM_PROXY__CONFIG_PATH": str(config_path),
        "LLM_PROXY__SECRET_ID": secret_id,
        "LLM_PROXY__USAGE_TABLE": usage_table,
        "TEST_OPENAI_BASE": f"{upstream_url}/v1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


# --- the stack ------------------------------------------------------------------------------


@contextmanager
def _environ(values: Mapping[str, str], drop: Sequence[str] = ()) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    for name in drop:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _import_api(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, API_APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _silence_request_logs() -> None:
    # The app logs one JSON line per request to stdout; keep the formatting cost (it is part of
    # the request path) but not the output, so the table stays readable.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    for handler in logging.getLogger("llm-proxy").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


def _wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def local_stack(
    config: str = GATEWAY_CONFIG, tables: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """moto with the template's tables and secret, the upstream double, and the api app.
    `tables` maps more of the template's tables to the variables that name them to the app."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp:
        port = free_port()
        # moto in its own process: in-process it would compete with the gateway for the GIL
        # and charge the usage write far more than a real DynamoDB round trip costs.
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(moto.wait, timeout=10)
        stack.callback(moto.terminate)
        _wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        names = create_resources(
            endpoint,
            {"OPENAI_API_KEY": UPSTREAM_KEY, "LLM_PROXY__MASTER_KEY": MASTER_KEY},
            names=NAMES,
        )

        double = OpenAIUpstream(api_key=UPSTREAM_KEY)
        upstream = BackgroundServer(double.app()).start()
        stack.callback(upstream.stop)
        double.base_url = upstream.url

        config_path = Path(tmp) / "gateway.yaml"
        config_path.write_text(config, encoding="utf-8")
        env = api_env(
            endpoint, config_path, names["ProviderKeysSecret"], names["UsageTable"], upstream.url
        )
        env.update({variable: names[table] for table, variable in (tables or {}).items()})
        # The master key must come from the secret, as deployed.
        stack.enter_context(_environ(env, drop=["LLM_PROXY__MASTER_KEY"]))
        api = _import_api("api_app_bench")
        _silence_request_logs()
        gateway = BackgroundServer(api.app).start()
        stack.callback(gateway.stop)

        yield Stack(upstream.url, gateway.url, UPSTREAM_KEY, MASTER_KEY, env, api.gateway)


# --- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples_ms),
        "p99": percentile(samples_ms, 99),
        "mean": statistics.fmean(samples_ms),
        "min": min(samples_ms),
    }


def _ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else math.nan


def _json_safe(value: Any) -> Any:
    """NaN has no JSON form; write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


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
    saved = gateway.settings
    gateway.settings = replace(saved, meter_after_response=False)
    try:
        yield
    finally:
        gateway.settings = saved


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
        if stack.gateway is not None and stack.gateway.settings.meter_after_response:
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


# --- 4: cold init ---------------------------------------------------------------------------

# ru_maxrss keeps the parent's high-water mark across fork and exec on Linux (a child of this
# ~300 MB process reports >= 300 MB whatever it does), so the peak RSS of the child's own
# address space comes from VmHWM; ru_maxrss is still recorded, for reference.
_CHILD = """\
import json, resource, time
started = time.perf_counter()
{statement}
elapsed = time.perf_counter() - started
ru_maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as status:
        hwm = [line.split()[1] for line in status if line.startswith("VmHWM:")]
    peak_kb = int(hwm[0])
except (OSError, IndexError, ValueError):
    peak_kb = ru_maxrss_kb
result = {{"import_s": elapsed, "peak_rss_kb": peak_kb, "ru_maxrss_kb": ru_maxrss_kb}}
print({marker!r} + json.dumps(result))
"""

_BARE_IMPORT = "import litellm"
_API_IMPORT = f"""\
import importlib.util
spec = importlib.util.spec_from_file_location("api_app", {str(API_APP)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)"""


def _child_run(statement: str, env: Mapping[str, str], layered: bool = True) -> dict[str, float]:
    code = _CHILD.format(statement=statement, marker=RESULT_MARKER)
    # From a layer: the bare interpreter, without this environment's site-packages.
    python = (
        [str(getattr(sys, "_base_executable", sys.executable)), "-s"]
        if layered
        else [sys.executable]
    )
    started = time.perf_counter()
    done = subprocess.run(
        [*python, "-c", code],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    process_s = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"cold-init child failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(lines[-1].removeprefix(RESULT_MARKER))
    return {
        "import_s": float(result["import_s"]),
        "process_s": process_s,
        "max_rss_mb": float(result["peak_rss_kb"]) / 1024,
        "ru_maxrss_mb": float(result["ru_maxrss_kb"]) / 1024,  # KB on Linux
    }


def _median_runs(runs: list[dict[str, float]]) -> dict[str, Any]:
    figures: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    figures["runs"] = runs
    return figures


def _cold_base() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "LLM_PROXY__MASTER_KEY"}
    base["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return base


def _layer_env(env: Mapping[str, str], pythonpath: str) -> dict[str, str]:
    """Only the layer on the path, nothing written, as in Lambda."""
    return {
        **{k: v for k, v in env.items() if k != "VIRTUAL_ENV"},
        "PYTHONPATH": pythonpath,
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def measure_cold_init(stack: Stack, runs: int, pythonpath: str | None = None) -> dict[str, Any]:
    """`import litellm` against importing the api module (its whole init), in fresh processes;
    with `pythonpath`, both from the built, read-only layer alone."""
    base = _cold_base()
    app_env = {**base, **stack.api_env}
    if pythonpath is not None:
        base, app_env = _layer_env(base, pythonpath), _layer_env(app_env, pythonpath)
    bare: list[dict[str, float]] = []
    api: list[dict[str, float]] = []
    # Alternate, so page-cache or machine drift touches both sides alike.
    for _ in range(runs):
        bare.append(_child_run(_BARE_IMPORT, base, layered=pythonpath is not None))
        api.append(_child_run(_API_IMPORT, app_env, layered=pythonpath is not None))
    bare_figures, api_figures = _median_runs(bare), _median_runs(api)
    return {
        "bare_import_litellm": bare_figures,
        "api_module_import": api_figures,
        "ratio_time": _ratio(api_figures["import_s"], bare_figures["import_s"]),
        "ratio_rss": _ratio(api_figures["max_rss_mb"], bare_figures["max_rss_mb"]),
    }


# --- 5: deployed size, and the built layer the cold init runs from -------------------------


@contextmanager
def built_layers(compiled: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """The layers as `sam build` makes them, merged and read-only as in Lambda: yields the
    PYTHONPATH (the layers, then the runtime's boto3) and their sizes."""
    with tempfile.TemporaryDirectory(prefix="llm-proxy-layer-") as tmp:
        root = Path(tmp)
        site, sizes = build_layer.build_opt(root, compiled=compiled)
        build_layer.read_only(root)
        try:
            yield f"{site}{os.pathsep}{root / 'runtime'}", sizes
        finally:
            build_layer.writable(root)


def _size_figures(sizes: Mapping[str, float]) -> dict[str, Any]:
    return {
        **sizes,
        "note": "sam build's layers (scripts/build_layer.py): trimmed, bytecode only for "
        "third-party code, boto3 from the runtime; unzipped MiB",
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
    results["ratio_added_to_litellm_overhead"] = _ratio(
        results["latency_ms"]["added"]["median"],
        results["litellm_overhead_ms"]["overhead"]["median"],
    )
    results["size_mb"] = None
    results["cold_init"] = None
    if skip_size:
        # Cold init from this environment: no layer is built.
        if cold_runs > 0:
            results["cold_init"] = measure_cold_init(stack, cold_runs)
        return results
    with built_layers() as (pythonpath, sizes):
        results["size_mb"] = _size_figures(sizes)
        if cold_runs > 0:
            results["cold_init"] = measure_cold_init(stack, cold_runs, pythonpath)
    if cold_runs > 0:
        # What shipping no bytecode would cost: Lambda cannot write __pycache__.
        with built_layers(compiled=False) as (source_only, _):
            env = _layer_env(_cold_base(), source_only)
            runs = [_child_run(_BARE_IMPORT, env) for _ in range(cold_runs)]
        results["cold_init"]["bare_import_litellm_source_only"] = _median_runs(runs)
    return results


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# --- output ---------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def _target(ratio: float, limit: float, unit: str = "x") -> str:
    return f"<= {limit:g}{unit} ({'met' if ratio <= limit else 'missed'})"


Row = tuple[str, str, str, str, str]


def _latency_rows(results: Mapping[str, Any]) -> list[Row]:
    latency, sdk = results["latency_ms"], results["litellm_overhead_ms"]
    added, overhead = latency["added"], sdk["overhead"]
    write, cpu = results["usage_write_ms"], results["cpu_ms_per_request"]
    ratio = results["ratio_added_to_litellm_overhead"]
    limit = results["targets"]["added_median_vs_litellm_overhead"]
    rows: list[Row] = [
        (
            f"gateway latency {stat}",
            ms(latency["gateway"][stat]),
            f"direct {ms(latency['direct'][stat])}",
            f"{_ratio(latency['gateway'][stat], latency['direct'][stat]):.2f}x",
            "",
        )
        for stat in ("median", "p99")
    ]
    rows += [
        (
            "added latency median",
            ms(added["median"]),
            f"litellm overhead {ms(overhead['median'])}",
            f"{ratio:.2f}x",
            _target(ratio, limit),
        ),
        (
            "added latency p99",
            ms(added["p99"]),
            f"litellm overhead {ms(overhead['p99'])}",
            f"{_ratio(added['p99'], overhead['p99']):.2f}x",
            "",
        ),
    ]
    inline = latency.get("added_usage_before_response")
    if inline:
        rows += [
            (
                f"added latency {stat}, usage write before the response (as in Lambda)",
                ms(inline[stat]),
                f"litellm overhead {ms(overhead[stat])}",
                f"{_ratio(inline[stat], overhead[stat]):.2f}x",
                "",
            )
            for stat in ("median", "p99")
        ]
    # The usage write is in the client's wait only where it is made before the response.
    before = inline or added
    rows += [
        (
            "usage write alone (transaction), median",
            ms(write["median"]),
            f"added median {ms(before['median'])}",
            f"{_ratio(write['median'], before['median']):.2f}x",
            "",
        ),
        (
            "litellm.acompletion median",
            ms(sdk["acompletion"]["median"]),
            f"direct async {ms(sdk['direct_async']['median'])}",
            f"{_ratio(sdk['acompletion']['median'], sdk['direct_async']['median']):.2f}x",
            "",
        ),
        (
            "CPU per gateway request *",
            ms(cpu["gateway_loop"]),
            f"direct loop {ms(cpu['direct_loop'])}",
            f"{_ratio(cpu['gateway_loop'], cpu['direct_loop']):.2f}x",
            "",
        ),
    ]
    return rows


def _cold_rows(cold: Mapping[str, Any], targets: Mapping[str, float]) -> list[Row]:
    bare, api = cold["bare_import_litellm"], cold["api_module_import"]
    source_only: list[Row] = []
    if plain := cold.get("bare_import_litellm_source_only"):
        source_only.append(
            (
                "init: import litellm, no bytecode",
                f"{plain['import_s']:.2f} s",
                f"with bytecode {bare['import_s']:.2f} s",
                f"{_ratio(plain['import_s'], bare['import_s']):.2f}x",
                "",
            )
        )
    return [
        *source_only,
        (
            "init: import app.py",
            f"{api['import_s']:.2f} s",
            f"import litellm {bare['import_s']:.2f} s",
            f"{cold['ratio_time']:.2f}x",
            _target(cold["ratio_time"], targets["init_time_vs_bare_import"]),
        ),
        (
            "init: max RSS",
            f"{api['max_rss_mb']:.0f} MB",
            f"import litellm {bare['max_rss_mb']:.0f} MB",
            f"{cold['ratio_rss']:.2f}x",
            _target(cold["ratio_rss"], targets["init_rss_vs_bare_import"]),
        ),
    ]


def _size_rows(size: Mapping[str, Any], limit_mb: float) -> list[Row]:
    return [
        (
            "size: deps + core + api",
            f"{size['total']:.1f} MB",
            f"target {limit_mb:g} MB",
            f"{size['total'] / limit_mb:.2f}x",
            _target(size["total"], limit_mb, " MB"),
        ),
        ("  deps layer", f"{size['deps_layer']:.1f} MB", "", "", ""),
        ("  core layer", f"{size['core_layer']:.2f} MB", "", "", ""),
        ("  api function", f"{size['api_function']:.2f} MB", "", "", ""),
    ]


def render(results: Mapping[str, Any]) -> str:
    """The figures as a plain-text table, with the targets beside the ratios."""
    targets = results["targets"]
    cold, size = results["cold_init"], results["size_mb"]
    rows = _latency_rows(results)
    if cold:
        rows += _cold_rows(cold, targets)
    if size:
        rows += _size_rows(size, targets["size_mb"])

    header: Row = ("figure", "value", "baseline", "ratio", "target (informational)")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    config = results["config"]
    cold_text = f"cold init median of {config['cold_runs']} runs" if cold else "cold init skipped"
    out = [
        f"LLM Proxy bench: N={config['requests']} sequential requests per loop "
        f"(warm-up {config['warmup']}), {cold_text}; litellm {config['litellm']}, "
        f"Python {config['python']}, {config['cpus']} CPUs",
        "",
        line(header),
        line(["-" * width for width in widths]),
        *(line(row).rstrip() for row in rows),
        "",
        f"* {results['cpu_ms_per_request']['note']}.",
        "added = gateway minus direct; litellm overhead = litellm.acompletion minus a direct "
        "async httpx call.",
    ]
    if size:
        out.append(f"size: {size['note']}.")
    else:
        out.append("size skipped.")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per loop (N)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per loop")
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="fresh processes per cold-init figure (0 skips cold init)",
    )
    parser.add_argument("--skip-size", action="store_true", help="skip the dependency install")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the figures as JSON",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.cold_runs < 0:
        parser.error("--requests must be >= 1; --warmup and --cold-runs must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Set before litellm is first imported: no network fetch of the model cost map.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    with local_stack() as stack:
        results = measure(stack, args.requests, args.warmup, args.cold_runs, args.skip_size)
    print(render(results))
    args.output.write_text(
        json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    print(f"\nfigures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
