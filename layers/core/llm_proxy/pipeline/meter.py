"""What a usage record says about a routed call: the deployment that answered (or failed),
retries, fallbacks, and the cost of the tokens."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import litellm

from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.pipeline.router import Routes


def describe_deployment(record: UsageRecord, hidden: Mapping[str, Any], routes: Routes) -> None:
    """From litellm's hidden params of a response or stream."""
    headers = hidden.get("additional_headers") or {}
    record.deployment_id = hidden.get("model_id")
    deployment = routes.deployments.get(str(record.deployment_id), {})
    # The answering deployment's own group: after an alias or a fallback it differs from
    # what was asked for.
    record.model_group = deployment.get("model_name") or headers.get("x-litellm-model-group")
    record.deployment_model = hidden.get("litellm_model_name") or (
        deployment.get("litellm_params", {}).get("model")
    )
    record.provider = hidden.get("custom_llm_provider") or deployment.get("provider")
    record.retries = int(headers.get("x-litellm-attempted-retries") or 0)
    record.fallbacks = int(headers.get("x-litellm-attempted-fallbacks") or 0)


def describe_failure(record: UsageRecord, exc: Exception, routes: Routes | None) -> None:
    """What litellm's exception tells about the failed attempt: the deployment and how many
    retries it made before giving up."""
    retries = getattr(exc, "num_retries", None)
    if isinstance(retries, int):
        record.retries = retries
    deployment_id = getattr(exc, "failed_deployment_id", None)
    deployment = (routes.deployments if routes else {}).get(str(deployment_id))
    if deployment is not None:
        record.deployment_id = str(deployment_id)
        record.model_group = deployment.get("model_name")
        record.deployment_model = deployment["litellm_params"].get("model")
        record.provider = deployment.get("provider")


def cost(record: UsageRecord, routes: Routes) -> float:
    deployment = routes.deployments.get(str(record.deployment_id))
    if deployment is None:
        return 0.0
    return cost_usd(deployment, record.prompt_tokens, record.completion_tokens)


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
