"""LiteLLM's `/model/info`: the caller's models with their limits, prices and capabilities."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from llm_proxy.http.dependencies import Authenticated, GatewayDep

router = APIRouter()


@router.get("/v1/model/info")
@router.get("/model/info", include_in_schema=False)
async def model_info(
    gateway: GatewayDep, who: Authenticated, litellm_model_id: str | None = None
) -> dict[str, Any]:
    """Every deployment of the models the caller may use (LiteLLM's shape: `model_name`,
    `litellm_params.model`, `model_info`); one deployment by its id with `litellm_model_id`."""
    entries = gateway.model_info_for(who)
    if litellm_model_id is not None:
        entries = [entry for entry in entries if entry["model_info"]["id"] == litellm_model_id]
    return {"data": entries}
