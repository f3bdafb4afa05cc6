"""CloudWatch metrics in Embedded Metric Format (Powertools Metrics), one blob per request.

A provider per blob rather than the shared `Metrics` singleton: usage writes run in worker
threads, and each request carries its own `model` dimension. Nothing is emitted unless
POWERTOOLS_METRICS_NAMESPACE is set (the template sets it; the local stack does not, so
`make dev` output stays readable). POWERTOOLS_METRICS_DISABLED turns it off as usual.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from llm_proxy.logs import logger

NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
SERVICE = "llm-proxy"


def _namespace() -> str | None:
    return os.environ.get(NAMESPACE_ENV) or None


def emit(
    values: Mapping[str, tuple[MetricUnit, float]], dimensions: Mapping[str, str] | None = None
) -> None:
    """One EMF blob: metric name -> (unit, value), under the given dimensions."""
    namespace = _namespace()
    if namespace is None:
        return
    try:
        provider = AmazonCloudWatchEMFProvider(
            namespace=namespace, service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE
        )
        for name, value in (dimensions or {}).items():
            provider.add_dimension(name, value)
        for name, (unit, number) in values.items():
            provider.add_metric(name=name, unit=unit, value=number)
        provider.flush_metrics()
    except Exception as exc:
        # Metrics must never fail a request.
        logger.warning("metrics not emitted", extra={"error": type(exc).__name__})
