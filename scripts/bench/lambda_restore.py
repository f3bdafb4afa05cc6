"""The first request after a SnapStart restore against warm ones, in CPU time, as Lambda runs
the api function: under its runtime client (`awslambdaric`), against a loopback Runtime API,
from the built, read-only layers (or this environment with --skip-size), with the bench
stack's moto and upstream double (devstack.lambda_restore).

For each path, fresh processes go through init, the before-snapshot hook, restore/next and
the after-restore hook in one process, as a restore resumes the snapshotted one; that path's
request is the first the restored environment serves, then warm ones follow. CPU is the
runtime process's (every thread's) from the invocation's thaw to its response, and to its
freeze (the after-response extension done too); a warm invocation's wall time from thaw to
freeze is what Lambda bills (lambda_bill.py prices it). Run alone:
`python -m scripts.bench.lambda_restore [--runs N] [--skip-size]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack.aws import REPO_ROOT
from devstack.lambda_restore import PATHS, restored_function
from devstack.stats import ratio
from scripts.bench.load import MODEL
from scripts.bench.stack import Stack, bench_stack

TARGET_RATIO = 1.5
# What Lambda's Python runtime brings besides boto3: its runtime client and SnapStart's hooks.
RUNTIME_MODULES = ("awslambdaric", "runtime_client", "simplejson", "snapshot_restore_py")


@contextmanager
def runtime_interface() -> Iterator[str]:
    """A directory holding the runtime client as Lambda's Python runtime provides it (links to
    this environment's copy), for a PYTHONPATH of built layers."""
    import awslambdaric

    site = Path(awslambdaric.__file__).parent.parent
    with tempfile.TemporaryDirectory(prefix="llm-proxy-runtime-") as tmp:
        for entry in site.iterdir():
            if entry.name.split(".")[0] in RUNTIME_MODULES and not entry.name.endswith(
                ".dist-info"
            ):
                (Path(tmp) / entry.name).symlink_to(entry)
        yield tmp


def _one_path(
    env: Mapping[str, str],
    pythonpath: str,
    python: tuple[str, ...],
    name: str,
    key: str,
    warm_requests: int,
) -> dict[str, float]:
    with restored_function(env, pythonpath, python) as function:
        served = [function.serve(name, MODEL, key) for _ in range(1 + warm_requests)]
        after_restore = function.after_restore_cpu_ms
    bad = [s.status for s in served if s.status != 200]
    if bad:
        raise RuntimeError(f"{name}: answered {bad}")
    first, warm = served[0], served[1:]
    return {
        "after_restore_cpu_ms": after_restore,
        "first_cpu_ms": first.cpu_to_response_ms,
        "warm_cpu_ms": statistics.median(s.cpu_to_response_ms for s in warm),
        "first_to_freeze_cpu_ms": first.cpu_to_freeze_ms,
        "warm_to_freeze_cpu_ms": statistics.median(s.cpu_to_freeze_ms for s in warm),
        "warm_to_freeze_wall_ms": statistics.median(s.wall_to_freeze_ms for s in warm),
    }


def measure_lambda_restore(
    stack: Stack, runs: int, warm_requests: int = 10, pythonpath: str | None = None
) -> dict[str, Any]:
    """Each path's first request after a restore against its warm ones (medians of `runs`
    restored processes per path); from the built layers at `pythonpath`, else this
    environment."""
    env = {k: v for k, v in stack.api_env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with runtime_interface() as interface:
        if pythonpath is None:
            path = os.pathsep.join([str(REPO_ROOT / "layers" / "core"), interface])
            python: tuple[str, ...] = (sys.executable,)
        else:
            path = os.pathsep.join([pythonpath, interface])
            # The bare interpreter, as cold.py runs a layer: no site-packages of this one.
            python = (str(getattr(sys, "_base_executable", sys.executable)), "-s")
            env |= {"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in PATHS}
        for _ in range(runs):
            for name in PATHS:
                figures = _one_path(env, path, python, name, stack.master_key, warm_requests)
                samples[name].append(figures)
    paths: dict[str, Any] = {}
    for name, runs_of_path in samples.items():
        median = {k: statistics.median(r[k] for r in runs_of_path) for k in runs_of_path[0]}
        paths[name] = {
            "first_cpu_ms": median["first_cpu_ms"],
            "warm_cpu_ms": median["warm_cpu_ms"],
            "ratio": ratio(median["first_cpu_ms"], median["warm_cpu_ms"]),
            "first_to_freeze_cpu_ms": median["first_to_freeze_cpu_ms"],
            "warm_to_freeze_cpu_ms": median["warm_to_freeze_cpu_ms"],
            "ratio_to_freeze": ratio(
                median["first_to_freeze_cpu_ms"], median["warm_to_freeze_cpu_ms"]
            ),
            # A warm invocation's billed duration here: thaw to freeze, wall clock.
            "warm_to_freeze_wall_ms": median["warm_to_freeze_wall_ms"],
        }
    after_restore = [r["after_restore_cpu_ms"] for rs in samples.values() for r in rs]
    return {
        "runs": runs,
        "warm_requests": warm_requests,
        "layout": "built layers" if pythonpath else "this environment",
        "after_restore_cpu_ms": statistics.median(after_restore),
        "paths": paths,
        "target_ratio": TARGET_RATIO,
    }


def render(figures: Mapping[str, Any]) -> str:
    lines = [
        f"first request after a restore, under awslambdaric ({figures['layout']}; median of "
        f"{figures['runs']} restored processes per path, {figures['warm_requests']} warm "
        "requests each), CPU of the runtime process:",
        f"  after-restore hook: {figures['after_restore_cpu_ms']:.1f} ms",
    ]
    for name, path in figures["paths"].items():
        lines.append(
            f"  {name}: to response {path['first_cpu_ms']:.1f} ms / warm "
            f"{path['warm_cpu_ms']:.1f} ms = {path['ratio']:.2f}x; to freeze "
            f"{path['first_to_freeze_cpu_ms']:.1f} / {path['warm_to_freeze_cpu_ms']:.1f} ms = "
            f"{path['ratio_to_freeze']:.2f}x (target <= {figures['target_ratio']:g}x); "
            f"warm thaw to freeze {path['warm_to_freeze_wall_ms']:.1f} ms wall"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.lambda_restore")
    parser.add_argument("--runs", type=int, default=3, help="restored processes per path")
    parser.add_argument("--warm", type=int, default=10, help="warm requests after the first")
    parser.add_argument("--skip-size", action="store_true", help="run from this environment")
    parser.add_argument("--output", type=Path, help="where to write the figures as JSON")
    args = parser.parse_args(argv)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    with bench_stack() as stack:
        if args.skip_size:
            figures = measure_lambda_restore(stack, args.runs, args.warm)
        else:
            from scripts.bench.cold import built_layers  # which measures with this module

            with built_layers() as (pythonpath, _):
                figures = measure_lambda_restore(stack, args.runs, args.warm, pythonpath)
    print(render(figures))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
