"""Spend over HTTPS: the cost report of the daily rollups, for any period, as JSON, CSV or the
HTML page the scheduled report writes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from llm_proxy.errors import invalid_request
from llm_proxy.http.dependencies import Authenticated, GatewayDep
from llm_proxy.reports.html import to_html
from llm_proxy.reports.render import to_csv

router = APIRouter()

FORMATS = ("json", "html", "csv")
# The page has inline CSS and SVG only: nothing to load and no script to run, whatever the
# names it shows.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.get(
    "/spend/report",
    responses={
        200: {
            "description": "The report: JSON by default, or `format=html` / `format=csv`",
            "content": {"application/json": {}, "text/html": {}, "text/csv": {}},
        }
    },
)
async def spend_report(
    gateway: GatewayDep,
    who: Authenticated,
    start: str | None = None,
    end: str | None = None,
    output: Annotated[str, Query(alias="format")] = "json",
) -> Any:
    """Cost and usage per day, model, key and agent from the daily rollups (master key).
    `start`/`end` are UTC dates, both included; yesterday by default. `format=html` is the
    scheduled report's page, `format=csv` one line per day, model, key and agent."""
    who.require_master()
    if output not in FORMATS:
        raise invalid_request(
            f"'format' must be one of {', '.join(FORMATS)}.", param="format", code="invalid_format"
        )
    report = await asyncio.to_thread(gateway.spend_report, start, end)
    if output == "html":
        return Response(
            to_html(report), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
        )
    if output == "csv":
        name = f"cost-report-{report.period.label}.csv"
        headers = {**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
        return Response(to_csv(report), media_type="text/csv; charset=utf-8", headers=headers)
    return report.as_dict()
