"""How the gateway bench reports: its figures as plain-text tables with the targets beside the
ratios, and as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from devstack.stats import ratio
from scripts.bench.load import IDLE_GAP_S
from scripts.bench.references import LITELLM_PROXY, PORTKEY

Row = tuple[str, str, str, str, str]


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
    if not math.isfinite(value):
        return f"<= {limit:g}{unit} (no figure)"
    return f"<= {limit:g}{unit} ({'met' if value <= limit else 'missed'})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return [
        line(header),
        line(["-" * width for width in widths]),
        *(line(r).rstrip() for r in rows),
    ]


# --- the comparison -----------------------------------------------------------------------


def _title(phase: Mapping[str, Any]) -> str:
    kind = "streamed" if phase["stream"] else "JSON"
    if phase["concurrency"] > 1:
        mode = ""
    elif phase["back_to_back"]:
        mode = ", back to back (a busy process)"
    else:
        mode = f", with a {IDLE_GAP_S * 1000:.0f} ms pause after each request (one agent)"
    return f"concurrency {phase['concurrency']}, {kind}{mode}"


def _comparison(results: Mapping[str, Any]) -> list[str]:
    comparison = results["comparison"]
    limits = results["targets"]["added_vs_litellm_proxy"]
    out: list[str] = []
    for name, status in comparison["references"].items():
        if status["status"] != "ran":
            out.append(f"{name}: skipped ({status['reason']})")
    for key, phase in comparison["phases"].items():
        latency, added, cpu = phase["latency_ms"], phase["added_ms"], phase["cpu_ms_per_request"]
        out += ["", f"{_title(phase)}, {phase['requests']} requests each"]
        rows = []
        for target, figures in latency.items():
            extra = added.get(target)
            rows.append(
                (
                    target,
                    ms(figures["median"]),
                    ms(figures["p99"]),
                    ms(extra["median"]) if extra else "",
                    ms(extra["p99"]) if extra else "",
                    ms(cpu[target]) if target in cpu else "",
                )
            )
        if "moto" in cpu:
            rows.append(("  moto, for the gateway", "", "", "", "", ms(cpu["moto"])))
        header = ("target", "median", "p99", "added median", "added p99", "CPU/request")
        out += table(header, rows)
        for reference, value in phase["ratio_to"].items():
            limit = limits.get(key) if reference == LITELLM_PROXY else None
            target = _target(value, limit) if limit is not None else ""
            out.append(f"gateway's added latency / {reference}'s: {value:.2f}x {target}".rstrip())
    return out


def _kind(key: str) -> str:
    return "stream" if key.endswith("_stream") else "json"


def _short(phase: Mapping[str, Any]) -> str:
    """c1 JSON, paused / c1 streamed, back to back / c8 JSON."""
    kind = "streamed" if phase["stream"] else "JSON"
    if phase["concurrency"] > 1:
        return f"c{phase['concurrency']} {kind}"
    return f"c1 {kind}, {'back to back' if phase['back_to_back'] else 'paused'}"


def target_rows(results: Mapping[str, Any]) -> list[Row]:
    """The issue's targets, each with its figure from this run: the gateway's added latency
    over the LiteLLM proxy's per phase, and its CPU per request at concurrency 1 beside the
    references' (Portkey's the floor)."""
    phases, targets = results["comparison"]["phases"], results["targets"]
    rows: list[Row] = []
    for key, limit in targets["added_vs_litellm_proxy"].items():
        phase = phases.get(key)
        if phase is None or LITELLM_PROXY not in phase["ratio_to"]:
            continue
        added = phase["added_ms"]
        rows.append(
            (
                f"added latency / LiteLLM proxy's, {_short(phase)}",
                f"{phase['ratio_to'][LITELLM_PROXY]:.2f}x",
                f"{ms(added['gateway']['median'])} / {ms(added[LITELLM_PROXY]['median'])}",
                _target(phase["ratio_to"][LITELLM_PROXY], limit),
                f"portkey {ms(added[PORTKEY]['median'])}" if PORTKEY in added else "",
            )
        )
    for key, phase in phases.items():
        if phase["concurrency"] != 1:
            continue
        cpu = phase["cpu_ms_per_request"]
        others = ", ".join(
            f"{name} {ms(cpu[name])}" for name in (LITELLM_PROXY, PORTKEY) if name in cpu
        )
        rows.append(
            (
                f"gateway CPU per request, {_short(phase)}",
                ms(cpu["gateway"]),
                f"+ moto {ms(cpu['moto'])}" if "moto" in cpu else "",
                _target(cpu["gateway"], targets["gateway_cpu_ms_c1"][_kind(key)], " ms"),
                others,
            )
        )
    return rows


# --- the soak -----------------------------------------------------------------------------


def _soak(soak: Mapping[str, Any] | None, targets: Mapping[str, float]) -> list[str]:
    if not soak:
        return ["", "soak skipped"]
    size, median = soak["window"], soak["gateway_median_ms"]
    added = soak["added_median_ms"]
    rows = [
        (
            f"gateway median, last {size} / first {size}",
            f"{ms(median['last'])} / {ms(median['first'])}",
            f"{soak['ratio_last_to_first']:.2f}x",
            _target(soak["ratio_last_to_first"], targets["soak_last_vs_first"]),
        ),
        (
            "added median, last / first",
            f"{ms(added['last'])} / {ms(added['first'])}",
            f"{soak['ratio_added_last_to_first']:.2f}x",
            "",
        ),
    ]
    for name, rss in soak["rss_mb"].items():
        rows.append(
            (
                f"{name} RSS, end / start",
                f"{rss['end']:.0f} MB / {rss['start']:.0f} MB",
                f"{rss['growth']:+.0f} MB",
                _target(rss["growth"], targets["soak_rss_growth_mb"], " MB"),
            )
        )
    header = ("figure", "value", "change", "target")
    return ["", f"soak: {soak['requests']} requests at concurrency 1, JSON", *table(header, rows)]


# --- the rest -----------------------------------------------------------------------------


def _other_rows(results: Mapping[str, Any]) -> list[Row]:
    inline, write = results["usage_before_response"], results["usage_write_ms"]
    sdk = results["litellm_overhead_ms"]
    before, after = inline["added_ms"]["before"], inline["added_ms"]["after"]
    return [
        (
            "added, usage written before the response (as in Lambda)",
            ms(before["median"]),
            f"written after {ms(after['median'])}",
            f"{ratio(before['median'], after['median']):.2f}x",
            "",
        ),
        (
            "usage write alone (item + rollup transaction), median",
            ms(write["median"]),
            f"added, before {ms(before['median'])}",
            f"{ratio(write['median'], before['median']):.2f}x",
            "",
        ),
        (
            "litellm.acompletion overhead, median",
            ms(sdk["overhead"]["median"]),
            f"direct async {ms(sdk['direct_async']['median'])}",
            "",
            "",
        ),
    ]


def _cold_rows(cold: Mapping[str, Any], targets: Mapping[str, float]) -> list[Row]:
    bare, api = cold["bare_import_litellm"], cold["api_module_import"]
    rows = []
    if plain := cold.get("bare_import_litellm_source_only"):
        rows.append(
            (
                "init: import litellm, no bytecode",
                f"{plain['import_s']:.2f} s",
                f"with bytecode {bare['import_s']:.2f} s",
                f"{ratio(plain['import_s'], bare['import_s']):.2f}x",
                "",
            )
        )
    return [
        *rows,
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


def _restore_rows(restore: Mapping[str, Any], targets: Mapping[str, float]) -> list[Row]:
    rows: list[Row] = [
        (
            "restore: after-restore hook, CPU",
            ms(restore["after_restore_cpu_ms"]),
            "",
            "",
            "",
        )
    ]
    for name, figures in restore["paths"].items():
        rows.append(
            (
                f"restore: first {name} request, CPU",
                ms(figures["first_cpu_ms"]),
                f"warm {ms(figures['warm_cpu_ms'])}",
                f"{figures['ratio']:.2f}x",
                _target(figures["ratio"], targets["restore_first_vs_warm_cpu"]),
            )
        )
    return rows


def _lambda_restore_rows(restore: Mapping[str, Any], targets: Mapping[str, float]) -> list[Row]:
    rows: list[Row] = [
        (
            "restore under awslambdaric: after-restore hook, CPU",
            ms(restore["after_restore_cpu_ms"]),
            restore["layout"],
            "",
            "",
        )
    ]
    for name, figures in restore["paths"].items():
        rows.append(
            (
                f"restore under awslambdaric: first {name}, CPU to response (to freeze)",
                f"{ms(figures['first_cpu_ms'])} ({ms(figures['first_to_freeze_cpu_ms'])})",
                f"warm {ms(figures['warm_cpu_ms'])} ({ms(figures['warm_to_freeze_cpu_ms'])})",
                f"{figures['ratio']:.2f}x ({figures['ratio_to_freeze']:.2f}x)",
                _target(
                    max(figures["ratio"], figures["ratio_to_freeze"]),
                    targets["restore_first_vs_warm_cpu"],
                ),
            )
        )
    return rows


def _size_rows(size: Mapping[str, Any], limit_mb: float) -> list[Row]:
    return [
        (
            "size: deps + core + api",
            f"{size['total']:.1f} MB",
            "budget 150 MB",
            f"margin {150 - size['total']:.1f} MB",
            _target(size["total"], limit_mb, " MB"),
        ),
        ("  deps layer", f"{size['deps_layer']:.1f} MB", "", "", ""),
        ("  core layer", f"{size['core_layer']:.2f} MB", "", "", ""),
        ("  api function", f"{size['api_function']:.2f} MB", "", "", ""),
    ]


def render(results: Mapping[str, Any]) -> str:
    """The figures as plain-text tables, with the targets beside the ratios."""
    targets, config = results["targets"], results["config"]
    cold, size = results["cold_init"], results["size_mb"]
    rows = _other_rows(results)
    if cold:
        rows += _cold_rows(cold, targets)
    if restore := results.get("restore"):
        rows += _restore_rows(restore, targets)
    if lambda_restore := results.get("lambda_restore"):
        rows += _lambda_restore_rows(lambda_restore, targets)
    if size:
        rows += _size_rows(size, targets["size_mb"])
    cold_text = f"cold init median of {config['cold_runs']} runs" if cold else "cold init skipped"
    out = [
        f"LLM Proxy bench: litellm {config['litellm']}, Python {config['python']}, "
        f"{config['cpus']} CPUs; {cold_text}",
        "added = target minus a direct call to the same upstream, measured interleaved; "
        "CPU/request = the target process's CPU time per request",
        *_comparison(results),
        "",
        "targets (same machine, same run; paused = a 20 ms pause after each request)",
        *table(
            ("figure", "value", "gateway / reference", "target", "beside"), target_rows(results)
        ),
        *_soak(results["soak"], targets),
        "",
        *table(("figure", "value", "baseline", "ratio", "target"), rows),
    ]
    if not size:
        out.append("size skipped.")
    return "\n".join(out)
