"""How the gateway bench reports: its figures as a plain-text table with the targets beside
the ratios, and as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from devstack.stats import ratio


def to_json(results: Mapping[str, Any]) -> str:
    """The figures as the JSON document the bench writes."""
    return json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN has no JSON form; write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def _target(value: float, limit: float, unit: str = "x") -> str:
    return f"<= {limit:g}{unit} ({'met' if value <= limit else 'missed'})"


Row = tuple[str, str, str, str, str]


def _latency_rows(results: Mapping[str, Any]) -> list[Row]:
    latency, sdk = results["latency_ms"], results["litellm_overhead_ms"]
    added, overhead = latency["added"], sdk["overhead"]
    write, cpu = results["usage_write_ms"], results["cpu_ms_per_request"]
    added_ratio = results["ratio_added_to_litellm_overhead"]
    limit = results["targets"]["added_median_vs_litellm_overhead"]
    rows: list[Row] = [
        (
            f"gateway latency {stat}",
            ms(latency["gateway"][stat]),
            f"direct {ms(latency['direct'][stat])}",
            f"{ratio(latency['gateway'][stat], latency['direct'][stat]):.2f}x",
            "",
        )
        for stat in ("median", "p99")
    ]
    rows += [
        (
            "added latency median",
            ms(added["median"]),
            f"litellm overhead {ms(overhead['median'])}",
            f"{added_ratio:.2f}x",
            _target(added_ratio, limit),
        ),
        (
            "added latency p99",
            ms(added["p99"]),
            f"litellm overhead {ms(overhead['p99'])}",
            f"{ratio(added['p99'], overhead['p99']):.2f}x",
            "",
        ),
    ]
    inline = latency.get("added_usage_before_response")
    if inline:
        rows += [
            (
                f"added latency {stat}, usage write before the response (as in Lambda)",
                ms(inline[stat]),
                f"litellm overhead {ms(overhead[stat])}",
                f"{ratio(inline[stat], overhead[stat]):.2f}x",
                "",
            )
            for stat in ("median", "p99")
        ]
    # The usage write is in the client's wait only where it is made before the response.
    before = inline or added
    rows += [
        (
            "usage write alone (transaction), median",
            ms(write["median"]),
            f"added median {ms(before['median'])}",
            f"{ratio(write['median'], before['median']):.2f}x",
            "",
        ),
        (
            "litellm.acompletion median",
            ms(sdk["acompletion"]["median"]),
            f"direct async {ms(sdk['direct_async']['median'])}",
            f"{ratio(sdk['acompletion']['median'], sdk['direct_async']['median']):.2f}x",
            "",
        ),
        (
            "CPU per gateway request *",
            ms(cpu["gateway_loop"]),
            f"direct loop {ms(cpu['direct_loop'])}",
            f"{ratio(cpu['gateway_loop'], cpu['direct_loop']):.2f}x",
            "",
        ),
    ]
    return rows


def _cold_rows(cold: Mapping[str, Any], targets: Mapping[str, float]) -> list[Row]:
    bare, api = cold["bare_import_litellm"], cold["api_module_import"]
    source_only: list[Row] = []
    if plain := cold.get("bare_import_litellm_source_only"):
        source_only.append(
            (
                "init: import litellm, no bytecode",
                f"{plain['import_s']:.2f} s",
                f"with bytecode {bare['import_s']:.2f} s",
                f"{ratio(plain['import_s'], bare['import_s']):.2f}x",
                "",
            )
        )
    return [
        *source_only,
        (
            "init: import app.py",
            f"{api['import_s']:.2f} s",
            f"import litellm {bare['import_s']:.2f} s",
            f"{cold['ratio_time']:.2f}x",
            _target(cold["ratio_time"], targets["init_time_vs_bare_import"]),
        ),
        (
            "init: max RSS",
            f"{api['max_rss_mb']:.0f} MB",
            f"import litellm {bare['max_rss_mb']:.0f} MB",
            f"{cold['ratio_rss']:.2f}x",
            _target(cold["ratio_rss"], targets["init_rss_vs_bare_import"]),
        ),
    ]


def _size_rows(size: Mapping[str, Any], limit_mb: float) -> list[Row]:
    return [
        (
            "size: deps + core + api",
            f"{size['total']:.1f} MB",
            f"target {limit_mb:g} MB",
            f"{size['total'] / limit_mb:.2f}x",
            _target(size["total"], limit_mb, " MB"),
        ),
        ("  deps layer", f"{size['deps_layer']:.1f} MB", "", "", ""),
        ("  core layer", f"{size['core_layer']:.2f} MB", "", "", ""),
        ("  api function", f"{size['api_function']:.2f} MB", "", "", ""),
    ]


def render(results: Mapping[str, Any]) -> str:
    """The figures as a plain-text table, with the targets beside the ratios."""
    targets = results["targets"]
    cold, size = results["cold_init"], results["size_mb"]
    rows = _latency_rows(results)
    if cold:
        rows += _cold_rows(cold, targets)
    if size:
        rows += _size_rows(size, targets["size_mb"])

    header: Row = ("figure", "value", "baseline", "ratio", "target (informational)")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    config = results["config"]
    cold_text = f"cold init median of {config['cold_runs']} runs" if cold else "cold init skipped"
    out = [
        f"LLM Proxy bench: N={config['requests']} sequential requests per loop "
        f"(warm-up {config['warmup']}), {cold_text}; litellm {config['litellm']}, "
        f"Python {config['python']}, {config['cpus']} CPUs",
        "",
        line(header),
        line(["-" * width for width in widths]),
        *(line(row).rstrip() for row in rows),
        "",
        f"* {results['cpu_ms_per_request']['note']}.",
        "added = gateway minus direct; litellm overhead = litellm.acompletion minus a direct "
        "async httpx call.",
    ]
    if size:
        out.append(f"size: {size['note']}.")
    else:
        out.append("size skipped.")
    return "\n".join(out)
