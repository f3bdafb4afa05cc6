"""LiteLLM's request-level routing options, the same on every API: `fallbacks` (the models
tried in turn when the requested one fails), `num_retries`, and `timeout` (in the body, or
LiteLLM's `x-litellm-timeout` header). A caller names only fallbacks its key may use, each a
model this gateway serves, and nothing but the model (a fallback is called with the request's
own parameters: a per-fallback `api_base` or key would be the caller's deployment); retries
stay within the operator's LLM_PROXY__MAX_REQUEST_RETRIES and time within the provider
deadline. Anthropic's Messages API names its fallbacks as `{"model": ...}` objects, or
`"default"`: the operator's configured fallbacks.

Where the operator allows them (LLM_PROXY__MOCK_TESTING_PARAMS), LiteLLM's testing parameters
too, each of the type LiteLLM takes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llm_proxy.errors import INVALID_VALUE, MODEL_NOT_ALLOWED, ProxyError
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import MAX_MODEL_NAME, GatewayRequest

ROUTING_OPTIONS = frozenset({"fallbacks", "num_retries", "timeout"})
TIMEOUT_HEADER = "x-litellm-timeout"
# LiteLLM's own bound on the fallbacks one request tries (`max_fallbacks`).
MAX_FALLBACKS = 5
# LiteLLM's testing parameters, and the type of each.
MOCK_TESTING_PARAMS: dict[str, type] = {
    "mock_response": str,
    "mock_testing_fallbacks": bool,
    "mock_testing_rate_limit_error": bool,
    "mock_timeout": bool,
}


def with_header_timeout(body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The body with `x-litellm-timeout` as its `timeout` where the body sets none."""
    value = headers.get(TIMEOUT_HEADER)
    if value is None or "timeout" in body:
        return body
    try:
        seconds = float(value)
    except ValueError:
        raise bad_timeout(TIMEOUT_HEADER) from None
    return {**body, "timeout": seconds}


def check_routing_options(
    request: GatewayRequest,
    router: ModelRouter,
    served: list[str],
    accepts_any: bool,
    max_retries: int,
    deadline_s: float | None,
) -> None:
    """Each option checked, and set in the body the Router gets as litellm reads it:
    fallbacks as model names, the timeout within the deadline."""
    body = request.body
    if "fallbacks" in body:
        names = fallback_names(body["fallbacks"])
        for name in names:
            check_fallback(request, name, served, accepts_any)
        if names:
            body["fallbacks"] = names
        else:
            del body["fallbacks"]  # Anthropic's "default": the operator's fallbacks
    if "num_retries" in body:
        retries = body["num_retries"]
        if type(retries) is not int or not 0 <= retries <= max_retries:
            raise INVALID_VALUE(
                f"'num_retries' must be an integer from 0 to {max_retries}.", param="num_retries"
            )
    if "timeout" in body:
        timeout = body["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise bad_timeout("timeout")
        if not math.isfinite(timeout) or timeout <= 0:
            raise bad_timeout("timeout")
        # The gateway's own deadline holds whatever the caller asks.
        body["timeout"] = min(timeout, deadline_s) if deadline_s else timeout


def fallback_names(fallbacks: Any) -> list[str]:
    """The model names a `fallbacks` value lists: LiteLLM's names or `{"model": name}`
    objects, Anthropic's objects; [] for none or Anthropic's "default"."""
    if fallbacks is None or fallbacks == "default":
        return []
    if not isinstance(fallbacks, list):
        raise INVALID_VALUE(
            "'fallbacks' must be a list of model names (or of {\"model\": name} objects).",
            param="fallbacks",
        )
    if len(fallbacks) > MAX_FALLBACKS:
        raise INVALID_VALUE(
            f"'fallbacks' may list at most {MAX_FALLBACKS} models.", param="fallbacks"
        )
    names = []
    for index, entry in enumerate(fallbacks):
        if isinstance(entry, dict):
            for name, value in entry.items():
                # Anthropic's per-fallback overrides, absent or null, say nothing.
                if name != "model" and value is not None:
                    raise INVALID_VALUE(
                        f"'fallbacks[{index}].{str(name)[:100]}' is not supported: a fallback "
                        "is called with the request's own parameters.",
                        param="fallbacks",
                    )
            entry = entry.get("model")
        if not isinstance(entry, str) or not entry or len(entry) > MAX_MODEL_NAME:
            raise INVALID_VALUE(
                f"'fallbacks[{index}]' must name a model (1 to {MAX_MODEL_NAME} characters).",
                param="fallbacks",
            )
        names.append(entry)
    return names


def check_fallback(
    request: GatewayRequest, name: str, served: list[str], accepts_any: bool
) -> None:
    refusal = request.caller.refusal(name)
    if refusal is not None:
        raise MODEL_NOT_ALLOWED(
            refusal.replace(f"model '{name}'", f"fallback model '{name}'"), param="fallbacks"
        )
    if name not in served and not accepts_any:
        raise INVALID_VALUE(
            f"Fallback model '{name}' is not configured on this gateway. Available models: "
            f"{', '.join(served) or 'none'}.",
            param="fallbacks",
        )


def candidate_models(request: GatewayRequest, router: ModelRouter) -> list[str]:
    """The models that may answer: the one asked for, then the request's own fallbacks, else
    the operator's."""
    fallbacks = request.body.get("fallbacks")
    listed = fallbacks if isinstance(fallbacks, list) else router.fallbacks(request.model)
    return [request.model, *listed]


def check_mock_testing_params(body: Mapping[str, Any]) -> None:
    for name, kind in MOCK_TESTING_PARAMS.items():
        if name in body and not isinstance(body[name], kind):
            raise INVALID_VALUE(
                f"'{name}' must be a {'string' if kind is str else 'boolean'}.", param=name
            )


def bad_timeout(param: str) -> ProxyError:
    return INVALID_VALUE(f"'{param}' must be a number of seconds above 0.", param=param)
