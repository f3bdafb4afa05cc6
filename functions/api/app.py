"""The api Lambda function: the FastAPI app and its Mangum handler. Routes stay thin; the
request path lives in `llm_proxy.gateway`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from llm_proxy import snapstart
from llm_proxy.access.auth import Caller
from llm_proxy.access.key_admin import KeyAdmin
from llm_proxy.errors import ProxyError
from llm_proxy.gateway import NOT_CONFIGURED, AfterResponse, Gateway
from llm_proxy.http.schemas import (
    AnthropicMessagesRequest,
    ChatCompletionRequest,
    EmbeddingRequest,
    ErrorResponse,
    KeyDeleteRequest,
    KeyGenerateRequest,
    KeyUpdateRequest,
    validation_error,
)
from llm_proxy.logs import logger
from llm_proxy.pipeline.cache import CACHE_HIT_HEADER
from llm_proxy.pipeline.messages import message_events
from llm_proxy.pipeline.streams import ChatStream
from llm_proxy.reports.report import ReportSettings, spend
from mangum import Mangum
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
# Threads of their own for the work left for after a response (usage writes), so that a slow
# table delays only that work, never the worker-thread calls of the requests being served.
AFTER_RESPONSE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-response")


# Declared for the OpenAPI schema; the gateway reads and checks the headers itself.
BEARER = HTTPBearer(auto_error=False, description="The master key (or a virtual key).")
API_KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False, description="The same key.")


async def caller(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    _api_key: Annotated[str | None, Security(API_KEY_HEADER)],
) -> Caller:
    # Async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    gateway: Gateway = request.app.state.gateway
    return await gateway.authenticate(request.headers)


Authenticated = Annotated[Caller, Depends(caller)]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request: the message and `param` name the field",
        401: "Missing, unknown, expired or blocked key",
        403: "The key may not use this model, or the route needs the master key",
        404: "Unknown model or route",
        413: "Body too large",
        429: "Rate or budget limit, with Retry-After (and x-ratelimit-* for rate limits)",
        502: "Provider error",
        503: "A dependency or the gateway's configuration is unavailable",
        504: "Provider timeout",
    }.items()
}


# With `"stream": true` the answer is Server-Sent Events instead of one JSON body.
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["data"],
}
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer; with `stream: true`, Server-Sent Events",
        "content": {"application/json": {}, "text/event-stream": {"schema": SSE_EVENT}},
    }
}


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="LLM Proxy",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.gateway = gateway
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]

    def error_response(request: Request, error: ProxyError) -> JSONResponse:
        return proxy_error_response(request.url.path, request_id(request), error)

    app.add_middleware(RequestContext, gateway=gateway)

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own errors (no route, wrong method, an unreadable body) in OpenAI's shape.
        messages = {
            404: (f"No route {request.method} {request.url.path}.", "not_found"),
            405: (
                f"Method {request.method} is not allowed on {request.url.path}.",
                "method_not_allowed",
            ),
            400: (f"The request body cannot be read: {exc.detail}.", "invalid_json"),
        }
        message, code = messages.get(exc.status_code, (str(exc.detail), str(exc.status_code)))
        error = ProxyError(
            exc.status_code,
            message,
            "invalid_request_error",
            code=code,
            headers=dict(exc.headers or {}),
        )
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(
            request,
            ProxyError(
                500,
                "Internal gateway error; the request id identifies it in the logs.",
                "internal_error",
                code="internal_error",
            ),
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/readiness", response_model=None)
    async def readiness() -> dict[str, Any] | JSONResponse:
        checks = gateway.readiness()
        ready = all(value in ("ok", NOT_CONFIGURED) for value in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return body if ready else JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    @app.get("/models", include_in_schema=False)
    async def list_models(who: Authenticated) -> dict[str, Any]:
        # A virtual key sees the models it may use.
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "llm-proxy"}
            for name in gateway.model_names()
            if who.key is None or who.key.allows(name)
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None, responses=STREAM_RESPONSE)
    @app.post("/chat/completions", include_in_schema=False, response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request, who: Authenticated
    ) -> JSONResponse | StreamingResponse:
        result = await gateway.chat(
            body.model_dump(exclude_unset=True),
            who,
            request_id(request),
            request.url.path,
            after_response(request),
        )
        headers = cache_headers(gateway, result)
        if isinstance(result, ChatStream):
            return event_stream(result.events(), headers)
        return JSONResponse(result.model_dump(exclude_none=True), headers=headers)

    @app.post("/v1/messages", response_model=None, responses=STREAM_RESPONSE)
    async def messages(
        body: AnthropicMessagesRequest, request: Request, who: Authenticated
    ) -> JSONResponse | StreamingResponse:
        result = await gateway.messages(
            body.model_dump(exclude_unset=True),
            who,
            request_id(request),
            request.url.path,
            after_response(request),
        )
        headers = cache_headers(gateway, result)
        if isinstance(result, ChatStream):
            return event_stream(message_events(result), headers)
        return JSONResponse(result, headers=headers)

    @app.post("/v1/embeddings")
    @app.post("/embeddings", include_in_schema=False)
    async def embeddings(
        body: EmbeddingRequest, request: Request, who: Authenticated
    ) -> dict[str, Any]:
        result = await gateway.embeddings(
            body.model_dump(exclude_unset=True),
            who,
            request_id(request),
            request.url.path,
            after_response(request),
        )
        vectors: dict[str, Any] = result.model_dump(exclude_none=True)
        return vectors

    admin = KeyAdmin(gateway.key_store, gateway.limiter)

    @app.post("/key/generate", tags=["keys"])
    async def key_generate(body: KeyGenerateRequest, who: Authenticated) -> dict[str, Any]:
        who.require_master()
        return await asyncio.to_thread(admin.generate, body.model_dump(exclude_unset=True))

    @app.post("/key/update", tags=["keys"])
    async def key_update(body: KeyUpdateRequest, who: Authenticated) -> dict[str, Any]:
        who.require_master()
        return await asyncio.to_thread(admin.update, body.model_dump(exclude_unset=True))

    @app.post("/key/delete", tags=["keys"])
    async def key_delete(body: KeyDeleteRequest, who: Authenticated) -> dict[str, Any]:
        who.require_master()
        return await asyncio.to_thread(admin.delete, body.keys)

    @app.get("/key/info", tags=["keys"])
    async def key_info(key: str, who: Authenticated) -> dict[str, Any]:
        who.require_master()
        return await asyncio.to_thread(admin.info, key)

    @app.get("/key/list", tags=["keys"])
    async def key_list(who: Authenticated, return_full_object: bool = False) -> dict[str, Any]:
        who.require_master()
        return await asyncio.to_thread(admin.list, return_full_object)

    # The alert share from the environment; the rollups and keys the gateway writes.
    spend_settings = replace(
        ReportSettings.from_env(),
        rollups_table=gateway.settings.rollups_table,
        keys_table=gateway.settings.keys_table,
    )

    @app.get("/spend/report")
    async def spend_report(
        who: Authenticated, start: str | None = None, end: str | None = None
    ) -> dict[str, Any]:
        """Cost and usage per day, model, key and agent from the daily rollups (master key).
        `start`/`end` are UTC dates, both included; yesterday by default."""
        who.require_master()
        report = await asyncio.to_thread(spend, start, end, spend_settings)
        return report.as_dict()

    return app


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or uuid.uuid4().hex


def after_response(request: Request) -> AfterResponse | None:
    """Takes work to run once the response is sent (RequestContext runs it)."""
    later: AfterResponse | None = getattr(request.state, "after_response", None)
    return later


def proxy_error_response(path: str, rid: str, error: ProxyError) -> JSONResponse:
    headers = {**error.headers, "x-request-id": rid}
    body = error.body()
    if path.endswith("/messages"):
        # Anthropic's error envelope: OpenAI's `error` object plus `"type": "error"`.
        body = {"type": "error", **body}
    return JSONResponse(body, status_code=error.status, headers=headers)


class RequestContext:
    """Every HTTP request: its id (API Gateway's, else a fresh one) in the request state, as
    the log correlation id and as `x-request-id` on the response; a body larger than the limit
    refused by its Content-Length; one access log line; then the work the route left for after
    the response (`after_response`), run even when the route failed.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the
    rest of the app in a task of its own and relays every response through a memory stream,
    which costs each request more than everything this does."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        event = scope.get("aws.event") or {}
        rid = (event.get("requestContext") or {}).get("requestId") or uuid.uuid4().hex
        later: list[Callable[[], object]] = []
        scope.setdefault("state", {}).update(request_id=rid, after_response=later.append)
        logger.set_correlation_id(rid)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = rid
            await send(message)

        limit = self.gateway.settings.max_body_bytes
        length = Headers(scope=scope).get("content-length", "")
        try:
            if length.isdigit() and int(length) > limit:
                error = ProxyError(
                    413,
                    f"Request body is larger than {limit} bytes.",
                    "invalid_request_error",
                    code="request_too_large",
                )
                await proxy_error_response(scope["path"], rid, error)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
            logger.info(
                "request",
                extra={"method": scope["method"], "path": scope["path"], "status": status},
            )
        finally:
            loop = asyncio.get_running_loop()
            for work in later:
                try:
                    await loop.run_in_executor(AFTER_RESPONSE_THREADS, work)
                except Exception:
                    logger.exception("work after the response failed")


def cache_headers(gateway: Gateway, result: Any) -> dict[str, str]:
    """Whether the answer came from the response cache, where the cache is on."""
    if not gateway.cache_settings.enabled:
        return {}
    hit = result.cache_hit if isinstance(result, ChatStream) else gateway.was_cache_hit(result)
    return {CACHE_HIT_HEADER: "true" if hit else "false"}


def event_stream(
    events: AsyncIterator[Any], headers: dict[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", **(headers or {})},
    )


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """Validation failures are 400 in OpenAI's shape here, never FastAPI's 422."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


gateway = Gateway.from_env(DEFAULT_CONFIG)
app = create_app(gateway)
snapstart.register(gateway, app)
# lifespan "off": Mangum would otherwise run startup/shutdown on every invocation.
handler = Mangum(app, lifespan="off")
