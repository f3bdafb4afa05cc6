"""The gateway bench, run as `make bench` runs it (with a handful of requests), measures and
reports every figure; the percentiles it reports interpolate as numpy's do."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.stats import percentile
from tests.conftest import REPO


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isclose(percentile(list(map(float, range(101))), 99), 99.0)


def _positive_numbers(node: Any, path: str = "", signed: bool = False) -> list[str]:
    """Paths of numbers in `node` that are not finite and positive. Differences of two
    measurements (added latency, litellm's overhead, ratios of them) only need to be finite:
    with a handful of requests, noise can make them negative. The JSON writes a NaN as null,
    so null counts as not finite except where a figure is skipped."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("config", "targets", "runs"):
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
    {"added", "added_usage_before_response", "overhead", "ratio_added_to_litellm_overhead"}
)
# Figures a run with --skip-size leaves out.
SKIPPED = frozenset({".size_mb"})


@pytest.mark.timeout(300)
def test_bench_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench-results.json"
    command = [
        *(sys.executable, "-m", "scripts.bench"),
        *("--requests", "5", "--warmup", "2", "--cold-runs", "1", "--skip-size"),
        *("--output", str(output)),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(output.read_text())

    assert set(results["latency_ms"]) == {
        "direct",
        "gateway",
        "added",
        "gateway_usage_before_response",
        "added_usage_before_response",
    }
    for side in ("direct", "gateway", "gateway_usage_before_response"):
        assert set(results["latency_ms"][side]) >= {"median", "p99"}
    for added in ("added", "added_usage_before_response"):
        assert set(results["latency_ms"][added]) == {"median", "p99"}
    assert set(results["litellm_overhead_ms"]) == {"direct_async", "acompletion", "overhead"}
    assert set(results["cpu_ms_per_request"]) >= {"gateway_loop", "direct_loop"}
    assert set(results["cold_init"]) == {
        "bare_import_litellm",
        "api_module_import",
        "ratio_time",
        "ratio_rss",
    }
    for side in ("bare_import_litellm", "api_module_import"):
        assert set(results["cold_init"][side]) >= {"import_s", "max_rss_mb"}
        assert len(results["cold_init"][side]["runs"]) == 1
    assert "ratio_added_to_litellm_overhead" in results
    assert results["size_mb"] is None
    assert _positive_numbers(results) == []

    # Five loops (direct, gateway twice, async direct, litellm) reached the double.
    assert results["upstream_requests"] >= 5 * (5 + 2)
    assert results["config"]["requests"] == 5
    table = done.stdout
    for figure in (
        "added latency median",
        "usage write before the response",
        "init: import app.py",
        "size skipped",
    ):
        assert figure in table
