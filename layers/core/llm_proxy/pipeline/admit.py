"""The pipeline's admit step: a key's rpm, tpm and budget, reserved in one conditional write
before the provider is called; the deployments' own limits are taken by the Router's pre-call
check (`access.limits.DeploymentLimitCheck`) under the same admission."""

from __future__ import annotations

import json
from typing import Any

import litellm

from llm_proxy.access.limits import Admission, Limiter, Reservation
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.router import ModelRouter


def needs_counters(request: GatewayRequest) -> bool:
    """Only a key with limits takes counters (a DynamoDB write); the rest is arithmetic."""
    key = request.caller.key
    return key is not None and key.has_limits


def admit(
    limiter: Limiter, request: GatewayRequest, router: ModelRouter, cache_hit: bool
) -> Admission:
    """The estimate it reserves is the prompt plus max_tokens, at the group's dearest price
    (nothing for a cache hit, which costs nothing)."""
    key = request.caller.key
    limits = {} if cache_hit or not limiter.table_name else router.deployment_limits
    tokens, estimated_cost = 0, 0.0
    # Only a tpm limit or a budget needs the estimate; rpm counts requests.
    counts_tokens = key is not None and (key.tpm_limit or key.max_budget is not None)
    if not cache_hit and (counts_tokens or any(limit.tpm for limit in limits.values())):
        tokens, estimated_cost = estimate(request, router)
    if key is None or not key.has_limits:
        return Admission(limiter, Reservation(tokens=tokens), limits)
    if not limiter.table_name:
        raise ProxyError(
            503,
            "This key has limits but no counters table is configured (LLM_PROXY__COUNTERS_TABLE).",
            "service_unavailable",
            code="counters_table_missing",
        )
    reservation = limiter.admit(key, tokens, estimated_cost)
    return Admission(limiter, reservation, limits)


def estimate(request: GatewayRequest, router: ModelRouter) -> tuple[int, float]:
    """Worst-case tokens and cost: the prompt, plus max_tokens at the group's dearest output
    price."""
    prompt, output = estimate_tokens(request.body)
    costs = [cost_usd(deployment, prompt, output) for deployment in router.in_group(request.model)]
    return prompt + output, max(costs, default=0.0)


def estimate_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """Before the call: the prompt's tokens, and the most the answer may use (max_tokens)."""
    try:
        prompt = int(litellm.token_counter(messages=body.get("messages") or []))
    except Exception:
        # About four characters a token, for content the tokenizer cannot read.
        prompt = len(json.dumps(body.get("messages") or body.get("input") or "")) // 4
    if "input" in body and "messages" not in body:
        prompt = len(json.dumps(body["input"])) // 4
    output = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return prompt, int(output)
