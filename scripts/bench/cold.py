"""What the gateway bench measures from fresh processes: the api module's cold init against a
bare `import litellm` (time and peak RSS), the first request after a SnapStart restore under
the runtime client (lambda_restore.py), and the deployed size of the layers they run from."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack.aws import REPO_ROOT
from devstack.lambda_fs import read_only, writable
from devstack.stats import ratio
from scripts import build_layer
from scripts.bench.lambda_restore import measure_lambda_restore
from scripts.bench.stack import Stack

API_APP = REPO_ROOT / "functions" / "api" / "app.py"

RESULT_MARKER = "BENCH_RESULT "


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
        "ratio_time": ratio(api_figures["import_s"], bare_figures["import_s"]),
        "ratio_rss": ratio(api_figures["max_rss_mb"], bare_figures["max_rss_mb"]),
    }


# --- 5: deployed size, and the built layer the cold init runs from -------------------------


@contextmanager
def built_layers(compiled: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """The layers as `sam build` makes them, merged and read-only as in Lambda: yields the
    PYTHONPATH (the layers, then the runtime's boto3) and their sizes."""
    with tempfile.TemporaryDirectory(prefix="llm-proxy-layer-") as tmp:
        root = Path(tmp)
        site, sizes = build_layer.build_opt(root, compiled=compiled)
        read_only(root)
        try:
            yield f"{site}{os.pathsep}{root / 'runtime'}", sizes
        finally:
            writable(root)


def _size_figures(sizes: Mapping[str, float]) -> dict[str, Any]:
    return {
        **sizes,
        "note": "sam build's layers (scripts/build_layer.py): trimmed, bytecode only for "
        "third-party code, boto3 from the runtime; unzipped MiB",
    }


# --- both -----------------------------------------------------------------------------------


def measure_size_and_cold_init(
    stack: Stack, cold_runs: int, skip_size: bool, restore_runs: int = 0
) -> dict[str, Any]:
    """The size_mb, cold_init and lambda_restore figures; None for those skipped."""
    figures: dict[str, Any] = {"size_mb": None, "cold_init": None, "lambda_restore": None}
    if skip_size:
        # Cold init and restores from this environment: no layer is built.
        if cold_runs > 0:
            figures["cold_init"] = measure_cold_init(stack, cold_runs)
        if restore_runs > 0:
            figures["lambda_restore"] = measure_lambda_restore(stack, restore_runs)
        return figures
    with built_layers() as (pythonpath, sizes):
        figures["size_mb"] = _size_figures(sizes)
        if cold_runs > 0:
            figures["cold_init"] = measure_cold_init(stack, cold_runs, pythonpath)
        if restore_runs > 0:
            figures["lambda_restore"] = measure_lambda_restore(
                stack, restore_runs, pythonpath=pythonpath
            )
    if cold_runs > 0:
        # What shipping no bytecode would cost: Lambda cannot write __pycache__.
        with built_layers(compiled=False) as (source_only, _):
            env = _layer_env(_cold_base(), source_only)
            runs = [_child_run(_BARE_IMPORT, env) for _ in range(cold_runs)]
        figures["cold_init"]["bare_import_litellm_source_only"] = _median_runs(runs)
    return figures
