"""CloudWatch metrics in Embedded Metric Format (Powertools Metrics).

A provider per blob rather than the shared `Metrics` singleton: usage writes run in worker
threads, and each request carries its own dimensions. Nothing is emitted unless
POWERTOOLS_METRICS_NAMESPACE is set (the template sets it; the local stack does not, so
`make dev` output stays readable). POWERTOOLS_METRICS_DISABLED turns it off as usual.

Every dimension value is bounded and named by the operator or the gateway (a model group, an
agent, a status, a key's alias): a metric per raw key or per made-up name would be unbounded
in number and cost. The template's dashboard and alarms read these names (a test checks them).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from decimal import Decimal

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from llm_proxy.accounting.rollups import cut
from llm_proxy.logs import logger
from llm_proxy.settings import MetricsSettings

# CloudWatch takes printable ASCII dimension values of at most 1,024 characters.
DIMENSION_CHARS = 250
NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
NONE = "-"


def dimension_value(value: str | None) -> str:
    """A value CloudWatch accepts as a dimension: printable ASCII, cut to a bound (with the
    digest of the whole, so two long names stay apart), `-` for none."""
    text = NOT_PRINTABLE_ASCII.sub("?", value or "").strip()
    return cut(text, DIMENSION_CHARS) if text else NONE


def emit(
    values: Mapping[str, tuple[MetricUnit, float]],
    dimensions: Mapping[str, str] | None = None,
    *more: Mapping[str, str],
) -> None:
    """One EMF blob: metric name -> (unit, value), published under `dimensions` and under each
    further dimension set in `more` (`{}` is the service alone). Every set carries `service`."""
    # Read where used, so that it follows the environment (MetricsSettings.current).
    settings = MetricsSettings.current()
    namespace, service = settings.metrics_namespace, settings.service_name
    if namespace is None:
        return
    try:
        provider = AmazonCloudWatchEMFProvider(namespace=namespace, service=service)
        for name, value in (dimensions or {}).items():
            provider.add_dimension(name, dimension_value(value))
        for extra in more:
            provider.add_dimensions(
                service=service, **{k: dimension_value(v) for k, v in extra.items()}
            )
        for name, (unit, number) in values.items():
            provider.add_metric(name=name, unit=unit, value=number)
        if values and not is_metrics_disabled():
            blob = json.dumps(provider.serialize_metric_set(), separators=(",", ":"))
            # One write per blob: Powertools' print() writes the blob and its newline apart, so
            # two threads' blobs (the usage writer's, a request's log line) could share a line
            # that CloudWatch cannot parse.
            sys.stdout.write(blob + "\n")
    except Exception as exc:
        # Metrics must never fail a request.
        logger.warning("metrics not emitted", extra={"error": type(exc).__name__})


def emit_budget(owner: str | None, budget: Decimal | None, spend: Decimal | None) -> None:
    """`BudgetShare`, a key's spend over its budget (1.0 is all of it), when its budget counter
    was settled: per key (named by its alias or agent, never by the key) and as the highest
    over every key, which the budget alarms watch."""
    if budget is None or spend is None or budget <= 0:
        return
    share = float(spend / budget)
    emit({"BudgetShare": (MetricUnit.NoUnit, share)}, {"key_alias": owner or NONE}, {})
