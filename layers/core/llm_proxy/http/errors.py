"""Every error as the client's API expects it: OpenAI's shape, or Anthropic's envelope on the
routes that declare it (the Messages API's, `AnthropicRoute`); FastAPI's and Starlette's own
errors included."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from llm_proxy.errors import (
    INTERNAL_ERROR,
    INVALID_JSON,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    DomainError,
    ProxyError,
    anthropic_body,
    framework_error,
    openai_body,
)
from llm_proxy.http.dependencies import key_refusal, request_id
from llm_proxy.http.schemas import validation_error
from llm_proxy.logs import logger

ErrorBody = Callable[[ProxyError], dict[str, Any]]


class AnthropicRoute(APIRoute):
    """A route whose errors take Anthropic's envelope (`"type": "error"` beside the error)."""

    error_body: ErrorBody = staticmethod(anthropic_body)


def error_body_for(scope: Scope) -> ErrorBody:
    """The envelope of the route serving the request: the one it matched, or, for an error
    raised before routing (a body too large), the one it will match."""
    route = scope.get("route")
    if route is None:
        route = next(
            (r for r in served_routes(scope) if r.matches(scope)[0] is not Match.NONE), None
        )
    body: ErrorBody = getattr(route, "error_body", openai_body)
    return body


def served_routes(scope: Scope) -> tuple[APIRoute, ...]:
    """The app's own routes, as its routers declare them (`app.create_app` keeps them)."""
    state = getattr(scope.get("app"), "state", None)
    routes: tuple[APIRoute, ...] = getattr(state, "served_routes", ())
    return routes


def proxy_error_response(scope: Scope, rid: str, error: ProxyError) -> JSONResponse:
    headers = {**error.headers, "x-request-id": rid}
    body = error_body_for(scope)(error)
    return JSONResponse(body, status_code=error.status, headers=headers)


# A path segment that may be a credential (LiteLLM puts keys in some paths, such as
# /key/{key}/regenerate): a key's prefix, or anything as long as a token but a response id.
CREDENTIAL_LIKE = re.compile(r"^(sk-|bearer)|^(?!resp_)[^/]{24,}$", re.IGNORECASE)


def shown_path(path: str) -> str:
    """A path as errors and logs show it: a segment that may be a credential is masked."""
    return "/".join(
        "{masked}" if CREDENTIAL_LIKE.search(part) else part for part in path.split("/")
    )


def route_error(status: int, method: str, path: str, headers: dict[str, str]) -> ProxyError:
    """Starlette's own errors (405: wrong method, else no route) in the gateway's words."""
    path = shown_path(path)
    if status == 405:
        return METHOD_NOT_ALLOWED(f"Method {method} is not allowed on {path}.", headers=headers)
    return NOT_FOUND(f"No route {method} {path}.", headers=headers)


def not_served(request: Request) -> ProxyError:
    """A path under a router's prefix that no route of it serves: 405 where another method is
    served there, else 404 (what Starlette answers, in the router's envelope)."""
    allowed = sorted(
        method
        for route in served_routes(request.scope)
        if route.endpoint is not request.scope.get("endpoint")
        and route.matches(request.scope)[0] is Match.PARTIAL
        for method in route.methods or ()
    )
    if allowed:
        headers = {"Allow": ", ".join(allowed)}
        return route_error(405, request.method, request.url.path, headers)
    return route_error(404, request.method, request.url.path, {})


def install_error_handlers(app: FastAPI) -> None:
    def error_response(request: Request, error: ProxyError) -> JSONResponse:
        return proxy_error_response(request.scope, request_id(request), error)

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return error_response(request, exc.as_proxy_error())

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = await key_refusal(request)
        return error_response(request, refused or validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 400:
            message = f"The request body cannot be read: {exc.detail}."
            error = await key_refusal(request) or INVALID_JSON(message, headers=headers)
        elif exc.status_code in (404, 405):
            error = route_error(exc.status_code, request.method, request.url.path, headers)
        else:
            error = framework_error(exc.status_code, str(exc.detail), headers)
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        message = "Internal gateway error; the request id identifies it in the logs."
        return error_response(request, INTERNAL_ERROR(message))
