"""The gateway's hooks into litellm's Router, as it calls them under a request's scope: which
deployments a pick may choose, and which fallbacks a request may take."""

from __future__ import annotations

import asyncio
from typing import Any

from llm_proxy.pipeline.litellm_hooks import HOOKS, Permission, RequestScope, request_scope


def deployments(*ids: str) -> list[dict[str, Any]]:
    return [{"model_name": "claude", "model_info": {"id": id}} for id in ids]


def scope(*tried: str) -> RequestScope:
    scope = RequestScope(admission=None, permission=Permission([]))
    scope.attempts.tried.extend(tried)
    return scope


def picks(candidates: list[dict[str, Any]], within: RequestScope | None) -> list[str]:
    async def filtered() -> list[dict[str, Any]]:
        return await HOOKS.async_filter_deployments("claude", candidates, None)

    if within is None:
        kept = asyncio.run(filtered())
    else:
        with request_scope(within):
            kept = asyncio.run(filtered())
    return [d["model_info"]["id"] for d in kept]


def test_a_deployment_the_request_tried_is_not_picked_again() -> None:
    assert picks(deployments("a", "b", "c"), scope("a")) == ["b", "c"]


def test_with_every_deployment_tried_none_is_left_for_the_fallbacks() -> None:
    assert picks(deployments("a", "b"), scope("a", "b")) == []


def test_a_lone_deployment_is_left_to_num_retries() -> None:
    assert picks(deployments("a"), scope("a")) == ["a"]


def test_without_a_request_every_deployment_may_be_picked() -> None:
    assert picks(deployments("a", "b"), None) == ["a", "b"]
    assert picks(deployments("a", "b"), scope()) == ["a", "b"]


def test_the_pre_call_check_notes_each_deployment_tried() -> None:
    within = scope()
    with request_scope(within):
        for deployment in deployments("a", "b"):
            asyncio.run(HOOKS.async_pre_call_check(deployment))
    assert within.attempts.tried == ["a", "b"]


def allowed(model: str, within: RequestScope) -> bool:
    with request_scope(within):
        return asyncio.run(HOOKS.fallback_allowed(model=model, request_kwargs={}, ctx=None))


def test_no_fallback_once_the_client_is_receiving_a_stream() -> None:
    within = scope("a")
    assert allowed("gpt", within)
    within.attempts.answering = True
    assert not allowed("gpt", within)
    assert within.permission.skipped == []


def test_a_fallback_the_key_may_not_use_is_skipped_and_noted() -> None:
    within = RequestScope(admission=None, permission=Permission([frozenset({"claude"})]))
    assert not allowed("gpt", within)
    assert within.permission.skipped == ["gpt"]
