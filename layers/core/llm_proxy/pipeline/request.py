"""The request object: one call through the pipeline, whatever endpoint it came in on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from llm_proxy.access.auth import Caller
from llm_proxy.pipeline.anthropic_native import NativeParts

# The API a request came in on, and what the Router is asked for.
Api = Literal["chat", "embeddings", "messages", "responses", "count_tokens"]
Call = Literal["chat", "embedding", "responses"]
# What clients send about themselves, accepted and never passed on (Codex CLI's
# `client_metadata` on the Responses API).
CLIENT_ONLY_PARAMS = frozenset({"client_metadata"})


@dataclass(frozen=True)
class GatewayRequest:
    endpoint: str
    api: Api
    caller: Caller
    # The body in the form the Router takes (OpenAI's chat or embeddings parameters).
    body: dict[str, Any]
    request_id: str
    # The model asked for (or the default model); "" when there is neither.
    model: str
    # The agent that usage is tagged with, when known.
    agent: str | None
    # The body as the client sent it, where it was translated (Anthropic's Messages API).
    sent: dict[str, Any] | None = None
    # What only Anthropic deployments get as sent (Messages API headers and tools).
    native: NativeParts | None = None

    @property
    def call(self) -> Call:
        if self.api == "embeddings":
            return "embedding"
        return "responses" if self.api == "responses" else "chat"

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = self.body.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    @property
    def client_wants_usage(self) -> bool:
        """A streaming client that asked for the usage chunk (OpenAI's `include_usage`)."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def call_params(self) -> dict[str, Any]:
        """The body's parameters other than what the pipeline passes on itself."""
        own = {"model", "messages", "input", "metadata", "cache", *CLIENT_ONLY_PARAMS}
        return {name: value for name, value in self.body.items() if name not in own}
