"""Request bodies the gateway accepts (FastAPI parses and checks them before any route runs)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from llm_proxy.errors import INVALID_JSON, INVALID_VALUE, MISSING_BODY, ProxyError


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


# An agent's name, as usage items, rollups and metrics carry it.
AGENT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
# Bounds on a key's limits: far above any real use, and numbers DynamoDB stores exactly.
MAX_BUDGET_USD = 1_000_000_000
MAX_RPM = 1_000_000_000
MAX_TPM = 1_000_000_000_000


class CountTokensRequest(BaseModel):
    """Anthropic's count-tokens body (`POST /v1/messages/count_tokens`)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


class ResponsesRequest(BaseModel):
    """OpenAI's Responses API body (`POST /v1/responses`), its fields typed and bounded as
    OpenAI's OpenAPI spec (`CreateResponse`) defines them; which fields a caller may send at
    all is the pipeline's allow-list."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0)
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=200)
    store: bool | None = None
    background: bool | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    truncation: Literal["auto", "disabled"] | None = None
    parallel_tool_calls: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None


class InputTokensRequest(BaseModel):
    """OpenAI's input-tokens body (`POST /v1/responses/input_tokens`, `TokenCountsBody`), typed
    as `ResponsesRequest`; which fields a caller may send at all is the pipeline's
    allow-list."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=200)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    parallel_tool_calls: bool | None = None
    personality: str | None = Field(default=None, max_length=64)


class KeyFields(BaseModel):
    """A virtual key's settings, with LiteLLM's field names (`rpm`/`tpm` also accepted)."""

    model_config = ConfigDict(extra="forbid")
    key_alias: str | None = Field(default=None, max_length=256)
    models: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=1000
    )
    # Finite and within what a DynamoDB number holds exactly (38 significant digits).
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(
        default=None, ge=1, le=MAX_RPM, validation_alias=AliasChoices("rpm_limit", "rpm")
    )
    tpm_limit: int | None = Field(
        default=None, ge=1, le=MAX_TPM, validation_alias=AliasChoices("tpm_limit", "tpm")
    )
    duration: str | None = None
    metadata: dict[str, Any] | None = None
    team_id: str | None = Field(default=None, max_length=256)
    # Shorthands for metadata.agent and metadata.team.
    agent: str | None = Field(default=None, pattern=AGENT_NAME_PATTERN)
    team: str | None = Field(default=None, max_length=256)

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is None:
            return None
        if len(json.dumps(metadata, default=str).encode("utf-8", "surrogatepass")) > 8192:
            raise ValueError("metadata is larger than 8192 bytes")
        agent = metadata.get("agent")
        if agent is not None and not re.fullmatch(AGENT_NAME_PATTERN, str(agent)):
            raise ValueError("metadata.agent must be 1 to 64 letters, digits, '.', '_' or '-'")
        return metadata


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
        return INVALID_JSON("The request body is not valid JSON.")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc)
    if not field and first.get("type") in ("model_attributes_type", "dict_type"):
        return INVALID_JSON(
            "The request body must be a JSON object (Content-Type: application/json)."
        )
    if first.get("type") == "missing" and not field:
        return MISSING_BODY("The request body is missing or empty.")
    message = f"Invalid value for '{field}': {first.get('msg')}" if field else str(first.get("msg"))
    return INVALID_VALUE(message, param=field or None)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body, which every error of the gateway has."""

    error: ErrorDetail
