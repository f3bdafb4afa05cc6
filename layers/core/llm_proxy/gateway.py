"""The request path behind the HTTP routes: authenticate, route through litellm, meter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from llm_proxy.access.auth import (
    Caller,
    authenticate,
    check_master_key,
    is_master_key,
    presented_key,
)
from llm_proxy.access.limits import (
    CURRENT_ADMISSION,
    Admission,
    Limiter,
    Limits,
    Reservation,
    register_deployment_check,
)
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.accounting.usage import UsageRecord, UsageStore
from llm_proxy.config import ProxyConfig, config_for_mode, secret_then_env
from llm_proxy.errors import ProxyError, as_proxy_error, invalid_request, model_not_found
from llm_proxy.http.schemas import refuse_forbidden_params, refuse_unencodable_text
from llm_proxy.logs import enable_detailed_debug, logger, redactor
from llm_proxy.pipeline.cache import (
    CacheControl,
    CacheSettings,
    ResponseCache,
    cache_key,
    replayed_stream,
)
from llm_proxy.pipeline.messages import to_chat_request, to_message
from llm_proxy.pipeline.meter import cost, describe_deployment, describe_failure, estimate_tokens
from llm_proxy.pipeline.router import (
    Routes,
    apply_litellm_settings,
    build_routes,
    deployment_limits,
    fallbacks_for,
    retire,
)
from llm_proxy.pipeline.streams import ChatStream, OpenedStream, empty_stream, open_stream
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.settings import Settings

SECRET_PARAM_MARKERS = ("key", "token", "secret", "password", "credential")
DEFAULT_MASTER_KEY_REFERENCE = "os.environ/LLM_PROXY__MASTER_KEY"
NOT_CONFIGURED = "not configured"
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"
CACHE_HIT = "cache_hit"

# Takes work to run once the response is sent (the app's RequestContext runs it).
AfterResponse = Callable[[Callable[[], None]], None]


@dataclass
class Routed:
    """A request answered (by a provider or the cache), not yet metered."""

    response: Any
    record: UsageRecord
    routes: Routes
    started: float
    admission: Admission | None


class Gateway:
    def __init__(
        self, settings: Settings, config: ProxyConfig, keys: ProviderKeys | None = None
    ) -> None:
        self.settings = settings
        self.config = config
        self.keys = keys or ProviderKeys(settings.secret_id, settings.secret_ttl_s)
        self.usage = UsageStore(
            settings.usage_table,
            settings.usage_retention_days,
            rollups_table=settings.rollups_table,
            dead_letter_queue=settings.usage_dead_letter_queue,
        )
        self.key_store = KeyStore(settings.keys_table)
        self.limiter = Limiter(settings.counters_table)
        self.cache = ResponseCache(settings.cache_table)
        self.cache_settings = CacheSettings.from_config(config)
        self._routes: Routes | None = None
        # The secret the router was built from: a different one (a rotation) rebuilds it.
        self._built_from: dict[str, str] | None = None
        self._deployment_limits: dict[str, Limits] = {}
        if settings.detailed_debug:
            enable_detailed_debug()
        apply_litellm_settings(config)
        if self.limiter.table_name:
            register_deployment_check()

    @classmethod
    def from_settings(cls, settings: Settings, default_config: Path) -> Gateway:
        config = config_for_mode(
            settings.llm_mode,
            settings.config_path,
            default_config,
            ollama_api_base=settings.ollama_api_base,
            litellm_proxy_url=settings.litellm_proxy_url,
        )
        gateway = cls(settings, config)
        gateway.warm()
        return gateway

    @classmethod
    def from_env(cls, default_config: Path) -> Gateway:
        return cls.from_settings(Settings.from_env(), default_config)

    def warm(self) -> None:
        """Build the router at init when the secret is reachable; otherwise on first request."""
        try:
            self.routes()
        except ProxyError as exc:
            logger.warning("router build deferred to the first request", extra={"reason": exc.code})

    # -- state derived from the provider-keys secret -------------------------------------------

    def routes(self) -> Routes:
        secret = self.keys.get()
        if self._routes is None or secret != self._built_from:
            if self._routes is not None:
                retire(self._routes)
            routes = build_routes(
                self.config, secret_then_env(secret), self.settings.ollama_api_base
            )
            for deployment in routes.deployments.values():
                redactor.register(
                    str(value)
                    for name, value in deployment["litellm_params"].items()
                    if any(marker in name for marker in SECRET_PARAM_MARKERS)
                )
            self._routes, self._built_from = routes, secret
            # Deployment limits are counted in the counters table; without one there are none.
            if self.limiter.table_name:
                self._deployment_limits = deployment_limits(routes, self.config)
        return self._routes

    def rebuild(self) -> None:
        """Build the router afresh on next use, with new HTTP clients (after a restore)."""
        self._built_from = None

    def master_key(self) -> str:
        reference = self.config.general_settings.master_key or DEFAULT_MASTER_KEY_REFERENCE
        if reference.startswith("os.environ/"):
            value = secret_then_env(self.keys.get())(reference.removeprefix("os.environ/"))
        else:
            value = reference
        redactor.register([value])
        return check_master_key(value, local=self.settings.is_local)

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Who is calling. A virtual key this container has not cached is read from the keys
        table in a worker thread; the master key and cached keys are checked on the loop."""
        master, key = self.master_key(), presented_key(headers)
        lookup = self.key_store.authenticate
        if key and not self.key_store.is_cached(key) and not is_master_key(key, master):
            return await asyncio.to_thread(authenticate, headers, master, lookup)
        return authenticate(headers, master, lookup)

    def model_names(self) -> list[str]:
        names = self.config.model_names()
        default = self.settings.default_model
        if default and self.config.accepts_any_model and default not in names:
            names.insert(0, default)
        return names

    def readiness(self) -> dict[str, str]:
        checks = {"config": "ok", "secret": "ok", "usage_table": "ok"}
        if not self.settings.secret_id:
            checks["secret"] = NOT_CONFIGURED
        if not self.settings.usage_table:
            checks["usage_table"] = NOT_CONFIGURED
        try:
            self.keys.get(force=True)
        except ProxyError as exc:
            checks["secret"] = exc.message
        try:
            self.usage.ping()
        except Exception as exc:
            checks["usage_table"] = f"unreachable ({type(exc).__name__})"
        return checks

    # -- completions and embeddings --------------------------------------------------------

    async def chat(
        self,
        body: dict[str, Any],
        caller: Caller,
        request_id: str,
        endpoint: str,
        after_response: AfterResponse | None = None,
    ) -> Any:
        """A chat completion: litellm's ModelResponse, or a ChatStream when streaming.
        `after_response` takes the usage write of a non-streamed answer (see `_finish`)."""
        stream = bool(body.get("stream"))
        params = {
            k: v for k, v in body.items() if k not in ("model", "messages", "metadata", "cache")
        }

        async def call(routes: Routes, model: str) -> Any:
            call_params = dict(params)
            if stream and self._streams_usage(routes, model):
                # Usage comes in the stream's last chunk only when asked for.
                call_params["stream_options"] = {
                    **(params.get("stream_options") or {}),
                    "include_usage": True,
                }
            response = await routes.router.acompletion(
                model=model, messages=body["messages"], **call_params
            )
            if not stream:
                return response
            return await self._opened(routes, model, response, body["messages"], call_params)

        control = CacheControl.of(body, self.cache_settings)
        routed = await self._routed(body, caller, request_id, endpoint, call, cache=control)
        response, record = routed.response, routed.record
        if stream:
            client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if record.cache_hit:
                response = replayed_stream(response)
            return ChatStream(
                partial(self._meter, routed.admission),
                response,
                record,
                routed.started,
                routed.routes,
                client_wants_usage,
                body["messages"],
            )
        store = None
        if control.store and not record.cache_hit:
            key = cache_key(str(record.model_requested), body)
            store = partial(self.cache.put, key, response, control.ttl_s)
        await self._finish(routed, after_response, store)
        return response

    async def messages(
        self,
        body: dict[str, Any],
        caller: Caller,
        request_id: str,
        endpoint: str,
        after_response: AfterResponse | None = None,
    ) -> dict[str, Any] | ChatStream:
        """Anthropic's Messages API: a message object, or a ChatStream to re-emit as events."""
        refuse_forbidden_params(body)
        result = await self.chat(
            to_chat_request(body), caller, request_id, endpoint, after_response
        )
        if isinstance(result, ChatStream):
            return result
        return to_message(result, str(body.get("model")))

    async def embeddings(
        self,
        body: dict[str, Any],
        caller: Caller,
        request_id: str,
        endpoint: str,
        after_response: AfterResponse | None = None,
    ) -> Any:
        params = {k: v for k, v in body.items() if k not in ("model", "input", "metadata")}

        async def call(routes: Routes, model: str) -> Any:
            if self._is_mock(routes, model):
                raise invalid_request(
                    f"Model '{model}' is a mock chat model and has no embeddings.",
                    param="model",
                    code="model_not_embedding",
                )
            return await routes.router.aembedding(model=model, input=body["input"], **params)

        routed = await self._routed(body, caller, request_id, endpoint, call)
        await self._finish(routed, after_response)
        return routed.response

    async def _routed(
        self,
        body: dict[str, Any],
        caller: Caller,
        request_id: str,
        endpoint: str,
        call: Callable[[Routes, str], Awaitable[Any]],
        *,
        cache: CacheControl | None = None,
    ) -> Routed:
        """Check the request, admit it, answer it from the cache or the provider, and describe
        it in a usage record; a failure is metered here and raised as a ProxyError."""
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        model = str(body.get("model") or self.settings.default_model or "")
        # An agent role asked for by name (the seed's AGENT_MODELS as model_group_alias) tags
        # the usage item when the caller names no agent itself.
        agent = caller.agent or (metadata or {}).get("agent") or self._agent_alias(model)
        record = UsageRecord(
            request_id=request_id,
            endpoint=endpoint,
            key_id=caller.key_id,
            agent=str(agent) if agent else None,
            model_requested=model or None,
            stream=bool(body.get("stream")),
        )
        started = time.perf_counter()
        admission: Admission | None = None
        try:
            refuse_forbidden_params(body)
            refuse_unencodable_text(body)
            if not model:
                raise invalid_request("'model' is required.", param="model", code="missing_model")
            routes = self.routes()
            self._require_model(model, routes)
            self._require_allowed(caller, model)
            hit = None
            if cache is not None and cache.lookup:
                hit = await asyncio.to_thread(self.cache.get, cache_key(model, body))
            # Only a key with limits takes counters (a DynamoDB write); the rest is arithmetic.
            admit = partial(self._admit, caller, body, model, routes, hit)
            limited = caller.key is not None and caller.key.has_limits
            admission = await asyncio.to_thread(admit) if limited else admit()
            if hit is not None:
                record.cache_hit = True
                response = hit
            else:
                context = CURRENT_ADMISSION.set(admission)
                try:
                    async with asyncio.timeout(self.settings.provider_deadline_s):
                        response = await call(routes, model)
                finally:
                    CURRENT_ADMISSION.reset(context)
        except Exception as exc:
            error = as_proxy_error(exc, model)
            record.status, record.error_type, record.error_code = (
                error.status,
                error.error_type,
                error.code,
            )
            describe_failure(record, exc, self._routes)
            record.latency_ms = (time.perf_counter() - started) * 1000
            await asyncio.to_thread(self._meter, admission, record)
            raise error from None
        if record.cache_hit:
            response._hidden_params = {CACHE_HIT: True}
        else:
            describe_deployment(record, getattr(response, "_hidden_params", None) or {}, routes)
        return Routed(response, record, routes, started, admission)

    async def _finish(
        self,
        routed: Routed,
        after_response: AfterResponse | None,
        store: Callable[[], None] | None = None,
    ) -> None:
        """Meter an answer. The key's counters are settled, and the answer cached, before the
        response: the caller's next request must see its spend and the cache entry. The usage
        item is written after the response where `after_response` is given and the process
        outlives the response (`Settings.meter_after_response`); else before it, in the same
        worker thread."""
        record, response = routed.record, routed.response
        usage = getattr(response, "usage", None)
        record.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        record.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        hidden_cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        if record.cache_hit:
            record.cost_usd = 0.0
        else:
            # litellm reports 0 for a model it cannot price; the deployment may have a price.
            record.cost_usd = float(hidden_cost) if hidden_cost else cost(record, routed.routes)
        record.latency_ms = (time.perf_counter() - routed.started) * 1000
        admission = routed.admission
        settle = admission is not None and admission.holds_counters
        if after_response is None or not self.settings.meter_after_response:
            await asyncio.to_thread(self._meter, admission, record, store)
            return
        if settle or store is not None:
            await asyncio.to_thread(self._settle, admission, record, store)
        after_response(partial(self._write_usage, record))

    def _meter(
        self,
        admission: Admission | None,
        record: UsageRecord,
        store: Callable[[], None] | None = None,
    ) -> None:
        """The usage item, the admission's estimates settled to what was really used, and the
        answer cached."""
        self.usage.write(record)
        self._settle(admission, record, store)

    def _settle(
        self,
        admission: Admission | None,
        record: UsageRecord,
        store: Callable[[], None] | None = None,
    ) -> None:
        if admission is not None and admission.holds_counters:
            # A cache hit used no provider tokens, whatever its answer reports.
            used = 0 if record.cache_hit else record.prompt_tokens + record.completion_tokens
            self.limiter.settle(
                admission.reservation,
                used,
                record.cost_usd,
                admission.deployment_items,
                record.deployment_id,
            )
        if store is not None:
            store()

    def _write_usage(self, record: UsageRecord) -> None:
        """The usage item, after the response: nothing is left to fail but the log."""
        try:
            self.usage.write(record)
        except Exception:
            logger.exception("usage write failed after the response")

    def _require_allowed(self, caller: Caller, model: str) -> None:
        key = caller.key
        if key is not None and not key.allows(model):
            raise ProxyError(
                403,
                f"This key may not use model '{model}'. Allowed: {', '.join(key.models)}.",
                "permission_error",
                param="model",
                code="model_not_allowed",
            )

    def _admit(
        self,
        caller: Caller,
        body: dict[str, Any],
        model: str,
        routes: Routes,
        hit: Any,
    ) -> Admission:
        """The key's rpm/tpm and budget, in one conditional write; the estimate it reserves
        is the prompt plus max_tokens (nothing for a cache hit, which costs nothing)."""
        key = caller.key
        limits = {} if hit is not None else self._deployment_limits
        limited_key = key is not None and key.has_limits
        tokens, estimated_cost = 0, 0.0
        # Only a tpm limit or a budget needs the estimate; rpm counts requests.
        counts_tokens = key is not None and (key.tpm_limit or key.max_budget is not None)
        if hit is None and (counts_tokens or any(limit.tpm for limit in limits.values())):
            tokens, estimated_cost = self._estimate(body, model, routes)
        if key is None or not limited_key:
            return Admission(self.limiter, Reservation(tokens=tokens), limits)
        if not self.limiter.table_name:
            raise ProxyError(
                503,
                "This key has limits but no counters table is configured "
                "(LLM_PROXY__COUNTERS_TABLE).",
                "service_unavailable",
                code="counters_table_missing",
            )
        reservation = self.limiter.admit(key, tokens, estimated_cost)
        return Admission(self.limiter, reservation, limits)

    def _estimate(self, body: dict[str, Any], model: str, routes: Routes) -> tuple[int, float]:
        """Worst-case tokens and cost: the prompt, plus max_tokens at the group's dearest
        output price."""
        prompt, output = estimate_tokens(body)
        group = self._group(model)
        costs = [
            cost_usd(deployment, prompt, output)
            for deployment in routes.deployments.values()
            if deployment.get("model_name") == group
        ]
        return prompt + output, max(costs, default=0.0)

    async def _opened(
        self,
        routes: Routes,
        model: str,
        response: Any,
        messages: Any,
        params: dict[str, Any],
    ) -> OpenedStream:
        """The stream, its first chunk read. litellm reads a body that is not SSE as an empty
        stream and raises nothing, so the Router never tries the fallbacks: they are tried here."""
        opened = await open_stream(response)
        if opened is not None:
            return opened
        error = empty_stream(model, response)
        for taken, fallback in enumerate(fallbacks_for(routes, self._group(model)), start=1):
            try:
                retry = await routes.router.acompletion(model=fallback, messages=messages, **params)
                opened = await open_stream(retry, fallbacks=taken)
            except Exception as exc:
                logger.warning(
                    "fallback after an empty stream failed",
                    extra={"fallback": fallback, "error": type(exc).__name__},
                )
                continue
            if opened is not None:
                return opened
        raise error

    def _group(self, model: str) -> str:
        aliases = self.config.router_settings.get("model_group_alias") or {}
        group = aliases.get(model, model)
        return str(group.get("model", model) if isinstance(group, dict) else group)

    @staticmethod
    def was_cache_hit(response: Any) -> bool:
        hidden = getattr(response, "_hidden_params", None)
        return isinstance(hidden, dict) and bool(hidden.get(CACHE_HIT))

    def _is_mock(self, routes: Routes, model: str) -> bool:
        return any(
            deployment.get("model_name") == model
            and "mock_response" in deployment["litellm_params"]
            for deployment in routes.deployments.values()
        )

    def _streams_usage(self, routes: Routes, model: str) -> bool:
        """Whether every deployment of the group accepts `stream_options` (Azure API versions
        before 2024-09-01-preview refuse it; their streams are counted by the gateway)."""
        group = self._group(model)
        for deployment in routes.deployments.values():
            version = str(deployment["litellm_params"].get("api_version") or "9999")
            if (
                deployment.get("model_name") == group
                and deployment["provider"] == "azure"
                and version < AZURE_STREAM_OPTIONS_SINCE
            ):
                return False
        return True

    def _agent_alias(self, model: str) -> str | None:
        aliases = self.config.router_settings.get("model_group_alias") or {}
        return model if model in aliases else None

    def _require_model(self, model: str, routes: Routes) -> None:
        if model in routes.unavailable:
            missing = ", ".join(sorted(routes.unavailable[model]))
            raise ProxyError(
                503,
                f"Model '{model}' cannot be served: {missing} is not set in the provider-keys "
                "secret or the environment.",
                "service_unavailable",
                param="model",
                code="provider_key_missing",
            )
        names = self.model_names()
        if model not in names and not self.config.accepts_any_model:
            raise model_not_found(model, names)
