"""Request bodies the gateway accepts, and the parameters it never forwards."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from llm_proxy.errors import ProxyError, invalid_request

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


class ContentPart(BaseModel):
    """One part of a multi-part message (text, image_url, input_audio, ...)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @model_validator(mode="after")
    def _content_where_required(self) -> ChatMessage:
        # Only an assistant turn (tool calls) or a function result may come without content.
        if self.content is None and self.role not in ("assistant", "function"):
            raise ValueError(f"a {self.role} message needs content")
        return self


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions body; unknown fields pass through to litellm."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class AnthropicMessagesRequest(BaseModel):
    """Anthropic's Messages body (`POST /v1/messages`); unknown fields pass through."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class KeyFields(BaseModel):
    """A virtual key's settings, with LiteLLM's field names (`rpm`/`tpm` also accepted)."""

    model_config = ConfigDict(extra="forbid")
    key_alias: str | None = Field(default=None, max_length=256)
    models: list[Annotated[str, Field(min_length=1)]] | None = None
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("rpm_limit", "rpm")
    )
    tpm_limit: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("tpm_limit", "tpm")
    )
    duration: str | None = None
    metadata: dict[str, Any] | None = None
    team_id: str | None = None
    # Shorthands for metadata.agent and metadata.team.
    agent: str | None = None
    team: str | None = None


class KeyGenerateRequest(KeyFields):
    pass


class KeyUpdateRequest(KeyFields):
    key: str = Field(min_length=1, description="The key (sk-...) or its token.")
    blocked: bool | None = None


class KeyDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings body; unknown fields pass through to litellm."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, min_length=1)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    metadata: dict[str, Any] | None = None


def validation_error(errors: list[dict[str, Any]]) -> ProxyError:
    """FastAPI's 422 list turned into one 400 that names the first offending field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid body", "type": ""}
    if first.get("type") == "json_invalid":
        return invalid_request("The request body is not valid JSON.", code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc)
    if not field and first.get("type") in ("model_attributes_type", "dict_type"):
        return invalid_request(
            "The request body must be a JSON object (Content-Type: application/json).",
            code="invalid_json",
        )
    if first.get("type") == "missing" and not field:
        return invalid_request("The request body is missing or empty.", code="missing_body")
    message = f"Invalid value for '{field}': {first.get('msg')}" if field else str(first.get("msg"))
    return invalid_request(message, param=field or None, code="invalid_value")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body, which every error of the gateway has."""

    error: ErrorDetail
