"""Request bodies the gateway accepts (FastAPI parses and checks them before any route runs)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from llm_proxy.errors import INVALID_JSON, INVALID_VALUE, MISSING_BODY, ProxyError

# Numbers as OpenAI's OpenAPI spec bounds them: finite, of the JSON type it names (a JSON
# integer where it says integer; a string or a boolean is never a number).
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]
TopLogprobs = Annotated[int, Field(ge=0, le=20)]
PositiveInt = Annotated[int, Field(ge=1)]
# The range of a 64-bit signed integer (`seed`).
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Verbosity = Literal["low", "medium", "high"]
ToolChoiceMode = Literal["none", "auto", "required"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]
CacheRetention = Literal["in_memory", "24h"]
# `include` (the spec's IncludeEnum).
Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


class SpecBody(BaseModel):
    """A request body read as strictly as the spec types it: no string for a number or a
    boolean, no decimal for an integer. Fields it does not name pass on to the allow-list."""

    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(SpecBody):
    """One part of a multi-part message (text, image_url, input_audio, ...)."""

    type: str = Field(min_length=1)


class ChatMessage(SpecBody):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @model_validator(mode="after")
    def _content_where_required(self) -> ChatMessage:
        # Only an assistant turn (tool calls) or a function result may come without content.
        if self.content is None and self.role not in ("assistant", "function"):
            raise ValueError(f"a {self.role} message needs content")
        return self


class StreamOptions(SpecBody):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(SpecBody):
    """OpenAI's chat-completions body, typed and bounded as the spec's
    `CreateChatCompletionRequest`."""

    model: str | None = Field(default=None, min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: Int64 | None = None
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoiceMode | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None
    functions: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=128)] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: ReasoningEffort | None = None
    verbosity: Verbosity | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    service_tier: ServiceTier | None = None
    store: bool | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: CacheRetention | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    extra_body: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class AnthropicToolChoice(SpecBody):
    type: Literal["auto", "any", "tool", "none"]


class AnthropicMessagesRequest(SpecBody):
    """Anthropic's Messages body (`POST /v1/messages`), typed and bounded as the anthropic
    SDK's `MessageCreateParams`."""

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: PositiveInt
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = False
    temperature: Probability | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: AnthropicToolChoice | None = None
    metadata: dict[str, Any] | None = None


# An agent's name, as usage items, rollups and metrics carry it.
AGENT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
# Bounds on a key's limits: far above any real use, and numbers DynamoDB stores exactly.
MAX_BUDGET_USD = 1_000_000_000
MAX_RPM = 1_000_000_000
MAX_TPM = 1_000_000_000_000
# A key's requests in flight at once: each holds a slot in one DynamoDB item (400 KB at most).
MAX_PARALLEL_REQUESTS = 1000
ModelName = Annotated[str, Field(min_length=1, max_length=256)]


class CountTokensRequest(SpecBody):
    """Anthropic's count-tokens body (`POST /v1/messages/count_tokens`)."""

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: AnthropicToolChoice | None = None


class Reasoning(SpecBody):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(SpecBody):
    type: Literal["text", "json_schema", "json_object"]


class TextConfig(SpecBody):
    format: TextFormat | None = None
    verbosity: Verbosity | None = None


class ResponsesRequest(SpecBody):
    """OpenAI's Responses API body (`POST /v1/responses`), its fields typed and bounded as
    OpenAI's OpenAPI spec (`CreateResponse`) defines them; which fields a caller may send at
    all is the pipeline's allow-list."""

    model: str | None = Field(default=None, min_length=1)
    # A string is one user message; a list holds input items, each an object.
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_output_tokens: Annotated[int, Field(ge=16)] | None = None
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=200)
    store: bool | None = None
    background: bool | None = None
    metadata: dict[str, Any] | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_logprobs: TopLogprobs | None = None
    truncation: Literal["auto", "disabled"] | None = None
    parallel_tool_calls: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoiceMode | dict[str, Any] | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    include: list[Includable] | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: CacheRetention | None = None
    service_tier: ServiceTier | None = None


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


def blank_budget(value: Any) -> Any:
    """LiteLLM's UI and scripts send "" for no budget, which LiteLLM reads as null."""
    return None if value == "" else value


def bounded_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metadata of a key, team or user: at most 8 KB as JSON."""
    if (
        metadata is not None
        and len(json.dumps(metadata, default=str).encode("utf-8", "surrogatepass")) > 8192
    ):
        raise ValueError("metadata is larger than 8192 bytes")
    return metadata


class KeyFields(BaseModel):
    """A virtual key's settings, with LiteLLM's field names (`rpm`/`tpm` also accepted). Other
    fields pass through to the key admin, which refuses each by name with its reason
    (`access.key_admin.UNSUPPORTED`)."""

    model_config = ConfigDict(extra="allow")
    key_alias: str | None = Field(default=None, max_length=256)
    models: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=1000
    )
    # LiteLLM's key aliases: a name this key's caller may ask for -> the model it stands for.
    # At most 100: with the other fields at their largest, the item stays under 400 KB.
    aliases: dict[ModelName, ModelName] | None = Field(default=None, max_length=100)
    # Finite and within what a DynamoDB number holds exactly (38 significant digits).
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(
        default=None, ge=1, le=MAX_RPM, validation_alias=AliasChoices("rpm_limit", "rpm")
    )
    tpm_limit: int | None = Field(
        default=None, ge=1, le=MAX_TPM, validation_alias=AliasChoices("tpm_limit", "tpm")
    )
    # Requests in flight at once, across every container.
    max_parallel_requests: int | None = Field(default=None, ge=1, le=MAX_PARALLEL_REQUESTS)
    duration: str | None = None
    metadata: dict[str, Any] | None = None
    team_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256)
    tags: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=100
    )
    blocked: bool | None = None
    # LiteLLM's per-model budgets ({group: {"budget_limit", "time_period"}}), budget windows
    # ([{"budget_duration", "max_budget"}]) and budget fallbacks ({group: [groups]}): checked
    # entry by entry, each error naming its place (`access.key_budgets`).
    model_max_budget: dict[str, Any] | None = None
    budget_limits: list[Any] | None = None
    budget_fallbacks: dict[str, Any] | None = None
    # Shorthands for metadata.agent and metadata.team.
    agent: str | None = Field(default=None, pattern=AGENT_NAME_PATTERN)
    team: str | None = Field(default=None, max_length=256)

    _blank_budget = field_validator("max_budget", mode="before")(blank_budget)

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is None:
            return None
        bounded_metadata(metadata)
        agent = metadata.get("agent")
        if agent is not None and not re.fullmatch(AGENT_NAME_PATTERN, str(agent)):
            raise ValueError("metadata.agent must be 1 to 64 letters, digits, '.', '_' or '-'")
        return metadata


class KeyGenerateRequest(KeyFields):
    pass


class KeyUpdateRequest(KeyFields):
    key: str = Field(min_length=1, description="The key (sk-...) or its token.")


class KeyRegenerateRequest(KeyFields):
    # The key when the path does not name it (LiteLLM's `/key/regenerate`).
    key: str | None = Field(default=None, min_length=1, description="The key or its token.")
    # How long the old key keeps working ("15s", "24h"); none: it stops at once.
    grace_period: str | None = None


class KeyDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class EmbeddingRequest(SpecBody):
    """OpenAI's embeddings body, typed as the spec's `CreateEmbeddingRequest`."""

    model: str | None = Field(default=None, min_length=1)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


def validation_error(errors: list[dict[str, Any]]) -> ProxyError:
    """FastAPI's 422 list turned into one 400 that names the first offending field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid body", "type": ""}
    if first.get("type") == "json_invalid":
        return INVALID_JSON("The request body is not valid JSON.")
    loc = [str(part) for part in first.get("loc", ()) if part != "body" and not _tag(part)]
    field = ".".join(loc)
    if not field and first.get("type") in ("model_attributes_type", "dict_type"):
        return INVALID_JSON(
            "The request body must be a JSON object (Content-Type: application/json)."
        )
    if first.get("type") == "missing" and not field:
        return MISSING_BODY("The request body is missing or empty.")
    message = f"Invalid value for '{field}': {first.get('msg')}" if field else str(first.get("msg"))
    return INVALID_VALUE(message, param=field or None)


# The names pydantic gives the members of a union in an error's location (`stop.list[str]`):
# a type, not a field, so the error names the field alone.
_TYPE_TAGS = re.compile(r"^(str|int|float|bool|dict|list|function-.*|constrained-.*|.*\[.*)$")


def _tag(part: Any) -> bool:
    return isinstance(part, str) and bool(_TYPE_TAGS.match(part))


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body, which every error of the gateway has."""

    error: ErrorDetail
