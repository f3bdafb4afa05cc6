"""The Lambda bill: what the deployed gateway costs a month at 1,000, 100,000 and 10 million
requests, from the figures `python -m scripts.bench` measured (bench-results.json) and AWS's
published prices, against AWS's own LiteLLM-on-ECS guidance; with the break-even point.

    python -m scripts.bench.lambda_bill [--figures bench-results.json] [--provider-s 0 2 10]

Measured (bench-results.json, which needs the restore figures: --restore-runs 1 or more):
- billed duration: a warm chat completion under Lambda's runtime client (awslambdaric), from
  the invocation's thaw to its freeze (runtime and after-response extension done), wall clock,
  with the CPU part stretched to the template's MemorySize (Lambda gives a full vCPU at
  1,769 MB, a share below); the upstream is the loopback double (a few ms), so the provider's
  own time is a separate column (--provider-s): Lambda bills the wait for the model too;
- DynamoDB write units: the usage item and its rollup, one transaction (2 units per KB of each
  item), at the item sizes the bench's run wrote.

Prices are us-east-1, on-demand, first tier, x86_64 (the template's architecture), without the
account-wide free tiers. Estimates, not measurements: log bytes per request, X-Ray's default
sampling, how often an environment is restored.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.aws import load_template

# --- Published prices, us-east-1 -------------------------------------------------------------
# https://aws.amazon.com/lambda/pricing/ : x86 duration (first tier) and requests.
LAMBDA_X86_GB_SECOND_USD = 0.0000166667
LAMBDA_ARM_GB_SECOND_USD = 0.0000133334
LAMBDA_REQUEST_USD = 0.20 / 1e6
# Same page, SnapStart (Python): the snapshot's cache, per GB-second while a version is
# active (minimum 3 hours), and each restore, per GB.
SNAPSTART_CACHE_GB_SECOND_USD = 0.0000015046
SNAPSTART_RESTORE_GB_USD = 0.0001397998
# https://aws.amazon.com/api-gateway/pricing/ : REST API (the template's), first 333 million a
# month; an HTTP API would be 1.00 per million (first 300 million).
REST_API_REQUEST_USD = 3.50 / 1e6
HTTP_API_REQUEST_USD = 1.00 / 1e6
# https://aws.amazon.com/dynamodb/pricing/on-demand/ : write request units, storage.
DYNAMODB_WRU_USD = 0.625 / 1e6
DYNAMODB_GB_MONTH_USD = 0.25
# https://aws.amazon.com/secrets-manager/pricing/ : per secret a month (the template has one).
SECRET_MONTH_USD = 0.40
# https://aws.amazon.com/cloudwatch/pricing/ : logs ingested (Lambda's logs, first tier).
LOG_INGEST_GB_USD = 0.50
# https://aws.amazon.com/xray/pricing/ : traces recorded (Tracing: Active in the template).
XRAY_TRACE_USD = 5.00 / 1e6
# AWS Solutions Library, "Guidance for Multi-Provider Generative AI Gateway on AWS" (LiteLLM on
# ECS Fargate behind an ALB, with its database and cache): its cost estimate a month, before
# traffic.
ECS_GUIDANCE_MONTH_USD = 378.0

# --- Facts and estimates ----------------------------------------------------------------------
# Lambda gives one full vCPU at 1,769 MB and a proportional share below
# (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).
FULL_VCPU_MB = 1769
SECONDS_A_MONTH = 730 * 3600
# Functions with SnapStart on a published version: api and api-stream.
SNAPSTART_FUNCTIONS = 2
# Estimate: Lambda's START/END/REPORT lines, the request's log line and its metrics (EMF).
LOG_BYTES_PER_REQUEST = 2048
# X-Ray's default sampling rule: the first request each second, then 5% of the rest.
XRAY_RESERVOIR_PER_S = 1
XRAY_RATE = 0.05
# Estimate: an environment is restored about once an hour per environment in use.
RESTORES_PER_ENVIRONMENT_HOUR = 1.0
VOLUMES = (1_000, 100_000, 10_000_000)
PATH = "chat completions"


# --- DynamoDB's item size ---------------------------------------------------------------------


def _value_bytes(value: Mapping[str, Any]) -> int:
    """A low-level AttributeValue's size, by DynamoDB's rules (item-sizes in its developer
    guide): strings and binaries their bytes, a number one byte per two significant digits
    plus one, a map or list 3 bytes plus one per element plus its elements."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_value_bytes({"N": n}) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(v) for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_bytes(item: Mapping[str, Mapping[str, Any]]) -> int:
    """The size DynamoDB bills for an item in low-level form: names plus values."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def transaction_write_units(*item_sizes: float) -> int:
    """Write units of one TransactWriteItems: 2 per KB (rounded up) of each item."""
    return sum(2 * math.ceil(size / 1024) for size in item_sizes)


# --- The model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    memory_mb: int
    architecture: str
    # A warm request's thaw to freeze under awslambdaric, wall and CPU, on this machine.
    wall_ms: float
    cpu_ms: float
    usage_item_bytes: float
    rollup_item_bytes: float
    retention_days: int
    source: str

    @property
    def gateway_billed_ms(self) -> float:
        """The wall time, with the CPU part at the MemorySize's share of a vCPU."""
        share = min(1.0, self.memory_mb / FULL_VCPU_MB)
        return self.wall_ms + self.cpu_ms * (1 / share - 1)

    @property
    def write_units(self) -> int:
        return transaction_write_units(self.usage_item_bytes, self.rollup_item_bytes)

    @property
    def gb(self) -> float:
        return self.memory_mb / 1024

    @property
    def gb_second_usd(self) -> float:
        return (
            LAMBDA_ARM_GB_SECOND_USD if self.architecture == "arm64" else LAMBDA_X86_GB_SECOND_USD
        )


def measured(results: Mapping[str, Any], source: str) -> Measured:
    template = load_template()
    function = template["Globals"]["Function"]
    retention = template["Parameters"]["UsageRetentionDays"]["Default"]
    restore = results.get("lambda_restore") or results
    if "paths" not in restore:
        raise SystemExit(
            f"{source} has no restore figures under the runtime client: run "
            "`python -m scripts.bench` with --restore-runs 1 or more"
        )
    warm = restore["paths"][PATH]
    if "warm_to_freeze_wall_ms" not in warm:
        raise SystemExit(f"{source} predates the wall-clock figure: run the bench again")
    items = results.get("dynamodb_item_bytes")
    if not items:
        raise SystemExit(f"{source} has no DynamoDB item sizes: run the bench again")
    return Measured(
        memory_mb=int(function["MemorySize"]),
        architecture=str(function["Architectures"][0]),
        wall_ms=warm["warm_to_freeze_wall_ms"],
        cpu_ms=warm["warm_to_freeze_cpu_ms"],
        usage_item_bytes=items["usage"],
        rollup_item_bytes=items["rollup"],
        retention_days=int(retention),
        source=source,
    )


def per_request(m: Measured, provider_s: float) -> dict[str, float]:
    """What one request costs, in USD, by line."""
    billed_s = math.ceil(m.gateway_billed_ms + provider_s * 1000) / 1000
    return {
        "lambda requests": LAMBDA_REQUEST_USD,
        "lambda duration": billed_s * m.gb * m.gb_second_usd,
        "api gateway (REST)": REST_API_REQUEST_USD,
        "dynamodb writes": m.write_units * DYNAMODB_WRU_USD,
        "logs": LOG_BYTES_PER_REQUEST / 1024**3 * LOG_INGEST_GB_USD,
    }


def xray_traces(requests: int) -> float:
    """Traces the default sampling rule records from `requests` spread evenly over a month."""
    reservoir = min(requests, XRAY_RESERVOIR_PER_S * SECONDS_A_MONTH)
    return reservoir + XRAY_RATE * (requests - reservoir)


def environments(m: Measured, requests: int, provider_s: float) -> float:
    """Environments in use on average: requests times their billed seconds over the month."""
    busy_s = requests * (m.gateway_billed_ms / 1000 + provider_s)
    return max(1.0, busy_s / SECONDS_A_MONTH)


def monthly(m: Measured, requests: int, provider_s: float) -> dict[str, float]:
    """A month's bill for `requests`, in USD, by line."""
    lines = {name: usd * requests for name, usd in per_request(m, provider_s).items()}
    restores = min(
        requests, environments(m, requests, provider_s) * 730 * RESTORES_PER_ENVIRONMENT_HOUR
    )
    stored_gb = requests * m.retention_days / 30 * m.usage_item_bytes / 1024**3
    lines |= {
        "x-ray": xray_traces(requests) * XRAY_TRACE_USD,
        "snapstart restores": restores * m.gb * SNAPSTART_RESTORE_GB_USD,
        "dynamodb storage": stored_gb * DYNAMODB_GB_MONTH_USD,
        # Fixed: each SnapStart function's snapshot cached all month, the secret.
        "snapstart cache": SNAPSTART_FUNCTIONS
        * m.gb
        * SECONDS_A_MONTH
        * SNAPSTART_CACHE_GB_SECOND_USD,
        "secrets manager": SECRET_MONTH_USD,
    }
    return lines


def break_even(m: Measured, provider_s: float) -> float:
    """Requests a month at which the bill reaches the ECS guidance's (bisection: the bill grows
    with requests)."""
    low, high = 0.0, 1e12
    for _ in range(200):
        middle = (low + high) / 2
        if sum(monthly(m, int(middle), provider_s).values()) < ECS_GUIDANCE_MONTH_USD:
            low = middle
        else:
            high = middle
    return high


# --- Report -----------------------------------------------------------------------------------


def usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.4f}"


def count(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:,.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:,.0f}k"
    return f"{value:,.0f}"


def report(m: Measured, provider_seconds: Sequence[float]) -> str:
    """The bill as Markdown tables, with the figures it rests on."""
    share = min(1.0, m.memory_mb / FULL_VCPU_MB)
    out = [
        f"Figures from {m.source}; prices us-east-1, {m.architecture}, "
        f"MemorySize {m.memory_mb} MB (template.yaml), no free tier.",
        "",
        "| measured | value |",
        "|---|---|",
        f"| warm {PATH}, thaw to freeze under awslambdaric, wall (CPU) | "
        f"{m.wall_ms:.1f} ms ({m.cpu_ms:.1f} ms) |",
        f"| billed at {m.memory_mb} MB ({share:.2f} vCPU): wall + CPU x "
        f"{1 / share - 1:.2f} | {m.gateway_billed_ms:.1f} ms |",
        f"| usage item, rollup item | {m.usage_item_bytes:.0f} B, {m.rollup_item_bytes:.0f} B |",
        f"| DynamoDB write units a request (one transaction, 2 per KB per item) | "
        f"{m.write_units} |",
        "",
        "| per request (X-Ray, restores, storage and the fixed lines are monthly) | "
        + " | ".join(f"provider {s:g} s" for s in provider_seconds)
        + " |",
        "|---|" + "---|" * len(provider_seconds),
    ]
    lines = [per_request(m, s) for s in provider_seconds]
    for name in lines[0]:
        out.append(f"| {name} | " + " | ".join(f"${line[name] * 1e6:.2f}/M" for line in lines))
        out[-1] += " |"
    out.append(
        "| **total** | "
        + " | ".join(f"**${sum(line.values()) * 1e6:.2f}/M**" for line in lines)
        + " |"
    )
    out += [
        "",
        "| requests a month | "
        + " | ".join(f"provider {s:g} s" for s in provider_seconds)
        + " | ECS guidance |",
        "|---|" + "---|" * (len(provider_seconds) + 1),
    ]
    for volume in VOLUMES:
        bills = [sum(monthly(m, volume, s).values()) for s in provider_seconds]
        out.append(
            f"| {count(volume)} | "
            + " | ".join(usd(bill) for bill in bills)
            + f" | {usd(ECS_GUIDANCE_MONTH_USD)} + traffic |"
        )
    out.append(
        "| break-even with the ECS guidance | "
        + " | ".join(f"{count(break_even(m, s))} requests" for s in provider_seconds)
        + " | |"
    )
    biggest = monthly(m, VOLUMES[-1], provider_seconds[-1])
    out += [
        "",
        f"{count(VOLUMES[-1])} requests at provider {provider_seconds[-1]:g} s, by line: "
        + ", ".join(f"{name} {usd(value)}" for name, value in biggest.items()),
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.lambda_bill", description=__doc__
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=Path("bench-results.json"),
        help="the bench's figures (python -m scripts.bench --output)",
    )
    parser.add_argument(
        "--provider-s",
        type=float,
        nargs="+",
        default=[0.0, 2.0, 10.0],
        help="seconds each request waits for the provider (billed by Lambda)",
    )
    args = parser.parse_args(argv)
    if min(args.provider_s) < 0:
        parser.error("--provider-s must be >= 0")
    if not args.figures.exists():
        parser.error(f"{args.figures} not found: run `python -m scripts.bench` first")
    results = json.loads(args.figures.read_text(encoding="utf-8"))
    print(report(measured(results, str(args.figures)), args.provider_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
