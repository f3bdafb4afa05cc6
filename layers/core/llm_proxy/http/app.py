"""The FastAPI app: one router per resource, errors in the client API's shape, the request
middleware, and an OpenAPI schema without FastAPI's 422."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.routing import APIRoute

from llm_proxy.gateway import Gateway
from llm_proxy.http.errors import install_error_handlers
from llm_proxy.http.middleware import RequestContext
from llm_proxy.http.openapi import ERROR_RESPONSES, openapi_without_422
from llm_proxy.http.routes import (
    completions,
    health,
    keys,
    messages,
    model_info,
    models,
    responses,
    spend,
    teams,
)

if TYPE_CHECKING:
    from llm_proxy.lambda_extension import AfterResponseExtension

# The routes of each function: the api functions serve agents; key management (keys, teams,
# users) is a function of its own where deployed, the only one that may write the keys table.
API_ROUTES = (health, models, model_info, completions, messages, responses, spend)
KEY_ROUTES = (health, keys, teams)


def create_app(
    gateway: Gateway,
    resources: Sequence[ModuleType] | None = None,
    extension: AfterResponseExtension | None = None,
) -> FastAPI:
    """The app serving `resources` (routers); by default the api's, with key management
    where the settings say this process manages keys. In Lambda, `extension` runs each
    request's after-response work."""
    settings = gateway.settings
    if resources is None:
        resources = (*API_ROUTES, keys, teams) if settings.key_management else API_ROUTES
    app = FastAPI(
        title="LLM Proxy",
        version="0.1.0",
        openapi_url="/openapi.json" if settings.openapi else None,
        docs_url="/docs" if settings.openapi else None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.gateway = gateway
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    app.add_middleware(RequestContext, max_body_bytes=gateway.max_body_bytes, extension=extension)
    install_error_handlers(app)
    served = dict.fromkeys(resources)
    for resource in served:
        app.include_router(resource.router)
    # The routes as their routers declare them: which one a path falls to, before routing
    # (an error's envelope) or past it (a method another route serves).
    app.state.served_routes = tuple(
        route
        for resource in served
        for route in resource.router.routes
        if isinstance(route, APIRoute)
    )
    return app
