"""The cost-report Lambda function: run by an EventBridge schedule (yesterday, UTC) or invoked
with `{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}` to backfill a period."""

from __future__ import annotations

from typing import Any

from llm_proxy.reports.publish import period_of, run
from llm_proxy.settings import CostReportSettings


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Settings are read per invocation: they are a few environment variables.
    return run(period_of(event), CostReportSettings.from_env())
