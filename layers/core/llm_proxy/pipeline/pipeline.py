"""The request pipeline: every API's request passes through the same steps, in this order.

    validate -> conversation -> cache lookup -> admit -> provider call -> meter

Authentication comes first, in the HTTP layer, and makes the request's `caller`. The
conversation step applies to the Responses API only (a `previous_response_id` expanded); a
cache hit skips the provider call, and the count APIs have none (their answer is the
gateway's own count, metered at no cost). What differs between APIs is read from their rows in
`apis`. A request that fails at any step is metered as a failure and raised as a ProxyError;
one that succeeds is metered when its answer is complete: at once for a JSON answer, when the
stream ends for a stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from llm_proxy.config import ProxyConfig
from llm_proxy.errors import ProxyError, as_proxy_error
from llm_proxy.pipeline.admit import admit, needs_counters
from llm_proxy.pipeline.apis import Api
from llm_proxy.pipeline.cache import (
    CACHE_HIT_HEADER,
    CacheControl,
    CacheSettings,
    cache_key,
)
from llm_proxy.pipeline.litellm_hooks import Permission, RequestScope
from llm_proxy.pipeline.meter import (
    Meter,
    Metering,
    new_record,
    record_answer,
    record_cost,
    record_failure,
    record_latency,
    record_usage,
)
from llm_proxy.pipeline.model_router import CurrentRouter, ModelRouter
from llm_proxy.pipeline.output_limits import bound_output_tokens
from llm_proxy.pipeline.provider_call import call_provider
from llm_proxy.pipeline.request import Answer, GatewayRequest, Inbound, RequestState
from llm_proxy.pipeline.request_options import (
    MOCK_TESTING_PARAMS,
    check_mock_testing_params,
    check_routing_options,
    with_header_timeout,
)
from llm_proxy.pipeline.responses import (
    as_items,
    new_response_id,
    stores,
    to_stored,
    with_conversation,
)
from llm_proxy.pipeline.session_affinity import AffinitySettings, session_of
from llm_proxy.pipeline.streams import MeteredStream
from llm_proxy.pipeline.validate import (
    AGENT_NAME,
    claimed_agents,
    permitted_groups,
    validate_model,
    validate_request,
)
from llm_proxy.settings import ApiSettings
from llm_proxy.store.answer_cache import AnswerCache
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.stored_responses import StoredResponse, StoredResponses
from llm_proxy.store.usage import UsageTable

# A write of state a caller's next request must see (a cache entry, a stored response).
StateWrite = Callable[[], None]


@dataclass
class Stores:
    """Where the pipeline keeps state: counters, usage items, cached answers and stored
    responses (the Responses API)."""

    counters: CountersTable
    usage: UsageTable
    cache: AnswerCache
    responses: StoredResponses = field(default_factory=lambda: StoredResponses(None, 30))


class Pipeline:
    def __init__(
        self, settings: ApiSettings, config: ProxyConfig, routers: CurrentRouter, stores: Stores
    ) -> None:
        self.settings = settings
        self.config = config
        self.routers = routers
        self.stores = stores
        self.cache_settings = CacheSettings.from_config(config)
        self.affinity = AffinitySettings.from_router_settings(config.router_settings)
        metering = (
            Metering.USAGE_AFTER_RESPONSE
            if settings.outlives_response
            else Metering.BEFORE_RESPONSE
        )
        wait_s = settings.usage_batch_wait_ms / 1000
        self.meter = Meter(stores.usage, stores.counters, metering, batch_wait_s=wait_s)

    def model_names(self) -> list[str]:
        return self.config.model_names(self.settings.default_model)

    async def run(self, api: Api, inbound: Inbound) -> Answer:
        """The request's answer; a ProxyError when it fails."""
        request = self.request(api, inbound)
        state = RequestState(request, new_record(request), inbound.after_response)
        try:
            state.router = self.validate(request)
            await self.expand_conversation(state)
            hit = await self.look_up_cache(state)
            await self.admit(state, cache_hit=hit is not None)
            if hit is not None:
                state.record.cache_hit, response = True, hit
            elif api.router_call is None:
                # The count APIs call no model: the answer is the gateway's own count.
                response = api.answer(None, state.request)
            else:
                response = await self.call_provider(state)
        except Exception as exc:
            raise await self.failed(state, exc) from None
        if api.router_call is None:
            return await self.counted(state, response)
        if not state.record.cache_hit:
            hidden = getattr(response, "_hidden_params", None) or {}
            record_answer(state.record, hidden, state.router)
        if request.stream:
            return self.stream(state, response)
        return await self.answer(state, response)

    # -- the steps, in order ---------------------------------------------------------------------

    def request(self, api: Api, inbound: Inbound) -> GatewayRequest:
        """The request object, translated for the Router where the API needs it, with the model
        (or the default) and the agent resolved: the key's own agent; else one the caller names
        (`x-agent`, `metadata.agent`) where it is a valid name (validation refuses the others);
        else an agent role asked for by name (the seed's AGENT_MODELS as model_group_alias)."""
        body, sent, native = with_header_timeout(inbound.body, inbound.headers), None, None
        if api.translate is not None:
            sent = body
            body, native = api.translate(sent, inbound.headers)
        model = str(body.get("model") or self.settings.default_model or "")
        caller = inbound.caller
        if caller.key is not None and caller.key.resolve(model) != model:
            # The key's own alias names the model it is served by (and checked against).
            model = caller.key.resolve(model)
            body = {**body, "model": model}
        aliases = self.config.router_settings.get("model_group_alias") or {}
        agent = caller.agent or next(
            (name for name in claimed_agents(caller, sent or body) if AGENT_NAME.match(name)),
            model if model in aliases else None,
        )
        request = GatewayRequest(
            endpoint=inbound.endpoint,
            api=api,
            caller=caller,
            body=body,
            request_id=inbound.request_id,
            model=model,
            agent=agent,
            sent=sent,
            native=native,
        )
        return replace(request, session=session_of(request, inbound.headers, self.affinity))

    def validate(self, request: GatewayRequest) -> ModelRouter:
        """The key may use the model, the model can be served, the parameters are the API's;
        the router the request is validated against."""
        router, settings = self.routers.get(), self.settings
        served, accepts_any = self.model_names(), self.config.accepts_any_model
        validate_model(request, router, served, accepts_any)
        testing = MOCK_TESTING_PARAMS.keys() if settings.allows_mock_testing_params else ()
        validate_request(request, router, testing)
        check_mock_testing_params(request.as_sent)
        limit = router.max_output_tokens(request.model)
        bound_output_tokens(request, limit, settings.output_tokens_over_limit)
        check_routing_options(
            request,
            router,
            served,
            accepts_any,
            settings.max_request_retries,
            settings.provider_deadline_s,
        )
        return router

    async def expand_conversation(self, state: RequestState) -> None:
        """The Responses API: the stored conversation a `previous_response_id` names."""
        if state.request.api.conversations:
            store = self.stores.responses
            state.request = await asyncio.to_thread(with_conversation, state.request, store)
            if state.request.api.router_call is not None and stores(state.request):
                # One that could never be stored is refused before the provider is paid.
                items = as_items(state.request.body.get("input"))
                store.check_fits(StoredResponse("", state.request.caller.key_id, items, {}))

    async def look_up_cache(self, state: RequestState) -> Any:
        """A cached answer (litellm's type for the API), or None."""
        api = state.request.api
        if api.from_cache is None:
            return None
        state.cache = cache = CacheControl.of(state.request.body, self.cache_settings)
        if not (cache.lookup or cache.store):
            return None
        # The key is the whole question hashed, within the caller's (or its team's) answers:
        # once, for the lookup and the write.
        owner = self.cache_settings.owner(state.request.caller)
        state.cache_key = cache_key(state.request.model, state.request.body, owner)
        if not cache.lookup:
            return None
        answer = await asyncio.to_thread(self.stores.cache.load, state.cache_key)
        return None if answer is None else api.from_cache(answer)

    async def admit(self, state: RequestState, *, cache_hit: bool) -> None:
        """The rate limits and budgets of the key, its team and its user, reserved before the
        call (a DynamoDB write only where there are any); a budget fallback may change the
        model that serves the request."""
        admitting = partial(
            admit,
            self.stores.counters,
            state.request,
            state.validated_router,
            cache_hit,
            self.config.router_settings.get("budget_fallbacks"),
        )
        asked = state.request.model
        if needs_counters(state.request):
            state.admission, state.request = await asyncio.to_thread(admitting)
        else:
            state.admission, state.request = admitting()
        if state.request.model != asked:
            # Another model's answer is never cached as the one asked for.
            state.cache_key = None

    async def call_provider(self, state: RequestState) -> Any:
        router, request = state.validated_router, state.request
        scope = RequestScope(
            admission=state.admission,
            permission=Permission(permitted_groups(request.caller, router)),
            native=request.native,
            session=request.session,
        )
        state.routed = time.perf_counter()
        return await call_provider(router, request, scope, self.settings.provider_deadline_s)

    async def failed(self, state: RequestState, exc: Exception) -> ProxyError:
        """The failure as the client gets it, metered."""
        error = as_proxy_error(exc, state.request.model)
        record = state.record
        record_failure(record, error, exc, state.router or self.routers.last_built)
        record_latency(record, state.started, state.routed)
        await self.meter(record, state.admission)
        return error

    async def answer(self, state: RequestState, response: Any) -> Answer:
        """A JSON answer, metered (and cached, and stored, where the API and request say)."""
        request, record = state.request, state.record
        state_write = self.cache_write(state, response)
        record_usage(record, getattr(response, "usage", None))
        record_cost(record, state.router)
        record_latency(record, state.started, state.routed)
        if request.api.conversations:
            response.id = new_response_id()
            try:
                stored = self.store_write(state, response.model_dump(exclude_none=True))
            except ProxyError as error:
                # Refused rather than answered with an id that is not stored; tokens charged.
                raise await self.failed(state, error) from None
            state_write = both(state_write, stored)
        await self.meter(
            record,
            state.admission,
            state_write=state_write,
            after_response=state.after_response,
        )
        return Answer(request.api.answer(response, request), headers=self.cache_headers(state))

    async def counted(self, state: RequestState, count: Any) -> Answer:
        """A count API's answer, metered like any request: it counts against the key's rpm
        and is recorded, at no cost."""
        record_latency(state.record, state.started)
        await self.meter(state.record, state.admission, after_response=state.after_response)
        return Answer(count)

    def stream(self, state: RequestState, response: Any) -> Answer:
        """A stream's answer: its events, metered (and stored) when the stream ends."""
        api = state.request.api
        assert api.reader is not None and api.encode is not None
        source = api.reader.replay(response) if state.record.cache_hit else response
        stream = MeteredStream(source, api.reader(state.request), state, self.finish_stream)
        return Answer(events=api.encode(stream, state.request), headers=self.cache_headers(state))

    async def finish_stream(self, stream: MeteredStream) -> None:
        state = stream.state
        record = state.record
        if stream.completed and not record.cache_hit:
            record_answer(record, stream.hidden_params, state.router)
        record_cost(record, state.router)
        result = stream.reader.result
        state_write = self.store_write(state, result) if result is not None else None
        # A stream's usage is written after its last byte, as a JSON answer's is; not where an
        # extension holds the invocation (a cut stream may end after the hand-over).
        in_extension = self.meter.metering is Metering.ALL_AFTER_RESPONSE
        later = None if in_extension else state.after_response
        await self.meter(record, state.admission, state_write=state_write, after_response=later)

    # -- state the next request must see -------------------------------------------------------

    def cache_write(self, state: RequestState, response: Any) -> StateWrite | None:
        cache, key = state.cache, state.cache_key
        if cache is None or key is None or not cache.store or state.record.cache_hit:
            return None
        return partial(self.stores.cache.put, key, response, cache.ttl_s)

    def store_write(self, state: RequestState, response: dict[str, Any]) -> StateWrite | None:
        request = state.request
        if not request.api.conversations or not stores(request):
            return None
        if not self.stores.responses.enabled:
            return None
        stored = to_stored(request, response)
        if not request.stream:
            # Not answered yet: one that cannot be stored is a 400 instead (a stream's id is
            # out already; `put` logs that it is not stored).
            self.stores.responses.check_fits(stored)
        return partial(self.stores.responses.put, stored)

    def cache_headers(self, state: RequestState) -> dict[str, str]:
        """Whether the answer came from the response cache, where the cache is on."""
        if not self.cache_settings.enabled or not state.request.api.cache_header:
            return {}
        return {CACHE_HIT_HEADER: "true" if state.record.cache_hit else "false"}


def both(*writes: StateWrite | None) -> StateWrite | None:
    """One state write for several (the response cache's and the stored response's)."""
    chosen = [write for write in writes if write is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def write_all() -> None:
        for write in chosen:
            write()

    return write_all
