"""Cost in USD from token counts: per-deployment prices first, then litellm's cost map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm

from llm_proxy.logs import logger


def cost_usd(
    deployment: Mapping[str, Any],
    prompt_tokens: int,
    completion_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """`deployment` is a model_list entry: its litellm_params/model_info may carry prices.
    `prompt_tokens` includes the prompt-cache reads and writes, which have prices of their own
    (`cache_read_input_token_cost`, `cache_creation_input_token_cost`; the input price where
    none is set)."""
    params = deployment.get("litellm_params") or {}
    info = deployment.get("model_info") or {}
    input_price = _price(params, info, "input_cost_per_token")
    output_price = _price(params, info, "output_cost_per_token")
    if input_price is not None or output_price is not None:
        read_price = _price(params, info, "cache_read_input_token_cost")
        write_price = _price(params, info, "cache_creation_input_token_cost")
        uncached = max(prompt_tokens - cache_read_tokens - cache_write_tokens, 0)
        return (
            uncached * (input_price or 0.0)
            + cache_read_tokens * (input_price or 0.0 if read_price is None else read_price)
            + cache_write_tokens * (input_price or 0.0 if write_price is None else write_price)
            + completion_tokens * (output_price or 0.0)
        )
    model = str(params.get("model", ""))
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cache_read_input_tokens=cache_read_tokens,
            cache_creation_input_tokens=cache_write_tokens,
        )
    except Exception:
        logger.warning("no price known for model; cost recorded as 0", extra={"model": model})
        return 0.0
    return float(prompt_cost) + float(completion_cost)


def _price(params: Mapping[str, Any], info: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name, info.get(name))
    return None if value is None else float(value)
