"""LiteLLM's model info (`GET /model/info`): each deployment the caller may use, with its
context and output limits, prices and capabilities, in the LiteLLM proxy's shape. Kilo Code's
and Cline's LiteLLM providers, OpenHands and other LiteLLM clients read their models' limits
here. A deployment's URLs, keys and other parameters are the operator's: only its model
shows."""

from __future__ import annotations

from typing import Any

import litellm

from llm_proxy.pipeline.model_router import ModelRouter

# What LiteLLM's model map says of a model that clients read, where it says it.
MAPPED_FIELDS = (
    "max_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "litellm_provider",
    "mode",
    "supports_function_calling",
    "supports_parallel_function_calling",
    "supports_tool_choice",
    "supports_vision",
    "supports_reasoning",
    "supports_prompt_caching",
    "supports_response_schema",
    "supports_system_messages",
)
# The deployment's own prices override the map's (the operator's prices are what is metered).
PRICE_PARAMS = ("input_cost_per_token", "output_cost_per_token")


def model_info(router: ModelRouter, models: list[str]) -> list[dict[str, Any]]:
    """LiteLLM's entry for every deployment of `models` (names a caller may use), in config
    order; an alias's entries are its group's, under the alias's name."""
    entries = []
    for name in models:
        group = router.group_of(name)
        for deployment_id, deployment in router.deployments.items():
            if deployment.get("model_name") == group:
                entries.append(_entry(name, deployment_id, deployment))
    return entries


def _entry(name: str, deployment_id: str, deployment: dict[str, Any]) -> dict[str, Any]:
    params = deployment["litellm_params"]
    model = str(params["model"])
    info: dict[str, Any] = {"id": deployment_id, "key": model}
    mapped = _mapped(model)
    info.update({field: mapped[field] for field in MAPPED_FIELDS if mapped.get(field) is not None})
    info.update({field: params[field] for field in PRICE_PARAMS if params.get(field) is not None})
    info.update(deployment.get("model_info") or {})
    info["id"] = deployment_id
    return {"model_name": name, "litellm_params": {"model": model}, "model_info": info}


def _mapped(model: str) -> dict[str, Any]:
    try:
        return dict(litellm.get_model_info(model))
    except Exception:
        return {}
