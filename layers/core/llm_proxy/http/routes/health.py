"""Liveness and readiness: no key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from llm_proxy.http.dependencies import GatewayDep

router = APIRouter()


@router.get("/health")
@router.get("/health/liveliness", include_in_schema=False)  # the LiteLLM proxy's spelling
@router.get("/health/liveness", include_in_schema=False)
async def health() -> dict[str, str]:
    """Liveness: no dependency is called."""
    return {"status": "ok"}


@router.get("/health/readiness", response_model=None)
async def readiness(gateway: GatewayDep) -> dict[str, Any] | JSONResponse:
    status, body = gateway.readiness()
    return body if status == 200 else JSONResponse(body, status_code=status)
