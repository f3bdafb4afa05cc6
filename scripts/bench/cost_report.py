"""`make bench`, third step: the cost report's time over synthetic usage of 1,000 and of
100,000 requests (writes bench-report.json).

The report reads daily rollups, never the usage table, so its time follows the number of
rollup items (days x models x keys/agents), not the number of requests. Each size gets its own
rollup table in a moto server on loopback:

- 1,000 requests go through the real write path: one transaction per usage item (the item
  and its rollup ADD), as the api function writes them. The rollups the ADDs produced are
  checked against the in-memory aggregation of the same items.
- 100,000 requests are aggregated in memory by the same rollup code
  (`devstack.rollups.aggregate`) and the resulting items written with BatchWriteItem: 100,000
  transactions against moto would take many minutes and measure moto, not the report.

The report is then built `--runs` times for a 7-day period (one Query per day, totals, JSON,
CSV and HTML) and the median compared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from llm_proxy.accounting.rollups import Rollup
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.reports.period import Period
from llm_proxy.reports.publish import renderings
from llm_proxy.reports.report import report_for
from llm_proxy.settings import CostReportSettings
from llm_proxy.store.rollups import RollupsTable
from llm_proxy.store.usage import UsageTable

from devstack.aws import REPO_ROOT, aws_env, create_request_for, start_moto
from devstack.rollups import aggregate
from devstack.server import free_port

DAYS = 7
MODELS = {  # model group: (input, output) USD per 1M tokens, the seed's tables
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4": (30.00, 60.00),
    "claude-3-haiku": (0.25, 1.25),
    "llama2": (0.0, 0.0),
}
KEYS = 10
AGENTS = ("orchestrator", "coder", "architect", "debug", "ask")
TEAMS = ("platform", "search", "mobile")
START = date(2024, 5, 1)


def synthetic_items(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` usage items spread over DAYS days, MODELS, KEYS keys (each used by one agent, and
    of one team and one user)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible benchmark data, not secrets
    items = []
    for _ in range(count):
        day = START + timedelta(days=rng.randrange(DAYS))
        model = rng.choice(list(MODELS))
        key = rng.randrange(KEYS)
        prompt, completion = rng.randint(50, 4000), rng.randint(10, 1000)
        price_in, price_out = MODELS[model]
        failed = rng.random() < 0.02
        record = UsageRecord(
            request_id=uuid.UUID(int=rng.getrandbits(128)).hex,
            endpoint="/v1/chat/completions",
            key_id=f"key-{key:02d}",
            team_id=TEAMS[key % len(TEAMS)],
            user_id=f"user-{key // 2:02d}",
            agent=AGENTS[key % len(AGENTS)],
            model_group=model,
            prompt_tokens=0 if failed else prompt,
            completion_tokens=0 if failed else completion,
            cost_usd=0.0 if failed else (prompt * price_in + completion * price_out) / 1e6,
            latency_ms=rng.uniform(200, 5000),
            status=502 if failed else 200,
            cache_hit=rng.random() < 0.05,
            started_at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp(),
        )
        items.append(record.to_item(retention_days=90))
    return items


def _create_table(logical_id: str, name: str, dynamodb: Any) -> None:
    dynamodb.create_table(**create_request_for(logical_id, name))
    dynamodb.get_waiter("table_exists").wait(TableName=name)


def populate(size: int, usage_table: str, rollups_table: str) -> dict[str, Any]:
    items = synthetic_items(size)
    started = time.perf_counter()
    if size <= 1_000:
        store = UsageTable(usage_table, 90, rollups_table=rollups_table)
        for item in items:
            store.store(item)
        how = "write path: one transaction per request (usage item + rollup ADD)"
        written = RollupsTable(rollups_table).between(START, START + timedelta(days=DAYS - 1))
        expected = {_key(row): row for row in aggregate(items)}
        assert {_key(row): row for row in written} == expected, "ADDs differ from aggregate()"
    else:
        put_rollups(rollups_table, aggregate(items))
        how = "rollups.aggregate() in memory, then BatchWriteItem of the rollup items"
    return {
        "requests": size,
        "populated_by": how,
        "populate_s": round(time.perf_counter() - started, 2),
    }


def put_rollups(table_name: str, rows: Iterable[Rollup]) -> None:
    """Write whole rollups, 25 items a batch."""
    with boto3.resource("dynamodb").Table(table_name).batch_writer() as batch:
        for row in rows:
            batch.put_item(Item={**asdict(row), "rollup_key": row.key.sort_key})


def _key(row: Rollup) -> tuple[str, ...]:
    return (row.day, row.model, row.key_id, row.agent, row.team_id, row.user_id)


def time_report(rollups_table: str, runs: int) -> dict[str, Any]:
    settings = CostReportSettings.of(rollups_table=rollups_table, budget_alert_share=0.8)
    period = Period(START, START + timedelta(days=DAYS - 1))
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        report = report_for(period, settings)
        renderings(report)
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "rollup_items": len(report.rows),
        "report_requests": report.total.requests,
        "report_ms_median": round(statistics.median(samples), 1),
        "report_ms_min": round(min(samples), 1),
        "report_ms_max": round(max(samples), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.cost_report", description=__doc__
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-report.json")
    parser.add_argument("--endpoint", help="an AWS endpoint already set up (else moto starts)")
    args = parser.parse_args(argv)

    server = None
    if not args.endpoint:
        # Only DynamoDB is needed, under a table name per size: moto alone, none of the stack.
        port = free_port()
        server = start_moto(port)
        os.environ.update(aws_env(f"http://127.0.0.1:{port}"))
    dynamodb = boto3.client("dynamodb")
    run = uuid.uuid4().hex[:6]
    results = []
    try:
        for size in args.sizes:
            usage, rollups = f"bench-usage-{size}-{run}", f"bench-rollups-{size}-{run}"
            _create_table("UsageTable", usage, dynamodb)
            _create_table("RollupsTable", rollups, dynamodb)
            result = populate(size, usage, rollups)
            result.update(time_report(rollups, args.runs))
            assert result["report_requests"] == size
            results.append(result)
            print(
                f"{size:>8} requests -> {result['rollup_items']:>5} rollup items, "
                f"report median {result['report_ms_median']:8.1f} ms "
                f"(populated in {result['populate_s']} s: {result['populated_by']})"
            )
    finally:
        if server is not None:
            server.stop()
    ratio = results[-1]["report_ms_median"] / results[0]["report_ms_median"]
    summary = {
        "period_days": DAYS,
        "models": len(MODELS),
        "keys": KEYS,
        "results": results,
        "ratio_largest_to_smallest": round(ratio, 2),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"ratio {args.sizes[-1]:,} / {args.sizes[0]:,} requests: {ratio:.2f} "
        f"(target <= 2); written to {args.out}"
    )
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
