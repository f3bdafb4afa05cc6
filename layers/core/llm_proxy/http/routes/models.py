"""The models a caller may ask for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from llm_proxy.http.dependencies import Authenticated, GatewayDep

router = APIRouter()
# Configured models have no creation time of their own.
EPOCH = "1970-01-01T00:00:00Z"


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request, gateway: GatewayDep, who: Authenticated) -> dict[str, Any]:
    """OpenAI's list; Anthropic's when the request carries `anthropic-version` (the anthropic
    SDK, Claude Code). A virtual key sees the models it may use."""
    names = gateway.models_for(who)
    if request.headers.get("anthropic-version"):
        return {
            "data": [
                # A configured model is served for as long as it is configured.
                {
                    "type": "model",
                    "id": name,
                    "display_name": name,
                    "created_at": EPOCH,
                    "lifecycle": "active",
                }
                for name in names
            ],
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "llm-proxy"} for name in names
    ]
    return {"object": "list", "data": data}
