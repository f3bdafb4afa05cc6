"""What one part of the request path costs: gateways that each leave one part out, measured
interleaved with the gateway as it is and a direct call, on `make dev`'s stack.

    python -m scripts.bench.ablation [--requests N]

The parts: litellm's cost calculation and its success logging (skipped by ablate/
sitecustomize.py; the gateway uses neither), the usage write (no usage table), and litellm's
aiohttp transport (litellm's own switch, httpx instead). The difference in added latency to
the gateway as it is, is what the part costs a client; the CPU time, what it costs the process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from scripts.bench.load import interleaved, run
from scripts.bench.stack import bench_stack

ABLATE = Path(__file__).resolve().parent / "ablate"
VARIANTS: dict[str, dict[str, str]] = {
    "without litellm's cost calculation": {"LLM_PROXY_BENCH_SKIP": "litellm-cost"},
    "without litellm's success logging": {"LLM_PROXY_BENCH_SKIP": "litellm-success-logging"},
    "without the usage write": {"LLM_PROXY__USAGE_TABLE": ""},
    "httpx instead of aiohttp": {"DISABLE_AIOHTTP_TRANSPORT": "True"},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.ablation", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per gateway and kind")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    with bench_stack() as stack, ExitStack() as running:
        targets = [stack.direct(), stack.target("as it is")]
        for name, variables in VARIANTS.items():
            gateway = stack.another_gateway({"PYTHONPATH": str(ABLATE), **variables})
            targets.append(stack.target(name, running.enter_context(gateway)))
        for stream in (False, True):
            phase = run(
                interleaved(
                    targets,
                    stream=stream,
                    concurrency=1,
                    requests=args.requests,
                    warmup=args.warmup,
                )
            )
            latency, cpu = phase["latency_ms"], phase["cpu_ms_per_request"]
            direct, whole = latency["direct"]["median"], latency["as it is"]["median"]
            print(f"\n{'streamed' if stream else 'JSON'}, concurrency 1, {phase['requests']} each")
            print(f"  {'gateway':<36} {'added':>9} {'saves':>9} {'CPU/request':>12}")
            for target in targets[1:]:
                added = latency[target.name]["median"] - direct
                saves = whole - latency[target.name]["median"]
                print(
                    f"  {target.name:<36} {added:7.2f}ms {saves:7.2f}ms {cpu[target.name]:10.2f}ms"
                )
            print(f"  direct median {direct:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
