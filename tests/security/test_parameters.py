"""A caller picks a model it may use and the parameters the endpoint's public API defines;
nothing else reaches litellm. Every name the old deny-list held is refused, as is every other
name no API defines (the next parameter litellm learns does not pass by default)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.request_options import ROUTING_OPTIONS
from llm_proxy.pipeline.validate import (
    allowed_params,
    check_metadata,
    refuse_non_finite,
    refuse_unsupported,
)

from tests.support.paths import REPO

# Every name the former deny-list (FORBIDDEN_PARAMS, and its `mock_` prefix) held.
FORMER_DENY_LIST = (
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
    "client",
    "request_timeout",
    "stream_timeout",
    "specific_deployment",
    "max_retries",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "model_group_alias",
    "cooldown_time",
    "mock_testing_fallbacks",
    "mock_timeout",
)
# What a hostile client sent that the deny-list let through.
FOUND_IN_REVIEW = (
    "input_cost_per_second",
    "output_cost_per_second",
    "tiered_pricing",
    "input_cost_per_token_priority",
    "output_cost_per_token_flex",
    "provider_specific_header",
    "litellm_request_debug",
    "allowed_openai_params",
    "additional_drop_params",
)
CHAT = allowed_params("chat")


def refused(body: dict[str, Any], allowed: frozenset[str] = CHAT) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        refuse_unsupported({"model": "m", "messages": [], **body}, allowed)
    return caught.value


@pytest.mark.parametrize("name", sorted(ROUTING_OPTIONS))
def test_litellms_routing_options_are_the_routers_never_in_extra_body(name: str) -> None:
    """`fallbacks`, `num_retries` and `timeout` are checked by the gateway
    (tests/integration/test_request_options.py); inside `extra_body` they would reach the
    provider."""
    refuse_unsupported({"model": "m", "messages": [], name: "x"}, CHAT)
    nested = refused({"extra_body": {name: "x"}})
    assert (nested.code, nested.param) == ("unsupported_parameter", f"extra_body.{name}")


@pytest.mark.parametrize("name", FORMER_DENY_LIST + FOUND_IN_REVIEW)
def test_a_name_no_api_defines_is_refused_at_the_top_level_and_in_extra_body(name: str) -> None:
    top = refused({name: "x"})
    assert (top.status, top.code, top.param) == (400, "unsupported_parameter", name)
    nested = refused({"extra_body": {name: "x"}})
    assert (nested.code, nested.param) == ("unsupported_parameter", f"extra_body.{name}")


def test_the_price_override_that_zeroed_a_budget_is_refused() -> None:
    error = refused({"input_cost_per_second": 1e-12, "output_cost_per_second": 1e-12})
    assert error.param == "input_cost_per_second"


def test_smuggled_provider_headers_are_refused() -> None:
    smuggled = {
        "custom_llm_provider": "openai",
        "extra_headers": {"Host": "attacker.example", "Authorization": "Bearer sk-attacker"},
    }
    assert refused({"provider_specific_header": smuggled}).param == "provider_specific_header"


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("chat", {"temperature": 0.2, "tools": [], "tool_choice": "auto", "n": 2, "seed": 1}),
        ("chat", {"reasoning_effort": "low", "stream_options": {"include_usage": True}}),
        ("chat", {"cache": {"no-cache": True}, "extra_body": {"top_p": 0.5}}),
        ("embeddings", {"input": "hi", "dimensions": 8, "encoding_format": "float"}),
        ("messages", {"max_tokens": 8, "system": "s", "thinking": {"type": "enabled"}}),
        ("messages", {"temperature": 0.5, "top_k": 5, "stop_sequences": ["x"]}),
    ],
)
def test_the_public_apis_parameters_pass(api: Any, body: dict[str, Any]) -> None:
    refuse_unsupported({"model": "m", **body}, allowed_params(api))


def test_tool_schemas_may_name_any_field() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "call_api",
            "parameters": {"type": "object", "properties": {"api_key": {"type": "string"}}},
        },
    }
    refuse_unsupported({"model": "m", "messages": [], "tools": [tool]}, CHAT)


def test_the_operator_enables_provider_parameters_per_model_group() -> None:
    assert refused({"top_k": 5}).param == "top_k"
    refuse_unsupported(
        {"model": "m", "messages": [], "top_k": 5}, allowed_params("chat", ["top_k"])
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {"nested": {"api_key": "sk-x"}},
        {"api_base": "http://evil"},
        {"model_list": []},
        {"agent": "a" * 2048},
        {"agent": "coder; drop"},
        {"tags": ["x" * 9000]},
    ],
)
def test_metadata_keeps_to_documented_keys_of_bounded_size(metadata: dict[str, Any]) -> None:
    with pytest.raises(ProxyError) as caught:
        check_metadata(metadata)
    assert caught.value.status == 400


def test_documented_metadata_passes() -> None:
    check_metadata({"agent": "coder", "tags": ["a", "b"], "trace_id": "t-1", "user_id": "u"})


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": float("nan")},
        {"seed": float("inf")},
        {"tools": [{"type": "function", "function": {"name": "f", "x": float("-inf")}}]},
        {"cache": {"ttl": float("inf")}},
    ],
)
def test_nan_and_infinity_are_refused_anywhere(body: dict[str, Any]) -> None:
    with pytest.raises(ProxyError) as caught:
        refuse_non_finite(body)
    assert (caught.value.status, caught.value.code) == (400, "invalid_number")


def test_the_allow_list_is_what_the_installed_sdks_define() -> None:
    # The list is generated from the openai and anthropic packages' request types; an SDK
    # upgrade that adds or drops a parameter fails here until it is regenerated.
    done = subprocess.run(
        [sys.executable, "scripts/api_params.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
