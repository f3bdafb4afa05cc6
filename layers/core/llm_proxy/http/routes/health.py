"""Liveness and readiness: no key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from llm_proxy.http.dependencies import GatewayDep
from llm_proxy.readiness import DEGRADED, UNREACHABLE

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/readiness", response_model=None)
async def readiness(gateway: GatewayDep) -> dict[str, Any] | JSONResponse:
    checks = gateway.readiness()
    if any(value == UNREACHABLE for value in checks.values()):
        return JSONResponse({"status": "not ready", "checks": checks}, status_code=503)
    degraded = any(value == DEGRADED for value in checks.values())
    return {"status": "degraded" if degraded else "ready", "checks": checks}
