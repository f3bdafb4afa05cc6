"""Gateway benchmarks against `make dev`'s stack on loopback (the local moto server and the api
module under uvicorn, each in a process of its own, and the OpenAI-format upstream double):
added latency against the LiteLLM proxy's and the Portkey gateway's at each concurrency, JSON
and streamed; a soak; the usage write; litellm's own overhead; cold init and the deployed size.

Run from the repository root: `python -m scripts.bench [options]`.
Targets are printed for information only; nothing here fails on a missed target.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from scripts.bench.measure import Plan, measure
from scripts.bench.references import NAMES
from scripts.bench.render import render, to_json
from scripts.bench.stack import bench_stack


def _names(value: str) -> list[str]:
    names = [] if value in ("", "none") else [name.strip() for name in value.split(",")]
    unknown = set(names) - set(NAMES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown reference(s) {sorted(unknown)}; known: {NAMES}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per target and loop")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per target")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="concurrencies to compare at"
    )
    parser.add_argument(
        "--references",
        type=_names,
        default=list(NAMES),
        help=f"comma-separated references to run beside the gateway, or none ({','.join(NAMES)})",
    )
    parser.add_argument("--soak", type=int, default=5000, help="requests in the soak (0 skips it)")
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="fresh processes per cold-init figure (0 skips cold init)",
    )
    parser.add_argument(
        "--restore-runs",
        type=int,
        default=3,
        help="restored processes per path under the runtime client (0 skips them)",
    )
    parser.add_argument("--skip-size", action="store_true", help="skip building the layers")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the figures as JSON",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or min(args.concurrency) < 1:
        parser.error("--requests and --concurrency must be >= 1")
    if min(args.warmup, args.cold_runs, args.soak, args.restore_runs) < 0:
        parser.error("--warmup, --soak, --cold-runs and --restore-runs must be >= 0")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every server the bench started is stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # Set before litellm is first imported: no network fetch of the model cost map.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    plan = Plan(
        requests=args.requests,
        warmup=args.warmup,
        concurrency=tuple(args.concurrency),
        references=tuple(args.references),
        soak=args.soak,
        cold_runs=args.cold_runs,
        restore_runs=args.restore_runs,
        skip_size=args.skip_size,
    )
    with bench_stack() as stack:
        results = measure(stack, plan)
    print(render(results))
    args.output.write_text(to_json(results), encoding="utf-8")
    print(f"\nfigures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
