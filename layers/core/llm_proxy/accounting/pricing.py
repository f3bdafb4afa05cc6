"""Cost in USD from token counts and from the uses of provider-run tools (web searches): the
deployment's own prices first, then litellm's cost map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm

from llm_proxy.logs import logger

# LiteLLM's name for the price of one web search (its cost map's, and a deployment's).
WEB_SEARCH_PRICE = "search_context_cost_per_query"


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


def per_use_price(deployment: Mapping[str, Any], name: str) -> float | None:
    """The price of one use of a provider-run tool, under LiteLLM's name for it (a web search:
    `search_context_cost_per_query`): the deployment's (litellm_params, then model_info), else
    litellm's cost map; None where neither knows it. LiteLLM prices a search per context size
    (`{search_context_size_low: ..., ...}`); the dearest is taken, the size a provider used
    being unknown to the gateway."""
    params = deployment.get("litellm_params") or {}
    info = deployment.get("model_info") or {}
    value: Any = params.get(name, info.get(name))
    if value is None:
        try:
            value = litellm.get_model_info(str(params.get("model", ""))).get(name)
        except Exception:
            return None
    if isinstance(value, Mapping):
        prices = [float(price) for price in value.values() if price is not None]
        return max(prices) if prices else None
    return None if value is None else float(value)


def web_search_cost(deployment: Mapping[str, Any], searches: int) -> float:
    """What `searches` web searches cost on the deployment (0 where it has no known price: such
    a deployment cannot enable web search, `pipeline.server_tools`)."""
    if searches <= 0:
        return 0.0
    return searches * (per_use_price(deployment, WEB_SEARCH_PRICE) or 0.0)


def _price(params: Mapping[str, Any], info: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name, info.get(name))
    return None if value is None else float(value)
