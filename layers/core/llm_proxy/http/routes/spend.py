"""Spend over HTTPS: the cost report of the daily rollups, for any period, as JSON, CSV or the
HTML page the scheduled report writes (master key only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from llm_proxy.http.dependencies import GatewayDep, MasterKey

router = APIRouter(dependencies=[MasterKey])

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
    start: str | None = None,
    end: str | None = None,
    output: Annotated[str, Query(alias="format")] = "json",
) -> Any:
    """Cost and usage per day, model, key, agent, team and user from the daily rollups (master
    key). `start`/`end` are UTC dates, both included; yesterday by default. `format=html` is
    the scheduled report's page, `format=csv` one line per day, model, key, agent, team and
    user."""
    report = await gateway.spend_report(start, end, output)
    if isinstance(report.body, dict):
        return report.body
    headers = dict(PAGE_HEADERS)
    if report.filename:
        headers["Content-Disposition"] = f'attachment; filename="{report.filename}"'
    return Response(report.body, media_type=report.media_type, headers=headers)
