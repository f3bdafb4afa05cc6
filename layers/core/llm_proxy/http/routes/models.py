"""The models a caller may ask for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from llm_proxy.http.dependencies import Authenticated, GatewayDep

router = APIRouter()


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(gateway: GatewayDep, who: Authenticated) -> dict[str, Any]:
    # A virtual key sees the models it may use.
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "llm-proxy"}
        for name in gateway.model_names()
        if who.key is None or who.key.allows(name)
    ]
    return {"object": "list", "data": data}
