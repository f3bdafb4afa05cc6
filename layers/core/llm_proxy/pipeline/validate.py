"""The pipeline's validate step: a request names a model this caller may use, and carries
nothing that would redirect the call or that no provider can take."""

from __future__ import annotations

import json
from typing import Any

from llm_proxy.access.auth import Caller
from llm_proxy.errors import ProxyError, invalid_request, model_not_found
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.router import ModelRouter

# Parameters that redirect a provider call or carry credentials (the CVE-2024-6587 class), plus
# litellm's own internals a client could use to inject a deployment. Refused wherever they
# appear in the body's top level or in the free-form containers litellm forwards.
FORBIDDEN_PARAMS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "custom_llm_provider",
        "azure_ad_token",
        "azure_ad_token_provider",
        "azure_username",
        "azure_password",
        "client_id",
        "client_secret",
        "tenant_id",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
        "aws_profile_name",
        "aws_role_name",
        "aws_web_identity_token",
        "aws_bedrock_runtime_endpoint",
        "vertex_credentials",
        "vertex_project",
        "vertex_location",
        "vertex_ai_project",
        "vertex_ai_location",
        "watsonx_api_key",
        "token",
        "headers",
        "extra_headers",
        "litellm_params",
        "user_config",
        "model_list",
        "deployment_id",
        "proxy_server_request",
        "input_cost_per_token",
        "output_cost_per_token",
        "mock_response",
        "litellm_logging_obj",
        "litellm_call_id",
        "secret_fields",
        "callbacks",
        "success_callback",
        "failure_callback",
        # litellm's call options and test hooks: a client must not fake failures, pin a
        # deployment, stretch timeouts or change the gateway's retry and fallback policy.
        "client",
        "timeout",
        "request_timeout",
        "stream_timeout",
        "specific_deployment",
        "num_retries",
        "max_retries",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "model_group_alias",
        "cooldown_time",
    }
)
# Every litellm test hook starts with this (mock_testing_fallbacks, mock_timeout, ...).
FORBIDDEN_PREFIX = "mock_"
SCANNED_CONTAINERS = ("extra_body", "metadata", "litellm_metadata")


def refuse_unencodable_text(body: dict[str, Any]) -> None:
    """Lone surrogates parse as JSON but cannot be sent on to any provider."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_request(
            "The request contains text that is not valid Unicode (a lone surrogate).",
            code="invalid_text",
        ) from None


def refuse_forbidden_params(body: dict[str, Any]) -> None:
    found = _find_forbidden(body, "", depth=0)
    if found:
        raise invalid_request(
            f"Parameter '{found}' is not allowed: provider endpoints and credentials are set by "
            "the gateway's configuration, never by a request.",
            param=found,
            code="forbidden_parameter",
        )


def _find_forbidden(node: Any, path: str, depth: int) -> str | None:
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        where = f"{path}.{key}" if path else str(key)
        if key in FORBIDDEN_PARAMS or str(key).startswith(FORBIDDEN_PREFIX):
            return where
        if depth == 0 and key not in SCANNED_CONTAINERS:
            continue
        nested = _find_forbidden(value, where, depth + 1)
        if nested:
            return nested
    return None


def validate_body(request: GatewayRequest) -> None:
    """What can be checked before the router is read: parameters, text, a model named."""
    if request.sent is not None:
        refuse_forbidden_params(request.sent)
    refuse_forbidden_params(request.body)
    refuse_unencodable_text(request.body)
    if not request.model:
        raise invalid_request("'model' is required.", param="model", code="missing_model")


def validate_model(
    request: GatewayRequest, router: ModelRouter, served: list[str], accepts_any: bool
) -> None:
    """The model can be served (its provider key is set, it is configured) and the caller's
    key may use it."""
    model = request.model
    if model in router.unavailable:
        missing = ", ".join(sorted(router.unavailable[model]))
        raise ProxyError(
            503,
            f"Model '{model}' cannot be served: {missing} is not set in the provider-keys "
            "secret or the environment.",
            "service_unavailable",
            param="model",
            code="provider_key_missing",
        )
    if model not in served and not accepts_any:
        raise model_not_found(model, served)
    require_allowed(request.caller, model)


def require_allowed(caller: Caller, model: str) -> None:
    key = caller.key
    if key is not None and not key.allows(model):
        raise ProxyError(
            403,
            f"This key may not use model '{model}'. Allowed: {', '.join(key.models)}.",
            "permission_error",
            param="model",
            code="model_not_allowed",
        )
