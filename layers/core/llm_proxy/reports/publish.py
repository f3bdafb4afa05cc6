"""The scheduled cost report: period from the event, report from rollups, objects in S3 under
a dated key (a re-run of the same period overwrites them), a summary on SNS, EMF metrics."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from llm_proxy import aws
from llm_proxy.accounting import metrics
from llm_proxy.accounting.totals import money
from llm_proxy.logs import logger
from llm_proxy.reports.html import to_html
from llm_proxy.reports.period import Period, parse_period, yesterday
from llm_proxy.reports.render import to_csv, to_json, to_text
from llm_proxy.reports.report import Report, report_for
from llm_proxy.settings import CostReportSettings

CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
SUBJECT_LIMIT = 100  # SNS refuses longer subjects


def period_of(event: Mapping[str, Any] | None, now: datetime | None = None) -> Period:
    """The day before the schedule fired (the event's `time`; UTC), so a late or repeated
    invocation reports the same day; `start`/`end` in the event (or in its `detail`) override
    it for backfills."""
    event = event or {}
    if now is None and isinstance(event.get("time"), str):
        now = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    detail = event.get("detail") if isinstance(event.get("detail"), Mapping) else {}
    start = event.get("start") or (detail or {}).get("start")
    end = event.get("end") or (detail or {}).get("end")
    return parse_period(start, end, yesterday(now))


def object_keys(period: Period, prefix: str) -> dict[str, str]:
    return {ext: f"{prefix}/{period.label}/cost-report.{ext}" for ext in CONTENT_TYPES}


def renderings(report: Report) -> dict[str, str]:
    return {"json": to_json(report), "csv": to_csv(report), "html": to_html(report)}


def summary(report: Report, location: str | None) -> tuple[str, str]:
    subject = (
        f"LLM Proxy cost {report.period.label}: ${money(report.total.cost_usd):.2f}, "
        f"{len(report.flagged)} key(s) over budget share"
    )[:SUBJECT_LIMIT]
    body = to_text(report, limit=5)
    if location:
        body += f"\n\nFull report: {location}"
    return subject, body


def run(
    period: Period, settings: CostReportSettings, now: datetime | None = None
) -> dict[str, Any]:
    return publish(report_for(period, settings, now), settings)


def publish(report: Report, settings: CostReportSettings) -> dict[str, Any]:
    """The report's objects to the bucket, its summary to the topic (each when configured)."""
    period = report.period
    keys = object_keys(period, settings.report_prefix)
    if settings.report_bucket:
        s3 = aws.client("s3")
        for ext, text in renderings(report).items():
            s3.put_object(
                Bucket=settings.report_bucket,
                Key=keys[ext],
                Body=text.encode(),
                ContentType=CONTENT_TYPES[ext],
            )
    location = f"s3://{settings.report_bucket}/{keys['html']}" if settings.report_bucket else None
    message_id = None
    if settings.report_topic_arn:
        subject, body = summary(report, location)
        message_id = aws.client("sns").publish(
            TopicArn=settings.report_topic_arn, Subject=subject, Message=body
        )["MessageId"]
    _emit_metrics(report)
    result = {
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "objects": [f"s3://{settings.report_bucket}/{key}" for key in keys.values()]
        if settings.report_bucket
        else [],
        "message_id": message_id,
        "cost_usd": money(report.total.cost_usd),
        "requests": report.total.requests,
        "keys_over_budget_share": [flag.key_id for flag in report.flagged],
    }
    logger.info("cost report written", extra=result)
    return result


def _emit_metrics(report: Report) -> None:
    total = report.total
    metrics.emit(
        {
            "ReportCostUSD": (MetricUnit.NoUnit, money(total.cost_usd)),
            "ReportRequests": (MetricUnit.Count, total.requests),
            "ReportErrors": (MetricUnit.Count, total.errors),
            "KeysOverBudgetShare": (MetricUnit.Count, len(report.flagged)),
        }
    )
    for model, totals in report.by_model.items():
        metrics.emit(
            {"ReportCostUSD": (MetricUnit.NoUnit, money(totals.cost_usd))}, {"model": model}
        )
