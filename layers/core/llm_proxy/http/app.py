"""The FastAPI app: one router per resource, errors in the client API's shape, the request
middleware, and an OpenAPI schema without FastAPI's 422."""

from __future__ import annotations

from fastapi import FastAPI

from llm_proxy.gateway import Gateway
from llm_proxy.http.errors import install_error_handlers
from llm_proxy.http.middleware import RequestContext
from llm_proxy.http.openapi import ERROR_RESPONSES, openapi_without_422
from llm_proxy.http.routes import completions, health, keys, messages, models, spend


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="LLM Proxy",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.gateway = gateway
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    app.add_middleware(RequestContext, max_body_bytes=gateway.max_body_bytes)
    install_error_handlers(app)
    for resource in (health, models, completions, messages, keys, spend):
        app.include_router(resource.router)
    return app
