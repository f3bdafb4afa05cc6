"""Gateway benchmarks: warm added latency, litellm's own overhead, CPU per request, cold init
and the deployed size, all measured against the local stack (moto, the OpenAI-format upstream
double and the api app under uvicorn, on loopback).

Run from the repository root: `python -m scripts.bench [--requests N] [--skip-size]`.
Targets are printed for information only; nothing here fails on a missed target.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.bench.measure import measure
from scripts.bench.render import render, to_json
from scripts.bench.stack import bench_stack


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
    with bench_stack() as stack:
        results = measure(stack, args.requests, args.warmup, args.cold_runs, args.skip_size)
    print(render(results))
    args.output.write_text(to_json(results), encoding="utf-8")
    print(f"\nfigures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
