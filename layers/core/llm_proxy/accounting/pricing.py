"""Cost in USD from token counts: per-deployment prices first, then litellm's cost map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm

from llm_proxy.logs import logger


def cost_usd(deployment: Mapping[str, Any], prompt_tokens: int, completion_tokens: int) -> float:
    """`deployment` is a model_list entry: its litellm_params/model_info may carry prices."""
    params = deployment.get("litellm_params") or {}
    info = deployment.get("model_info") or {}
    input_price = _price(params, info, "input_cost_per_token")
    output_price = _price(params, info, "output_cost_per_token")
    if input_price is not None or output_price is not None:
        return prompt_tokens * (input_price or 0.0) + completion_tokens * (output_price or 0.0)
    model = str(params.get("model", ""))
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:
        logger.warning("no price known for model; cost recorded as 0", extra={"model": model})
        return 0.0
    return float(prompt_cost) + float(completion_cost)


def _price(params: Mapping[str, Any], info: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name, info.get(name))
    return None if value is None else float(value)
