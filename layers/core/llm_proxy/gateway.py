"""The request path behind the HTTP routes: authenticate, route through litellm, meter."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import litellm

from .auth import Caller, authenticate, check_master_key
from .config import ProxyConfig, config_for_mode, secret_then_env
from .errors import ProxyError, from_litellm, invalid_request, model_not_found
from .logs import enable_detailed_debug, logger, redactor
from .messages import to_chat_request, to_message
from .pricing import cost_usd
from .routing import Routes, apply_litellm_settings, build_routes, fingerprint, retire
from .schemas import refuse_forbidden_params, refuse_unencodable_text
from .secrets import ProviderKeys
from .settings import Settings
from .usage import UsageRecord, UsageStore

# Errors raised by these packages come from a provider call; anything else is our own bug.
PROVIDER_ERROR_PACKAGES = frozenset({"litellm", "openai", "httpx", "httpcore", "aiohttp"})
SECRET_PARAM_MARKERS = ("key", "token", "secret", "password", "credential")
DEFAULT_MASTER_KEY_REFERENCE = "os.environ/LLM_PROXY__MASTER_KEY"
NOT_CONFIGURED = "not configured"
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"
# nginx's status for a client that closed the connection before the answer was complete.
CLIENT_CLOSED_REQUEST = 499
# Usage writes shielded from a disconnecting client's cancellation, kept referenced until done.
_PENDING_WRITES: set[asyncio.Future[None]] = set()


class Gateway:
    def __init__(
        self, settings: Settings, config: ProxyConfig, keys: ProviderKeys | None = None
    ) -> None:
        self.settings = settings
        self.config = config
        self.keys = keys or ProviderKeys(settings.secret_id, settings.secret_ttl_s)
        self.usage = UsageStore(settings.usage_table, settings.usage_retention_days)
        self._routes: Routes | None = None
        self._fingerprint: str | None = None
        if settings.detailed_debug:
            enable_detailed_debug()
        apply_litellm_settings(config)

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
        current = fingerprint(secret)
        if self._routes is None or current != self._fingerprint:
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
            self._routes, self._fingerprint = routes, current
        return self._routes

    def master_key(self) -> str:
        reference = self.config.general_settings.master_key or DEFAULT_MASTER_KEY_REFERENCE
        if reference.startswith("os.environ/"):
            value = secret_then_env(self.keys.get())(reference.removeprefix("os.environ/"))
        else:
            value = reference
        redactor.register([value])
        return check_master_key(value, local=self.settings.is_local)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        return authenticate(headers, self.master_key())

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
        self, body: dict[str, Any], caller: Caller, request_id: str, endpoint: str
    ) -> Any:
        """A chat completion: litellm's ModelResponse, or a ChatStream when streaming."""
        stream = bool(body.get("stream"))
        params = {k: v for k, v in body.items() if k not in ("model", "messages", "metadata")}

        async def call(routes: Routes, model: str) -> Any:
            call_params = dict(params)
            if stream and self._streams_usage(routes, model):
                # Usage comes in the stream's last chunk only when asked for.
                call_params["stream_options"] = {
                    **(params.get("stream_options") or {}),
                    "include_usage": True,
                }
            return await routes.router.acompletion(
                model=model, messages=body["messages"], **call_params
            )

        response, record, routes, started = await self._routed(
            body, caller, request_id, endpoint, call, stream=stream
        )
        if stream:
            client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return ChatStream(
                self, response, record, started, routes, client_wants_usage, body["messages"]
            )
        await self._finish(record, response, routes, started)
        return response

    async def messages(
        self, body: dict[str, Any], caller: Caller, request_id: str, endpoint: str
    ) -> dict[str, Any] | ChatStream:
        """Anthropic's Messages API: a message object, or a ChatStream to re-emit as events."""
        refuse_forbidden_params(body)
        result = await self.chat(to_chat_request(body), caller, request_id, endpoint)
        if isinstance(result, ChatStream):
            return result
        return to_message(result, str(body.get("model")))

    async def embeddings(
        self, body: dict[str, Any], caller: Caller, request_id: str, endpoint: str
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

        response, record, routes, started = await self._routed(
            body, caller, request_id, endpoint, call, stream=False
        )
        await self._finish(record, response, routes, started)
        return response

    async def _routed(
        self,
        body: dict[str, Any],
        caller: Caller,
        request_id: str,
        endpoint: str,
        call: Callable[[Routes, str], Awaitable[Any]],
        *,
        stream: bool,
    ) -> tuple[Any, UsageRecord, Routes, float]:
        """Check the request, make the provider call and describe it in a usage record; a
        failure is metered here and raised as a ProxyError."""
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
            stream=stream,
        )
        started = time.perf_counter()
        try:
            refuse_forbidden_params(body)
            refuse_unencodable_text(body)
            if not model:
                raise invalid_request("'model' is required.", param="model", code="missing_model")
            routes = self.routes()
            self._require_model(model, routes)
            response = await call(routes, model)
        except Exception as exc:
            error = self._as_proxy_error(exc, model)
            record.status, record.error_type, record.error_code = (
                error.status,
                error.error_type,
                error.code,
            )
            self._describe_failure(record, exc)
            record.latency_ms = (time.perf_counter() - started) * 1000
            await self._write(record)
            raise error from None
        self._describe_deployment(record, getattr(response, "_hidden_params", None) or {}, routes)
        return response, record, routes, started

    async def _finish(
        self, record: UsageRecord, response: Any, routes: Routes, started: float
    ) -> None:
        usage = getattr(response, "usage", None)
        record.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        record.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        hidden_cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        # litellm reports 0 for a model it cannot price; the deployment may still have a price.
        record.cost_usd = float(hidden_cost) if hidden_cost else self._cost(record, routes)
        record.latency_ms = (time.perf_counter() - started) * 1000
        await self._write(record)

    def _is_mock(self, routes: Routes, model: str) -> bool:
        return any(
            deployment.get("model_name") == model
            and "mock_response" in deployment["litellm_params"]
            for deployment in routes.deployments.values()
        )

    def _streams_usage(self, routes: Routes, model: str) -> bool:
        """Whether every deployment of the group accepts `stream_options` (Azure API versions
        before 2024-09-01-preview refuse it; their streams are counted by the gateway)."""
        aliases = self.config.router_settings.get("model_group_alias") or {}
        group = aliases.get(model, model)
        group = group.get("model", model) if isinstance(group, dict) else group
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
            names = ", ".join(sorted(routes.unavailable[model]))
            raise ProxyError(
                503,
                f"Model '{model}' cannot be served: {names} is not set in the provider-keys "
                "secret or the environment.",
                "service_unavailable",
                param="model",
                code="provider_key_missing",
            )
        if model not in self.model_names() and not self.config.accepts_any_model:
            raise model_not_found(model, self.model_names())

    def _as_proxy_error(self, exc: Exception, model: str) -> ProxyError:
        if isinstance(exc, ProxyError):
            return exc
        if isinstance(exc, TimeoutError):
            return ProxyError(
                504,
                f"Model '{model}': the provider did not answer in time.",
                "timeout_error",
                code="provider_timeout",
            )
        if type(exc).__module__.split(".", 1)[0] in PROVIDER_ERROR_PACKAGES:
            error = from_litellm(exc, model, redactor.redact)
            logger.warning(
                "provider call failed",
                extra={
                    "model": model,
                    "status": error.status,
                    "error": type(exc).__name__,
                    "detail": error.message,
                },
            )
            return error
        raise exc

    def _describe_deployment(
        self, record: UsageRecord, hidden: Mapping[str, Any], routes: Routes
    ) -> None:
        headers = hidden.get("additional_headers") or {}
        record.deployment_id = hidden.get("model_id")
        deployment = routes.deployments.get(str(record.deployment_id), {})
        # The answering deployment's own group: after an alias or a fallback it differs from
        # what was asked for.
        record.model_group = deployment.get("model_name") or headers.get("x-litellm-model-group")
        record.deployment_model = hidden.get("litellm_model_name") or (
            deployment.get("litellm_params", {}).get("model")
        )
        record.provider = hidden.get("custom_llm_provider") or deployment.get("provider")
        record.retries = int(headers.get("x-litellm-attempted-retries") or 0)
        record.fallbacks = int(headers.get("x-litellm-attempted-fallbacks") or 0)

    def _describe_failure(self, record: UsageRecord, exc: Exception) -> None:
        """What litellm's exception tells about the failed attempt: the deployment and how many
        retries it made before giving up."""
        retries = getattr(exc, "num_retries", None)
        if isinstance(retries, int):
            record.retries = retries
        deployment_id = getattr(exc, "failed_deployment_id", None)
        deployment = (self._routes.deployments if self._routes else {}).get(str(deployment_id))
        if deployment is not None:
            record.deployment_id = str(deployment_id)
            record.model_group = deployment.get("model_name")
            record.deployment_model = deployment["litellm_params"].get("model")
            record.provider = deployment.get("provider")

    def _cost(self, record: UsageRecord, routes: Routes) -> float:
        deployment = routes.deployments.get(str(record.deployment_id))
        if deployment is None:
            return 0.0
        return cost_usd(deployment, record.prompt_tokens, record.completion_tokens)

    async def _write(self, record: UsageRecord) -> None:
        await asyncio.to_thread(self.usage.write, record)


class ChatStream:
    """An open provider stream, re-emitted as OpenAI SSE and metered when it ends."""

    def __init__(
        self,
        gateway: Gateway,
        stream: Any,
        record: UsageRecord,
        started: float,
        routes: Routes,
        client_wants_usage: bool,
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        self._gateway = gateway
        self._messages = messages or []
        self._text: list[str] = []
        self._answered = False
        self._stream = stream
        self._record = record
        self._started = started
        self._routes = routes
        self._client_wants_usage = client_wants_usage
        self._done = False
        self._stream_id = ""

    @property
    def model(self) -> str:
        return self._record.model_requested or ""

    async def chunks(self) -> AsyncIterator[Any]:
        """The provider's chunks, metered; a failure after the start raises a ProxyError."""
        record = self._record
        try:
            async for chunk in self._stream:
                if record.ttft_ms is None:
                    record.ttft_ms = (time.perf_counter() - self._started) * 1000
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    record.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                    record.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                # One id for the whole stream, as OpenAI sends it (some providers vary it).
                self._stream_id = self._stream_id or str(getattr(chunk, "id", "") or "")
                if not self._stream_id.startswith("chatcmpl-"):
                    self._stream_id = f"chatcmpl-{uuid.uuid4().hex}"
                chunk.id = self._stream_id
                for choice in getattr(chunk, "choices", None) or []:
                    self._text.append(getattr(choice.delta, "content", None) or "")
                    self._answered = self._answered or bool(
                        getattr(choice.delta, "tool_calls", None)
                    )
                self._answered = self._answered or usage is not None
                yield chunk
            if not self._answered and not "".join(self._text):
                # litellm turns a body that is not SSE into an empty stream, without an error.
                raise ProxyError(
                    502,
                    f"Model '{self.model}': the provider's stream carried no answer.",
                    "upstream_error",
                    code="provider_bad_response",
                )
            # After a mid-stream fallback the stream carries the deployment that finished it.
            self._gateway._describe_deployment(
                record, getattr(self._stream, "_hidden_params", None) or {}, self._routes
            )
            self._done = True
        except (asyncio.CancelledError, GeneratorExit):
            if record.status == 200 and not self._done:
                record.status, record.error_type, record.error_code = (
                    CLIENT_CLOSED_REQUEST,
                    "client_closed",
                    "client_disconnected",
                )
            raise
        except Exception as exc:
            error = self._gateway._as_proxy_error(exc, self.model)
            if error.status < 500 and error.status != 429:
                # Once the stream has started, the request was accepted: a failure now is the
                # provider's, whatever status litellm gives it.
                error = ProxyError(502, error.message, "upstream_error", code="provider_error")
            record.status, record.error_type, record.error_code = (
                error.status,
                error.error_type,
                error.code,
            )
            raise error from None
        finally:
            if not record.prompt_tokens and not record.completion_tokens:
                self._estimate_usage()
            record.latency_ms = (time.perf_counter() - self._started) * 1000
            record.cost_usd = self._gateway._cost(record, self._routes)
            # A client that hangs up cancels this generator; the usage write must still land.
            write = asyncio.ensure_future(self._gateway._write(record))
            _PENDING_WRITES.add(write)
            write.add_done_callback(_PENDING_WRITES.discard)
            await asyncio.shield(write)

    def _estimate_usage(self) -> None:
        """Count tokens when the provider sent no usage (a stream without stream_options)."""
        record = self._record
        model = record.deployment_model or self.model
        try:
            record.prompt_tokens = int(litellm.token_counter(model=model, messages=self._messages))
            text = "".join(self._text)
            record.completion_tokens = int(litellm.token_counter(model=model, text=text))
        except Exception:
            logger.warning("stream usage could not be counted", extra={"model": model})
            return
        record.usage_estimated = True

    async def events(self) -> AsyncIterator[str]:
        """OpenAI's SSE: one `data:` line per chunk, then `data: [DONE]` (or an error)."""
        try:
            async for chunk in self.chunks():
                data = chunk.model_dump(exclude_none=True)
                if not self._client_wants_usage:
                    data.pop("usage", None)
                    if not data.get("choices"):
                        continue
                yield f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
            yield "data: [DONE]\n\n"
        except ProxyError as error:
            yield f"data: {json.dumps(error.body())}\n\n"
