"""What virtual keys, limits and the response cache add to a request, measured in one run.

Four kinds of sequential chat completion, interleaved N times, against the same loopback
upstream double, with moto (DynamoDB, in its own process) behind the gateway:
  direct      the upstream double called straight
  master      the gateway with the master key: auth, routing, the usage write
  limited     a virtual key with rpm, tpm and a budget, and the cache on but missed (every
              question is new): + cache lookup, admission, settlement and the cache write
  cache hit   the same key asking one question again: answered from the cache

Usage: python -m scripts.bench_keys [--requests N] [--output bench-keys.json]"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from scripts.local_stack import create_resources
from tests.doubles.openai_upstream import OpenAIUpstream
from tests.doubles.server import BackgroundServer, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-bench-master-0123456789abcdef0123"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
NAMES = {
    "UsageTable": "bench-usage",
    "KeysTable": "bench-keys",
    "CountersTable": "bench-counters",
    "CacheTable": "bench-cache",
    "ProviderKeysSecret": "bench/provider-keys",
}
CONFIG = """\
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: os.environ/TEST_OPENAI_BASE
      api_key: os.environ/OPENAI_API_KEY
router_settings:
  num_retries: 0
litellm_settings:
  cache: true
  cache_params:
    ttl: 600
general_settings:
  master_key: os.environ/LLM_PROXY__MASTER_KEY
"""


@contextmanager
def stack() -> Iterator[tuple[str, str]]:
    """moto in its own process, the upstream double, and the gateway: (upstream, gateway)."""
    with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp:
        port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cleanup.callback(moto.wait, timeout=10)
        cleanup.callback(moto.terminate)
        endpoint = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(endpoint, timeout=1))
        names = create_resources(
            endpoint,
            {"OPENAI_API_KEY": UPSTREAM_KEY, "LLM_PROXY__MASTER_KEY": MASTER_KEY},
            names=NAMES,
        )
        double = OpenAIUpstream(api_key=UPSTREAM_KEY)
        upstream = BackgroundServer(double.app()).start()
        cleanup.callback(upstream.stop)
        config = Path(tmp) / "gateway.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto accepts any
            AWS_DEFAULT_REGION="us-east-1",
            LLM_PROXY__ENV="aws",
            LLM_PROXY__CONFIG_PATH=str(config),
            LLM_PROXY__SECRET_ID=names["ProviderKeysSecret"],
            LLM_PROXY__USAGE_TABLE=names["UsageTable"],
            LLM_PROXY__KEYS_TABLE=names["KeysTable"],
            LLM_PROXY__COUNTERS_TABLE=names["CountersTable"],
            LLM_PROXY__CACHE_TABLE=names["CacheTable"],
            TEST_OPENAI_BASE=f"{upstream.url}/v1",
        )
        from llm_proxy.gateway import Gateway

        sys.path.insert(0, str(REPO_ROOT / "functions" / "api"))
        from app import DEFAULT_CONFIG, create_app

        gateway = BackgroundServer(create_app(Gateway.from_env(DEFAULT_CONFIG))).start()
        cleanup.callback(gateway.stop)
        yield upstream.url, gateway.url


def _wait(probe: Callable[[], Any], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def timed(client: httpx.Client, url: str, key: str, question: str) -> float:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": question}]}
    started = time.perf_counter()
    response = client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return elapsed


def measure(requests: int, warmup: int) -> dict[str, Any]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    with stack() as (upstream, gateway), httpx.Client(timeout=30) as client:
        made = client.post(
            f"{gateway}/key/generate",
            json={"rpm_limit": 100_000, "tpm_limit": 10_000_000, "max_budget": 1000},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        ).json()

        def new() -> str:
            return f"Say hello ({uuid.uuid4().hex})"

        def same() -> str:
            return "Say hello in one sentence."

        loops = {
            "direct": (f"{upstream}/v1/chat/completions", UPSTREAM_KEY, new),
            "master": (f"{gateway}/v1/chat/completions", MASTER_KEY, new),
            "limited": (f"{gateway}/v1/chat/completions", made["key"], new),
            "cache_hit": (f"{gateway}/v1/chat/completions", made["key"], same),
        }
        samples: dict[str, list[float]] = {name: [] for name in loops}
        # Interleaved, one request of each loop in turn: the tables grow under all of them
        # alike (moto's transactions slow down as a table grows).
        for index in range(warmup + requests):
            for name, (url, key, question) in loops.items():
                elapsed = timed(client, url, key, question())
                if index >= warmup:
                    samples[name].append(elapsed)
        medians = {name: statistics.median(values) for name, values in samples.items()}
    direct = medians["direct"]
    return {
        "requests": requests,
        "median_ms": medians,
        "added_median_ms": {name: value - direct for name, value in medians.items()},
        "keys_limits_cache_over_master_ms": medians["limited"] - medians["master"],
    }


def render(results: dict[str, Any]) -> str:
    lines = [f"{'loop':<10} {'median ms':>10} {'added ms':>10}"]
    for name, value in results["median_ms"].items():
        lines.append(f"{name:<10} {value:>10.2f} {results['added_median_ms'][name]:>10.2f}")
    lines.append(
        "keys + limits + cache (miss) over the master key: "
        f"{results['keys_limits_cache_over_master_ms']:.2f} ms"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_keys", description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("bench-keys.json"))
    args = parser.parse_args(argv)
    results = measure(args.requests, args.warmup)
    print(render(results))
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
