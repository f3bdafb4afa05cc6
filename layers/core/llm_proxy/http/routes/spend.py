"""Spend over HTTPS: the cost report of the daily rollups, for any period."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from llm_proxy.http.dependencies import Authenticated, GatewayDep

router = APIRouter()


@router.get("/spend/report")
async def spend_report(
    gateway: GatewayDep, who: Authenticated, start: str | None = None, end: str | None = None
) -> dict[str, Any]:
    """Cost and usage per day, model, key and agent from the daily rollups (master key).
    `start`/`end` are UTC dates, both included; yesterday by default."""
    who.require_master()
    report = await asyncio.to_thread(gateway.spend_report, start, end)
    return report.as_dict()
