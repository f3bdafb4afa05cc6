"""What virtual keys, limits and the response cache add to a request, measured in one run.

Six kinds of sequential chat completion, interleaved N times, against the same loopback
upstream double, with `make dev`'s stack (the gateway and moto, each in a process of its own):
  direct      the upstream double called straight
  master      the gateway with the master key: auth, routing, the usage write, and the
              cache's lookup (a miss: every question is new) and write
  plain       a virtual key with no limits, asking new questions: + the key's lookup
  limited     a virtual key with rpm, tpm and a budget, asking new questions too: + the
              admission and the settlement of its counters
  governed    a key of a team and a user (each with a budget and a rate limit) with a
              budget, two budget windows and a per-model budget: nine counters, still one
              admission transaction
  cache hit   the same key asking one question again: answered from the cache

Usage: python -m scripts.bench.keys [--requests N] [--output bench-keys.json]"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from scripts.bench.stack import GATEWAY_CONFIG, bench_stack

# The bench's one-deployment catalogue with the response cache on.
CONFIG = (
    GATEWAY_CONFIG
    + """\
litellm_settings:
  cache: true
  cache_params:
    ttl: 600
"""
)


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
    with bench_stack(CONFIG) as stack, httpx.Client(timeout=30) as client:
        upstream, gateway = stack.upstream_url, stack.gateway_url

        def manage(route: str, fields: dict[str, Any]) -> dict[str, Any]:
            response = client.post(
                f"{gateway}{route}",
                json=fields,
                headers={"Authorization": f"Bearer {stack.master_key}"},
            )
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

        made = manage(
            "/key/generate", {"rpm_limit": 100_000, "tpm_limit": 10_000_000, "max_budget": 1000}
        )
        plain = manage("/key/generate", {})
        team = manage(
            "/team/new", {"max_budget": 1000, "budget_duration": "30d", "rpm_limit": 100_000}
        )
        user = manage(
            "/user/new", {"max_budget": 1000, "tpm_limit": 10_000_000, "auto_create_key": False}
        )
        governed = manage(
            "/key/generate",
            {
                "team_id": team["team_id"],
                "user_id": user["user_id"],
                "max_budget": 1000,
                "budget_limits": [
                    {"budget_duration": "1h", "max_budget": 1000},
                    {"budget_duration": "30d", "max_budget": 1000},
                ],
                "model_max_budget": {"gpt-3.5-turbo": {"budget_limit": 1000, "time_period": "1d"}},
            },
        )

        def new() -> str:
            return f"Say hello ({uuid.uuid4().hex})"

        def same() -> str:
            return "Say hello in one sentence."

        loops = {
            "direct": (f"{upstream}/v1/chat/completions", stack.upstream_key, new),
            "master": (f"{gateway}/v1/chat/completions", stack.master_key, new),
            "plain": (f"{gateway}/v1/chat/completions", plain["key"], new),
            "limited": (f"{gateway}/v1/chat/completions", made["key"], new),
            "governed": (f"{gateway}/v1/chat/completions", governed["key"], new),
            "cache_hit": (f"{gateway}/v1/chat/completions", made["key"], same),
        }
        samples: dict[str, list[float]] = {name: [] for name in loops}
        # Interleaved, one request of each loop in turn, so drift touches all alike.
        for index in range(warmup + requests):
            for name, (url, key, question) in loops.items():
                elapsed = timed(client, url, key, question())
                if index >= warmup:
                    samples[name].append(elapsed)
        medians = {name: statistics.median(values) for name, values in samples.items()}
    direct = medians["direct"]
    added = {name: value - direct for name, value in medians.items()}
    return {
        "requests": requests,
        "median_ms": medians,
        "added_median_ms": added,
        "keys_limits_cache_over_master_ms": medians["limited"] - medians["master"],
        # What the gateway adds for a key with a team, a user, a per-model budget and two
        # windows, against a key with none and against a key with one budget.
        "governed_over_plain": added["governed"] / added["plain"],
        "governed_over_limited": added["governed"] / added["limited"],
    }


def render(results: dict[str, Any]) -> str:
    lines = [f"{'loop':<10} {'median ms':>10} {'added ms':>10}"]
    for name, value in results["median_ms"].items():
        lines.append(f"{name:<10} {value:>10.2f} {results['added_median_ms'][name]:>10.2f}")
    lines.append(
        "keys + limits + cache (miss) over the master key: "
        f"{results['keys_limits_cache_over_master_ms']:.2f} ms"
    )
    lines.append(
        "team + user + per-model budget + two windows, added latency: "
        f"{results['governed_over_plain']:.2f}x a key with none, "
        f"{results['governed_over_limited']:.2f}x a key with one budget"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.keys", description=__doc__)
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
