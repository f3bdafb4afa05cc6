"""What session affinity saves an agent: 20-turn sessions, as Claude Code sends them, against a
model group of two deployments, each an Anthropic double with a prompt cache of its own (two
accounts), with `make dev`'s stack (the gateway and moto, each in a process of its own).

Each session resends its whole conversation every turn, with Claude Code's session header, the
system prompt and the newest message marked for caching; the prompt grows every turn. Once
with `optional_pre_call_checks: ["session_affinity"]` and once without (plain shuffle), the
same sessions. Per mode: the share of the input tokens of turns 2-20 read from the cache, the
sessions' cost as metered (`/spend/report`, by agent), and how many sessions stayed on one
deployment.

Usage: python -m scripts.bench.sessions [--sessions N] [--output bench-sessions.json]"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.server import serving
from scripts.bench.stack import bench_stack

ANTHROPIC_KEY = "sk-ant-bench-0123456789abcdef"
TURNS = 20
# A coding agent's context (system prompt and tools): a token a word, as the double counts.
CONTEXT_TOKENS = 10_000
# What each turn adds: the user's message (a tool result, a request) and the model's answer.
USER_TOKENS = 300
REPLY = " ".join(f"answer{n}" for n in range(150))
# Claude Sonnet 4.5's prices, USD per token: input, output, cache write (5 minutes), cache read.
PRICES = {
    "input_cost_per_token": 3e-6,
    "output_cost_per_token": 15e-6,
    "cache_creation_input_token_cost": 3.75e-6,
    "cache_read_input_token_cost": 0.3e-6,
}
MODES = {"affinity": ["session_affinity"], "shuffle": None}


def config(doubles: list[AnthropicUpstream], checks: list[str] | None) -> str:
    deployments = [
        {
            "model_name": "claude",
            "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5",
                "api_base": double.base_url,
                "api_key": "os.environ/ANTHROPIC_API_KEY",
                **PRICES,
            },
            "model_info": {"id": f"account-{index + 1}"},
        }
        for index, double in enumerate(doubles)
    ]
    router: dict[str, Any] = {"routing_strategy": "simple-shuffle", "num_retries": 2}
    if checks:
        router["optional_pre_call_checks"] = checks
    return yaml.safe_dump(
        {
            "model_list": deployments,
            "router_settings": router,
            "general_settings": {"master_key": "os.environ/LLM_PROXY__MASTER_KEY"},
        },
        sort_keys=False,
    )


def session(client: httpx.Client, url: str, key: str, agent: str) -> list[dict[str, int]]:
    """One session's turns, each turn's usage as the Messages API reported it."""
    session_id = str(uuid.uuid4())
    context = f"{session_id} " + " ".join(f"rule{n}" for n in range(CONTEXT_TOKENS))
    headers = {
        "Authorization": f"Bearer {key}",
        "anthropic-version": "2023-06-01",
        "X-Claude-Code-Session-Id": session_id,
        "x-agent": agent,
    }
    messages: list[dict[str, Any]] = []
    usages = []
    for turn in range(TURNS):
        words = " ".join(f"turn{turn}-{n}" for n in range(USER_TOKENS))
        messages.append({"role": "user", "content": [{"type": "text", "text": words}]})
        marked = [*messages[:-1], _marked(messages[-1])]
        body = {
            "model": "claude",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": context, "cache_control": {"type": "ephemeral"}}],
            "messages": marked,
        }
        response = client.post(f"{url}/v1/messages", json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"turn {turn} answered {response.status_code}: {response.text}")
        answer = response.json()
        messages.append({"role": "assistant", "content": answer["content"]})
        usages.append(answer["usage"])
    return usages


def _marked(message: dict[str, Any]) -> dict[str, Any]:
    *before, last = message["content"]
    return {**message, "content": [*before, {**last, "cache_control": {"type": "ephemeral"}}]}


def read_share(usages: list[dict[str, int]]) -> float:
    read = sum(u.get("cache_read_input_tokens") or 0 for u in usages)
    written = sum(u.get("cache_creation_input_tokens") or 0 for u in usages)
    return read / (read + written + sum(u["input_tokens"] for u in usages))


def spent(client: httpx.Client, url: str, key: str, agent: str) -> float:
    day = datetime.now(UTC).date().isoformat()
    response = client.get(
        f"{url}/spend/report",
        params={"start": day, "end": day},
        headers={"Authorization": f"Bearer {key}"},
    )
    response.raise_for_status()
    return float(response.json()["by_agent"][agent]["cost_usd"])


def measure(sessions: int) -> dict[str, Any]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    results: dict[str, Any] = {
        "sessions": sessions,
        "turns": TURNS,
        "context_tokens": CONTEXT_TOKENS,
        "tokens_added_per_turn": USER_TOKENS + len(REPLY.split()),
    }
    with ExitStack() as running, tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        doubles = [
            running.enter_context(serving(AnthropicUpstream(api_key=ANTHROPIC_KEY, reply=REPLY)))
            for _ in range(2)
        ]
        first, *others = list(MODES)
        stack = running.enter_context(
            bench_stack(
                config(doubles, MODES[first]), variables={"ANTHROPIC_API_KEY": ANTHROPIC_KEY}
            )
        )
        gateways = {first: stack.gateway}
        for mode in others:
            path = Path(tmp) / f"{mode}.yaml"
            path.write_text(config(doubles, MODES[mode]), encoding="utf-8")
            gateways[mode] = running.enter_context(
                stack.another_gateway({"LLM_PROXY__CONFIG_PATH": str(path)})
            )
        client = running.enter_context(httpx.Client(timeout=60))
        run = uuid.uuid4().hex[:6]
        for mode, gateway in gateways.items():
            agent = f"bench-{mode}-{run}"
            later: list[dict[str, int]] = []
            on_one = 0
            for _ in range(sessions):
                before = [len(double.requests) for double in doubles]
                later += session(client, gateway.url, stack.master_key, agent)[1:]
                used = [len(d.requests) - n for d, n in zip(doubles, before, strict=True)]
                on_one += sum(1 for count in used if count) == 1
            cost = spent(client, gateway.url, stack.master_key, agent)
            results[mode] = {
                "cache_read_share_turns_2_to_20": read_share(later),
                "cost_usd_per_session": cost / sessions,
                "sessions_on_one_deployment": on_one,
            }
    results["cost_saved_share"] = 1 - (
        results["affinity"]["cost_usd_per_session"] / results["shuffle"]["cost_usd_per_session"]
    )
    return results


def render(results: dict[str, Any]) -> str:
    lines = [f"{'mode':<10} {'cache read':>11} {'cost/session':>13} {'on one deployment':>18}"]
    for mode in MODES:
        figures = results[mode]
        lines.append(
            f"{mode:<10} {figures['cache_read_share_turns_2_to_20']:>10.1%} "
            f"{figures['cost_usd_per_session']:>13.4f} "
            f"{figures['sessions_on_one_deployment']:>11} of {results['sessions']}"
        )
    lines.append(f"affinity saves {results['cost_saved_share']:.0%} of a session's cost")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.sessions", description=__doc__)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("bench-sessions.json"))
    args = parser.parse_args(argv)
    results = measure(args.sessions)
    print(render(results))
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
