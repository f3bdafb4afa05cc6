"""The pipeline's admit step: a key's rpm, tpm and budget, reserved in one conditional write
before the provider is called; the deployments' own limits are taken by the Router's pre-call
check (`access.limits.DeploymentLimitCheck`) under the same admission."""

from __future__ import annotations

import time
from typing import Any

from llm_proxy.access.limits import Admission, Reservation, budget_exceeded
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.errors import REQUEST_EXCEEDS_LIMIT, ProxyError
from llm_proxy.pipeline.billed_input import count_request_input
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.request_options import candidate_models
from llm_proxy.pipeline.server_tools import server_tool_reserve
from llm_proxy.store.counters import CountersTable

# What an answer of unknown length is reserved at, where the model's own limit is unknown.
DEFAULT_OUTPUT_RESERVE = 4096


def needs_counters(request: GatewayRequest) -> bool:
    """Only a key with limits takes counters (a DynamoDB write); the rest is arithmetic."""
    key = request.caller.key
    return key is not None and key.has_limits


def admit(
    counters: CountersTable, request: GatewayRequest, router: ModelRouter, cache_hit: bool
) -> Admission:
    """The estimate it reserves is the worst case (see `estimate`; nothing for a cache hit,
    which costs nothing). A request whose worst case can never fit the key's tpm limit or
    budget is refused outright, the first of a window like any other."""
    key = request.caller.key
    calls_nothing = cache_hit or request.api.router_call is None
    limits = {} if calls_nothing or not counters.enabled else router.deployment_limits
    tokens, estimated_cost = 0, 0.0
    # Only a tpm limit or a budget needs the estimate; rpm counts requests.
    counts_tokens = key is not None and (key.tpm_limit or key.max_budget is not None)
    if not cache_hit and (counts_tokens or any(limit.tpm for limit in limits.values())):
        tokens, estimated_cost = estimate(request, router)
    if key is None or not key.has_limits:
        return Admission(counters, Reservation(tokens=tokens), limits)
    # A key with limits requires the counters table (a 503 before any 400 below).
    counters.require()
    if key.tpm_limit and tokens > key.tpm_limit:
        raise never_fits(f"{tokens} tokens", f"limit of {key.tpm_limit} tokens per minute")
    if key.max_budget is not None and (estimated_cost > key.max_budget or key.max_budget <= 0):
        # Refused either way: a spent budget says so, as LiteLLM does; else the request alone
        # is too dear for the whole budget.
        spent = counters.spend(key)
        if spent >= key.max_budget:
            raise budget_exceeded(key, spent, time.time())
        raise never_fits(f"${estimated_cost:.6f}", f"budget of ${key.max_budget}")
    reservation = counters.admit(key, tokens, estimated_cost)
    return Admission(counters, reservation, limits)


def never_fits(estimate: str, limit: str) -> ProxyError:
    return REQUEST_EXCEEDS_LIMIT(
        f"This request may use up to {estimate}, more than this key's {limit}: lower "
        "max_tokens (or n).",
        param="max_tokens",
    )


def estimate(request: GatewayRequest, router: ModelRouter) -> tuple[int, float]:
    """Worst-case tokens and cost: n answers, each everything the provider bills as input
    (`billed_input`) plus the longest answer the request allows (its max tokens, else the
    model's limit), at the dearest price of the deployments that may answer (the model's
    group and its fallbacks'), and the uses of provider-run tools the request bounds."""
    if request.api.router_call is None:
        return 0, 0.0
    prompt = count_request_input(request)
    output = requested_output_tokens(request.body)
    if request.api.generates and not output:
        output = router.max_output_tokens(request.model) or DEFAULT_OUTPUT_RESERVE
    choices = int(request.body.get("n") or 1)
    prompt, output = prompt * choices, output * choices
    costs = [
        cost_usd(deployment, prompt, output)
        for model in candidate_models(request, router)
        for deployment in router.in_group(model)
    ]
    tools = server_tool_reserve(request, router) * choices
    return prompt + output, max(costs, default=0.0) + tools


def requested_output_tokens(body: dict[str, Any]) -> int:
    """The most the answer may use, as the request bounds it (0: unbounded)."""
    output = (
        body.get("max_completion_tokens")
        or body.get("max_tokens")
        or body.get("max_output_tokens")
        or 0
    )
    return int(output)
