"""The bench's measurements run against the test stack and produce every figure it reports."""

from __future__ import annotations

import json
import math
from types import ModuleType
from typing import Any

import pytest

from scripts import bench
from tests.conftest import MASTER_KEY, REPO, UPSTREAM_KEY
from tests.doubles.openai_upstream import OpenAIUpstream


def test_percentile_interpolates_between_ranks() -> None:
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert bench.percentile([5.0], 99) == 5.0
    assert math.isclose(bench.percentile(list(map(float, range(101))), 99), 99.0)


def _positive_numbers(node: Any, path: str = "", signed: bool = False) -> list[str]:
    """Paths of numbers in `node` that are not finite and positive. Differences of two
    measurements (added latency, litellm's overhead, ratios of them) only need to be finite:
    with a handful of requests, noise can make them negative."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("config", "targets", "runs"):
                difference = signed or key in DIFFERENCES
                bad += _positive_numbers(value, f"{path}.{key}", difference)
    elif isinstance(node, bool | str) or node is None:
        pass
    elif isinstance(node, int | float) and not (math.isfinite(node) and (signed or node > 0)):
        bad.append(f"{path}={node}")
    return bad


DIFFERENCES = frozenset(
    {"added", "added_usage_before_response", "overhead", "ratio_added_to_litellm_overhead"}
)


@pytest.mark.timeout(120)
def test_measure_reports_every_figure(
    aws: dict[str, str], upstream: OpenAIUpstream, api: ModuleType, gateway_url: str
) -> None:
    stack = bench.Stack(
        upstream_url=upstream.base_url,
        gateway_url=gateway_url,
        upstream_key=UPSTREAM_KEY,
        master_key=MASTER_KEY,
        api_env=bench.api_env(
            aws["endpoint"],
            REPO / "tests" / "fixtures" / "gateway.yaml",
            aws["ProviderKeysSecret"],
            aws["UsageTable"],
            upstream.base_url,
        ),
        gateway=api.gateway,
    )

    results = bench.measure(stack, requests=5, warmup=2, cold_runs=1, skip_size=True)

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
    assert api.gateway.settings.meter_after_response
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
    assert len(upstream.requests) >= 5 * (5 + 2)
    document = json.loads(json.dumps(bench._json_safe(results), allow_nan=False))
    assert document["config"]["requests"] == 5
    table = bench.render(results)
    for figure in (
        "added latency median",
        "usage write before the response",
        "init: import app.py",
        "size skipped",
    ):
        assert figure in table
