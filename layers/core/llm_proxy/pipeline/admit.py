"""The pipeline's admit step: every rate limit and budget that holds the request (its key's,
team's and user's: `access.budgets`), reserved in one conditional transaction before the
provider is called; the deployments' own limits are taken by the Router's pre-call check
(`access.limits.DeploymentLimitCheck`) under the same admission.

A budget fallback serves a request a spent budget would refuse: the key's `budget_fallbacks`
where its `model_max_budget` for the model is spent, else the operator's
`router_settings.budget_fallbacks` for any spent budget (which the fallback is then not held
to: it is counted, not refused)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from llm_proxy.access.budgets import BudgetRefused, plan_for
from llm_proxy.access.limits import Admission, Reservation
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
    """Only a key with limits, or a request of a team or user, takes counters (a DynamoDB
    write); the rest is arithmetic."""
    caller = request.caller
    return (caller.key is not None and caller.key.has_limits) or bool(caller.owners)


def admit(
    counters: CountersTable,
    request: GatewayRequest,
    router: ModelRouter,
    cache_hit: bool,
    budget_fallbacks: Mapping[str, list[str]] | None = None,
) -> tuple[Admission, GatewayRequest]:
    """The admission, and the request as it will be served: another model's where a budget
    fallback serves it. The estimate it reserves is the worst case (see `estimate`; nothing
    for a cache hit, which costs nothing). A request whose worst case can never fit a tpm
    limit or a budget is refused outright, the first of a window like any other."""
    calls_nothing = cache_hit or request.api.router_call is None
    limits = {} if calls_nothing or not counters.enabled else router.deployment_limits
    if not needs_counters(request):
        tokens = 0
        if not cache_hit and limits_tpm(limits):
            tokens = estimate(request, router)[0]
        return Admission(counters, Reservation(tokens=tokens), limits), request
    # Counters require the table (a 503 before any 400 below).
    counters.require()
    deployment_tpm = limits_tpm(limits)
    try:
        reservation = reserve(counters, request, router, cache_hit, deployment_tpm)
    except BudgetRefused as refused:
        served = budget_fallback(
            counters, request, router, cache_hit, refused, budget_fallbacks or {}, deployment_tpm
        )
        if served is None:
            raise refused.error from None
        reservation, request = served
    return Admission(counters, reservation, limits), request


def limits_tpm(limits: Mapping[str, Any]) -> bool:
    return any(limit.tpm for limit in limits.values())


def reserve(
    counters: CountersTable,
    request: GatewayRequest,
    router: ModelRouter,
    cache_hit: bool,
    deployment_tpm: bool,
    waived: frozenset[str] = frozenset(),
) -> Reservation:
    caller = request.caller
    plan = plan_for(caller.key, caller.team, caller.user, request.model, waived)
    tokens, cost = 0, 0.0
    if not cache_hit and (plan.counts_tokens or plan.counts_cost or deployment_tpm):
        tokens, cost = estimate(request, router)
    for rate in plan.rates:
        if rate.limits.tpm and tokens > rate.limits.tpm:
            raise never_fits(
                f"{tokens} tokens", rate.owner, f"limit of {rate.limits.tpm} tokens per minute"
            )
    for budget in plan.budgets:
        if budget.limit is not None and (cost > budget.limit or budget.limit <= 0):
            # Refused either way: a spent budget says so, as LiteLLM does; else the request
            # alone is too dear for the whole budget.
            spent = counters.budget_spend(budget)
            if spent >= budget.limit:
                raise BudgetRefused(budget, budget.exceeded(spent, time.time()))
            raise never_fits(f"${cost:.6f}", budget.owner, f"budget of ${budget.limit}")
    return counters.admit(caller.key, tokens, cost, plan=plan)


def budget_fallback(
    counters: CountersTable,
    request: GatewayRequest,
    router: ModelRouter,
    cache_hit: bool,
    refused: BudgetRefused,
    configured: Mapping[str, list[str]],
    deployment_tpm: bool,
) -> tuple[Reservation, GatewayRequest] | None:
    """The first fallback of the request's model that the caller may use and that admits it;
    None when there is none."""
    key, spent = request.caller.key, refused.budget
    if spent.model is not None and key is not None and key.budget_fallbacks.get(request.model):
        # The key's own: each fallback within its budgets, its per-model one included.
        choices, waives = key.budget_fallbacks[request.model], False
    else:
        choices, waives = list(configured.get(request.model) or []), True
    for choice in choices:
        if choice == request.model or not request.caller.allows(choice):
            continue
        if not router.in_group(choice):
            continue
        downgraded = replace(request, model=choice, body={**request.body, "model": choice})
        waived = frozenset({spent.counter}) if waives else frozenset()
        while True:
            try:
                reservation = reserve(
                    counters, downgraded, router, cache_hit, deployment_tpm, waived
                )
            except BudgetRefused as again:
                # Another spent budget of the caller's refused the original too: the operator's
                # fallback is not held to it either. The fallback's own per-model budget is.
                if waives and again.budget.model is None and again.budget.counter not in waived:
                    waived |= {again.budget.counter}
                    continue
                break
            return reservation, downgraded
    return None


def never_fits(estimate: str, owner: str, limit: str) -> ProxyError:
    whose = owner[0].lower() + owner[1:] if owner.startswith("This") else owner
    return REQUEST_EXCEEDS_LIMIT(
        f"This request may use up to {estimate}, more than the {limit} of {whose}: lower "
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
