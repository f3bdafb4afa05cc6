"""The first request after a SnapStart restore against warm requests, in CPU time.

A fresh process imports the api module as Lambda's init does, runs the before-snapshot hook
(the rehearsal of every path), then the after-restore hook, as Lambda runs them around a
snapshot; then it serves requests through the Mangum handler, as API Gateway events, against
the bench stack's moto and upstream double: for each path (chat completions JSON and streamed,
messages, embeddings) its first request, then warm ones. Restoring a real snapshot cannot
happen outside Lambda; what the hooks leave for the first request to do is what this shows.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from devstack.aws import REPO_ROOT
from devstack.stats import ratio
from scripts.bench.load import MODEL
from scripts.bench.stack import Stack

EVENT = REPO_ROOT / "events" / "chat_completion.json"
API_APP = REPO_ROOT / "functions" / "api" / "app.py"
RESULT_MARKER = "RESTORE_RESULT "
BENCH_KEY = "RESTORE_BENCH_KEY"  # the key the child's requests carry
TARGET_RATIO = 1.5

QUESTION = [{"role": "user", "content": "Say hello"}]
# Each path a restored environment serves: (name, URL path, body).
PATHS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("chat completions", "/v1/chat/completions", {"messages": QUESTION}),
    ("chat completions, streamed", "/v1/chat/completions", {"messages": QUESTION, "stream": True}),
    ("messages", "/v1/messages", {"messages": QUESTION, "max_tokens": 16}),
    ("embeddings", "/v1/embeddings", {"input": "Say hello"}),
)


class LambdaContext:
    """The parts of Lambda's context object Mangum and the app read."""

    function_name = "api"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:api"
    aws_request_id = "restore-bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _event(path: str, body: Mapping[str, Any], key: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(EVENT.read_text())
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["body"] = json.dumps(body)
    event["headers"]["Authorization"] = f"Bearer {key}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {key}"]
    return event


def child(model: str, key: str, warm_requests: int) -> dict[str, Any]:
    """In a fresh process: init, both hooks, then each path's first and warm requests."""
    import importlib.util

    from llm_proxy import snapstart

    spec = importlib.util.spec_from_file_location("api_app", API_APP)
    assert spec and spec.loader
    api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api)
    snapstart.before_snapshot(api.gateway, api.app)
    restore_started = time.process_time()
    snapstart.after_restore(api.gateway, snapstart.handler_loop())
    restore_cpu_s = time.process_time() - restore_started

    def serve(path: str, body: Mapping[str, Any]) -> float:
        started = time.process_time()
        answer = api.handler(_event(path, {"model": model, **body}, key), LambdaContext())
        spent = time.process_time() - started
        if answer["statusCode"] != 200:
            raise RuntimeError(f"{path}: {answer['statusCode']} {answer['body'][:500]}")
        return spent

    paths: dict[str, Any] = {}
    for name, path, body in PATHS:
        first = serve(path, body)
        warm = [serve(path, body) for _ in range(warm_requests)]
        paths[name] = {"first_cpu_ms": first * 1000, "warm_cpu_ms": statistics.median(warm) * 1000}
    return {"after_restore_cpu_ms": restore_cpu_s * 1000, "paths": paths}


def measure_restore(stack: Stack, runs: int, warm_requests: int = 20) -> dict[str, Any]:
    """Fresh processes with the api function's environment on `stack`; the median of `runs`."""
    env = {**stack.api_env, BENCH_KEY: stack.master_key}
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-m", "scripts.bench.restore", "--warm", str(warm_requests)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"restore child failed ({done.returncode}): {done.stderr[-2000:]}")
        samples.append(json.loads(lines[-1].removeprefix(RESULT_MARKER)))
    paths: dict[str, Any] = {}
    for name, _, _ in PATHS:
        first = statistics.median(sample["paths"][name]["first_cpu_ms"] for sample in samples)
        warm = statistics.median(sample["paths"][name]["warm_cpu_ms"] for sample in samples)
        paths[name] = {"first_cpu_ms": first, "warm_cpu_ms": warm, "ratio": ratio(first, warm)}
    restore = statistics.median(sample["after_restore_cpu_ms"] for sample in samples)
    return {
        "runs": runs,
        "warm_requests": warm_requests,
        "after_restore_cpu_ms": restore,
        "paths": paths,
        "target_ratio": TARGET_RATIO,
    }


def main() -> int:
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m scripts.bench.restore")
    parser.add_argument("--warm", type=int, default=20)
    args = parser.parse_args()
    key = os.environ[BENCH_KEY]
    print(RESULT_MARKER + json.dumps(child(MODEL, key, args.warm)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
