"""Every error as the client's API expects it: OpenAI's shape, with Anthropic's envelope on
`/v1/messages`; FastAPI's and Starlette's own errors included."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_proxy.errors import ProxyError
from llm_proxy.http.dependencies import request_id
from llm_proxy.http.schemas import validation_error
from llm_proxy.logs import logger
from llm_proxy.pipeline.messages import anthropic_error


def proxy_error_response(path: str, rid: str, error: ProxyError) -> JSONResponse:
    headers = {**error.headers, "x-request-id": rid}
    # Anthropic's envelope and error types on the Messages API, OpenAI's shape elsewhere.
    body = anthropic_error(error) if is_messages_path(path) else error.body()
    return JSONResponse(body, status_code=error.status, headers=headers)


def is_messages_path(path: str) -> bool:
    """`/v1/messages` and everything under it (`count_tokens`, routes it does not serve)."""
    unversioned = path.removeprefix("/v1")
    return unversioned == "/messages" or unversioned.startswith("/messages/")


def install_error_handlers(app: FastAPI) -> None:
    def error_response(request: Request, error: ProxyError) -> JSONResponse:
        return proxy_error_response(request.url.path, request_id(request), error)

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own errors (no route, wrong method, an unreadable body).
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
