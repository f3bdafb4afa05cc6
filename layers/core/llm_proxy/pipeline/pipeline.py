"""The request pipeline: every endpoint's request passes through the same steps, in order.

    validate -> admit -> cache -> route -> meter

(authentication comes first, in the HTTP layer, and makes the request's `caller`). A request
that fails at any step is metered as a failure and raised as a ProxyError; one that succeeds
is metered when its answer is complete: at once for a JSON answer, when the stream ends for a
stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from llm_proxy.access.auth import Caller
from llm_proxy.access.limits import Admission, Limiter
from llm_proxy.accounting.usage import UsageRecord, UsageStore
from llm_proxy.config import ProxyConfig
from llm_proxy.errors import as_proxy_error
from llm_proxy.pipeline import meter as usage
from llm_proxy.pipeline.admit import admit, needs_counters
from llm_proxy.pipeline.anthropic_native import NativeParts
from llm_proxy.pipeline.cache import (
    CacheControl,
    CacheSettings,
    ResponseCache,
    cache_key,
    mark_cache_hit,
    replayed_stream,
)
from llm_proxy.pipeline.meter import AfterResponse, Meter
from llm_proxy.pipeline.request import Api, GatewayRequest
from llm_proxy.pipeline.responses import (
    ResponsesStream,
    new_response_id,
    replayed_events,
    stores,
    to_stored,
    with_conversation,
)
from llm_proxy.pipeline.route import route
from llm_proxy.pipeline.router import ModelRouter, Permission, RouterCache
from llm_proxy.pipeline.stored_responses import ResponseStore
from llm_proxy.pipeline.streams import ChatStream
from llm_proxy.pipeline.validate import (
    AGENT_NAME,
    claimed_agents,
    permitted_groups,
    validate_model,
    validate_request,
)
from llm_proxy.settings import ApiSettings


@dataclass
class Stores:
    """Where the pipeline keeps state: counters, usage items, cached answers and stored
    responses (the Responses API)."""

    limiter: Limiter
    usage: UsageStore
    cache: ResponseCache
    responses: ResponseStore = field(default_factory=lambda: ResponseStore(None, 30))


class Pipeline:
    def __init__(
        self, settings: ApiSettings, config: ProxyConfig, routers: RouterCache, stores: Stores
    ) -> None:
        self.settings = settings
        self.config = config
        self.routers = routers
        self.stores = stores
        self.cache_settings = CacheSettings.from_config(config)
        self.meter = Meter(stores.usage, stores.limiter, settings.meter_after_response)

    def model_names(self) -> list[str]:
        return self.config.model_names(self.settings.default_model)

    def request(
        self,
        endpoint: str,
        api: Api,
        caller: Caller,
        body: dict[str, Any],
        request_id: str,
        sent: dict[str, Any] | None = None,
        native: NativeParts | None = None,
    ) -> GatewayRequest:
        """The request object, with the model (or the default) and the agent resolved: the
        key's own agent; else one the caller names (`x-agent`, `metadata.agent`) where it is a
        valid name (validation refuses the others); else an agent role asked for by name (the
        seed's AGENT_MODELS as model_group_alias)."""
        model = str(body.get("model") or self.settings.default_model or "")
        aliases = self.config.router_settings.get("model_group_alias") or {}
        agent = caller.agent or next(
            (name for name in claimed_agents(caller, sent or body) if AGENT_NAME.match(name)),
            model if model in aliases else None,
        )
        return GatewayRequest(
            endpoint=endpoint,
            api=api,
            caller=caller,
            body=body,
            request_id=request_id,
            model=model,
            agent=agent,
            sent=sent,
            native=native,
        )

    async def check(self, request: GatewayRequest) -> None:
        """Validation alone, for requests that call no model (Anthropic's count_tokens)."""
        router = self.routers.get()
        validate_model(request, router, self.model_names(), self.config.accepts_any_model)
        validate_request(request, router)

    async def run(self, request: GatewayRequest, after_response: AfterResponse | None) -> Any:
        """litellm's answer (a ModelResponse, EmbeddingResponse or ResponsesAPIResponse), or a
        ChatStream or ResponsesStream."""
        record = usage.new_record(request)
        started = time.perf_counter()
        router: ModelRouter | None = None
        admission: Admission | None = None
        routed: float | None = None
        cache: CacheControl | None = None
        try:
            router = self.routers.get()
            validate_model(request, router, self.model_names(), self.config.accepts_any_model)
            validate_request(request, router)
            if request.call == "responses":
                store = self.stores.responses
                request = await asyncio.to_thread(with_conversation, request, store)
            cache = self._cache_control(request)
            hit = await self._cached(request, cache)
            admitting = partial(admit, self.stores.limiter, request, router, hit is not None)
            admission = (
                await asyncio.to_thread(admitting) if needs_counters(request) else admitting()
            )
            if hit is not None:
                record.cache_hit = True
                response = hit
            else:
                permission = Permission(permitted_groups(request.caller, router))
                deadline = self.settings.provider_deadline_s
                routed = time.perf_counter()
                response = await route(router, request, admission, permission, deadline)
        except Exception as exc:
            error = as_proxy_error(exc, request.model)
            usage.record_failure(record, error, exc, router or self.routers.last_built)
            usage.record_latency(record, started, routed)
            await self.meter(record, admission)
            raise error from None
        if record.cache_hit:
            mark_cache_hit(response)
        else:
            usage.record_answer(record, getattr(response, "_hidden_params", None) or {}, router)
        if request.stream:
            # A stream's usage is written after its last byte, as a JSON answer's is; not where
            # an extension holds the invocation (a cut stream may end after the hand-over).
            later = None if self.meter.settle_after_response else after_response
            timing = (started, routed)
            if request.call == "responses":
                return self._responses_stream(
                    request, response, record, timing, router, admission, later
                )
            return self._stream(request, response, record, timing, router, admission, later)
        state_write = self._cache_write(request, cache, response, record)
        if request.call == "responses":
            response.id = new_response_id()
            stored = self._store_write(request, response.model_dump(exclude_none=True))
            state_write = both(state_write, stored)
        usage.record_usage(record, getattr(response, "usage", None))
        usage.record_cost(record, router)
        usage.record_latency(record, started, routed)
        await self.meter(record, admission, state_write=state_write, after_response=after_response)
        return response

    def _store_write(
        self, request: GatewayRequest, response: dict[str, Any]
    ) -> Callable[[], None] | None:
        if not stores(request) or not self.stores.responses.enabled:
            return None
        return partial(self.stores.responses.put, to_stored(request, response))

    def _responses_stream(
        self,
        request: GatewayRequest,
        response: Any,
        record: UsageRecord,
        timing: tuple[float, float | None],
        router: ModelRouter,
        admission: Admission | None,
        after_response: AfterResponse | None,
    ) -> ResponsesStream:
        if record.cache_hit:
            response = replayed_events(response)

        async def finish(record: UsageRecord, completed: dict[str, Any] | None) -> None:
            if completed is not None and not record.cache_hit:
                usage.record_answer(record, getattr(response, "_hidden_params", {}), router)
            usage.record_cost(record, router)
            state_write = self._store_write(request, completed) if completed else None
            await self.meter(
                record, admission, state_write=state_write, after_response=after_response
            )

        stream = ResponsesStream(response, record, timing, new_response_id(), finish)
        stream.cache_hit = record.cache_hit
        return stream

    def _cache_control(self, request: GatewayRequest) -> CacheControl | None:
        if request.api not in ("chat", "responses"):
            return None
        return CacheControl.of(request.body, self.cache_settings)

    async def _cached(self, request: GatewayRequest, cache: CacheControl | None) -> Any:
        if cache is None or not cache.lookup:
            return None
        key = cache_key(request.model, request.body)
        return await asyncio.to_thread(self.stores.cache.get, key, request.call == "responses")

    def _cache_write(
        self,
        request: GatewayRequest,
        cache: CacheControl | None,
        response: Any,
        record: UsageRecord,
    ) -> Callable[[], None] | None:
        if cache is None or not cache.store or record.cache_hit:
            return None
        key = cache_key(str(record.model_requested), request.body)
        return partial(self.stores.cache.put, key, response, cache.ttl_s)

    def _stream(
        self,
        request: GatewayRequest,
        response: Any,
        record: UsageRecord,
        timing: tuple[float, float | None],
        router: ModelRouter,
        admission: Admission | None,
        after_response: AfterResponse | None,
    ) -> ChatStream:
        if record.cache_hit:
            response = replayed_stream(response)

        async def finish(record: UsageRecord, completed: Mapping[str, Any] | None) -> None:
            if completed is not None and not record.cache_hit:
                usage.record_answer(record, completed, router)
            usage.record_cost(record, router)
            await self.meter(record, admission, after_response=after_response)

        return ChatStream(
            response,
            record,
            timing,
            request.client_wants_usage,
            request.body.get("messages"),
            finish,
        )


def both(*writes: Callable[[], None] | None) -> Callable[[], None] | None:
    """One state write for several (the response cache's and the stored response's)."""
    chosen = [write for write in writes if write is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def write_all() -> None:
        for write in chosen:
            write()

    return write_all
