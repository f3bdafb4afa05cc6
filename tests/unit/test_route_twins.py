"""http.app: every route of a public API is served with and without `/v1`, as the LiteLLM proxy
serves them (clients are configured with either base URL: `http://host` or `http://host/v1`).
The routes that exist in one form only are listed here, each with its reason."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from llm_proxy.config import ProxyConfig
from llm_proxy.gateway import Gateway
from llm_proxy.http.app import create_app
from llm_proxy.settings import ApiSettings

from tests.support.memory import MOCK_CONFIG

# (method, path) served in one form only, and why.
ONE_FORM = {
    # Operations, not a provider's API: the LiteLLM proxy serves them without /v1 only.
    ("GET", "/health"): "liveness, as the LiteLLM proxy names it",
    ("GET", "/health/liveliness"): "the LiteLLM proxy's spelling",
    ("GET", "/health/liveness"): "the LiteLLM proxy's other spelling",
    ("GET", "/health/readiness"): "readiness, as the LiteLLM proxy names it",
    # LiteLLM's key management, which it serves without /v1 only.
    ("POST", "/key/generate"): "LiteLLM's key management",
    ("POST", "/key/update"): "LiteLLM's key management",
    ("POST", "/key/delete"): "LiteLLM's key management",
    ("GET", "/key/info"): "LiteLLM's key management",
    ("GET", "/key/list"): "LiteLLM's key management",
    ("POST", "/key/regenerate"): "LiteLLM's key management",
    ("POST", "/key/{key}/regenerate"): "LiteLLM's key management",
    # LiteLLM's team and user management, also without /v1 only.
    **{
        (method, f"/{kind}/{action}"): "LiteLLM's team and user management"
        for kind in ("team", "user")
        for method, action in (
            ("POST", "new"),
            ("GET", "info"),
            ("GET", "list"),
            ("POST", "update"),
            ("POST", "delete"),
        )
    },
    # The gateway's own report, beside LiteLLM's spend routes (which have no /v1 either).
    ("GET", "/spend/report"): "the gateway's own operations route",
    # The Azure OpenAI SDK's paths, which carry their own prefix (`/openai`).
    ("POST", "/openai/deployments/{deployment}/chat/completions"): "the Azure OpenAI SDK's path",
    ("POST", "/openai/deployments/{deployment}/embeddings"): "the Azure OpenAI SDK's path",
}


def leaves(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's routes, through the routers it includes."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from leaves(included.routes)
        else:
            yield route


def served(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app's routers declare; a websocket as `WS`."""
    found = set()
    for route in leaves(app.routes):
        if isinstance(route, APIRoute):
            found |= {(method, route.path) for method in route.methods}
        elif isinstance(route, APIWebSocketRoute):
            found.add(("WS", route.path))
    return found


def twin(path: str) -> str:
    return path.removeprefix("/v1") if path.startswith("/v1/") else f"/v1{path}"


@pytest.fixture(scope="module")
def routes() -> set[tuple[str, str]]:
    config = ProxyConfig.model_validate(MOCK_CONFIG)
    settings = ApiSettings.of(environment="local", key_management=True)
    return served(create_app(Gateway(settings, config)))


def test_every_public_api_route_has_its_twin(routes: set[tuple[str, str]]) -> None:
    missing = sorted(
        f"{method} {twin(path)} (twin of {path})"
        for method, path in routes
        if (method, path) not in ONE_FORM and (method, twin(path)) not in routes
    )
    assert missing == []


def test_the_routes_served_in_one_form_are_served(routes: set[tuple[str, str]]) -> None:
    """The list above stays true: each of its routes is served, and in one form only."""
    assert set(ONE_FORM) <= routes
    assert {(method, twin(path)) for method, path in ONE_FORM} & routes == set()


def test_the_responses_apis_routes_are_all_served(routes: set[tuple[str, str]]) -> None:
    for method, path in (
        ("POST", "/responses"),
        ("GET", "/responses/{response_id}"),
        ("DELETE", "/responses/{response_id}"),
        ("POST", "/responses/{response_id}/cancel"),
        ("GET", "/responses/{response_id}/input_items"),
        ("POST", "/responses/input_tokens"),
        ("WS", "/responses"),
    ):
        assert {(method, path), (method, f"/v1{path}")} <= routes
