"""The request object and its state: what the HTTP layer hands the pipeline (`Inbound`), the
request in the form the pipeline serves it (`GatewayRequest`), what the pipeline learns about
it as its steps run (`RequestState`), and what goes back (`Answer`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm_proxy.access.auth import Caller
from llm_proxy.access.limits import Admission
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.after_response import AfterResponse
from llm_proxy.pipeline.anthropic_native import NativeParts
from llm_proxy.pipeline.cache import CacheControl
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.session_affinity import Session

if TYPE_CHECKING:
    from llm_proxy.pipeline.apis import Api

# What clients send about themselves, accepted and never passed on (Codex CLI's
# `client_metadata` on the Responses API).
CLIENT_ONLY_PARAMS = frozenset({"client_metadata"})
# The longest model name a request may carry (`model`, a fallback's).
MAX_MODEL_NAME = 256


@dataclass(frozen=True)
class Inbound:
    """A request as it came in: the endpoint, who is calling, the body as sent (checked
    against the endpoint's wire schema), its headers and id, and where its after-response work
    goes (None: nothing may wait for after the response)."""

    endpoint: str
    caller: Caller
    body: dict[str, Any]
    headers: Mapping[str, str]
    request_id: str
    after_response: AfterResponse | None = None


@dataclass(frozen=True)
class GatewayRequest:
    endpoint: str
    api: Api
    caller: Caller
    # The body in the form the Router takes (OpenAI's chat, embeddings or Responses
    # parameters).
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
    # The agent session the request belongs to, where session affinity applies to it.
    session: Session | None = None

    @property
    def as_sent(self) -> dict[str, Any]:
        return self.sent if self.sent is not None else self.body

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


@dataclass
class RequestState:
    """One request's way through the pipeline: its usage record, its timing, and what each
    step decided (the router it was served by, its admission, its cache control). The
    deployment that answered is the record's."""

    request: GatewayRequest
    record: UsageRecord
    after_response: AfterResponse | None
    started: float = field(default_factory=time.perf_counter)
    # When the provider was called (None: it was not, e.g. a cache hit).
    routed: float | None = None
    router: ModelRouter | None = None
    admission: Admission | None = None
    cache: CacheControl | None = None
    # The response cache's key for the request, where the cache may be read or written.
    cache_key: str | None = None

    @property
    def validated_router(self) -> ModelRouter:
        """The router the request was validated against (the steps after validation)."""
        assert self.router is not None, "the request is validated first"
        return self.router


@dataclass(frozen=True)
class Answer:
    """What the pipeline answers: a JSON body, or a stream of Server-Sent Events; with the
    headers that go with it."""

    body: Any = None
    events: AsyncIterator[str] | AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
