"""The gateway bench, run as `make bench` runs it (with a handful of requests and a short soak),
measures and reports every figure, and reports a reference it cannot run as skipped; the
percentiles it reports interpolate as numpy's do."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.stats import percentile
from tests.support.paths import REPO


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isclose(percentile(list(map(float, range(101))), 99), 99.0)


def _positive_numbers(node: Any, path: str = "", signed: bool = False) -> list[str]:
    """Paths of numbers in `node` that are not finite and positive. Differences of two
    measurements (added latency, litellm's overhead, memory growth, ratios of them) only need
    to be finite: with a handful of requests, noise can make them negative. The JSON writes a
    NaN as null, so null counts as not finite except where a figure is skipped."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("config", "targets", "runs", "references", "rss_samples"):
                difference = signed or key in DIFFERENCES
                bad += _positive_numbers(value, f"{path}.{key}", difference)
    elif node is None:
        if path not in SKIPPED:
            bad.append(f"{path}=null")
    elif isinstance(node, bool | str):
        pass
    elif isinstance(node, int | float) and not (math.isfinite(node) and (signed or node > 0)):
        bad.append(f"{path}={node}")
    return bad


DIFFERENCES = frozenset(
    {
        "added_ms",
        "added_median_ms",
        "ratio_added_last_to_first",
        "overhead",
        "growth",
        "cpu_ms_per_request",
    }
)
# Figures a run with --skip-size leaves out.
SKIPPED = frozenset({".size_mb", ".lambda_restore"})


@pytest.mark.timeout(300)
def test_bench_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench-results.json"
    command = [
        *(sys.executable, "-m", "scripts.bench"),
        *("--requests", "5", "--warmup", "2", "--concurrency", "1", "2", "--soak", "20"),
        *("--references", "portkey", "--cold-runs", "1", "--restore-runs", "0", "--skip-size"),
        *("--output", str(output)),
    ]
    # No Node.js on the path: the Portkey reference is reported as skipped, not a failure.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(output.read_text())

    references = results["comparison"]["references"]
    assert references["litellm proxy"]["status"] == "skipped"
    assert references["portkey"] == {
        "status": "skipped",
        "reason": "Node.js (node and npm) not found on PATH",
    }
    phases = results["comparison"]["phases"]
    assert set(phases) == {
        "c1_json",
        "c1_stream",
        "c1_back_to_back_json",
        "c1_back_to_back_stream",
        "c2_json",
        "c2_stream",
    }
    assert [phases[name]["back_to_back"] for name in ("c1_json", "c1_back_to_back_json")] == [
        False,
        True,
    ]
    for phase in phases.values():
        assert set(phase["latency_ms"]) == {"direct", "gateway"}
        assert set(phase["latency_ms"]["gateway"]) >= {"median", "p99"}
        assert set(phase["added_ms"]) == {"gateway"}
        assert set(phase["added_ms"]["gateway"]) == {"median", "p99"}
        assert set(phase["cpu_ms_per_request"]) == {"gateway", "moto"}
        assert phase["ratio_to"] == {}

    soak = results["soak"]
    assert (soak["requests"], soak["window"]) == (20, 2)
    assert set(soak["rss_mb"]) == {"gateway", "moto"}
    assert len(soak["rss_samples"]) >= 2
    assert set(results["usage_before_response"]["added_ms"]) == {"before", "after"}
    assert set(results["usage_write_ms"]) >= {"median", "p99"}
    assert set(results["litellm_overhead_ms"]) == {"direct_async", "acompletion", "overhead"}
    assert set(results["cold_init"]) == {
        "bare_import_litellm",
        "api_module_import",
        "ratio_time",
        "ratio_rss",
    }
    for side in ("bare_import_litellm", "api_module_import"):
        assert set(results["cold_init"][side]) >= {"import_s", "max_rss_mb"}
        assert len(results["cold_init"][side]["runs"]) == 1
    assert results["size_mb"] is None
    assert results["lambda_restore"] is None  # --restore-runs 0
    restore = results["restore"]
    assert set(restore["paths"]) == {
        "chat completions",
        "chat completions, streamed",
        "messages",
        "embeddings",
    }
    for figures in restore["paths"].values():
        assert set(figures) == {"first_cpu_ms", "warm_cpu_ms", "ratio"}
    assert set(results["dynamodb_item_bytes"]) == {"usage", "rollup"}
    assert _positive_numbers(results) == []
    # Every loop reached the double: nothing answered in its place (a back-to-back phase
    # serves whole runs of requests).
    assert results["upstream_requests"] >= 4 * 2 * 5 + 2 * 10 + 20
    assert results["config"]["requests"] == 5

    table = done.stdout
    for figure in (
        "concurrency 1, JSON, with a 20 ms pause after each request",
        "concurrency 1, streamed, back to back",
        "concurrency 2, streamed",
        "gateway CPU per request, c1 JSON, back to back",
        "portkey: skipped",
        "soak: 20 requests",
        "usage written before the response",
        "init: import app.py",
        "restore: first chat completions request, CPU",
        "size skipped",
    ):
        assert figure in table


def test_the_litellm_proxy_reference_runs_the_projects_litellm() -> None:
    # The baseline is only a baseline if it runs the litellm the gateway ships.
    def pinned(lock: Path) -> str:
        lines = lock.read_text(encoding="utf-8").splitlines()
        return next(line.split()[0] for line in lines if line.startswith("litellm=="))

    bench_lock = REPO / "scripts" / "bench" / "litellm-proxy-requirements.txt"
    assert pinned(bench_lock) == pinned(REPO / "layers" / "deps" / "requirements.txt")
    assert "--hash=sha256:" in bench_lock.read_text(encoding="utf-8")


@pytest.mark.timeout(900)
def test_the_restore_bench_under_the_runtime_client_reports_each_path(tmp_path: Path) -> None:
    output = tmp_path / "lambda-restore.json"
    command = [
        *(sys.executable, "-m", "scripts.bench.lambda_restore"),
        *("--runs", "1", "--warm", "1", "--skip-size", "--output", str(output)),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=880, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(output.read_text())
    assert set(figures["paths"]) == {
        "chat completions",
        "chat completions, streamed",
        "messages",
        "responses",
        "embeddings",
    }
    for path in figures["paths"].values():
        assert set(path) == {
            "first_cpu_ms",
            "warm_cpu_ms",
            "ratio",
            "first_to_freeze_cpu_ms",
            "warm_to_freeze_cpu_ms",
            "ratio_to_freeze",
            "warm_to_freeze_wall_ms",
        }
    assert _positive_numbers(figures) == []
    assert "chat completions, streamed: to response" in done.stdout
