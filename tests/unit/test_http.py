"""http: the HTTP surface on the app itself. An error takes the envelope its route declares
(Anthropic's on the Messages API's routes, OpenAI's elsewhere), before routing (a body too
large) and past it (a path under `/v1/messages` that no route serves, or a method another route
serves there); routes answer under the names clients use."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from llm_proxy.config import ProxyConfig
from llm_proxy.gateway import Gateway
from llm_proxy.http.app import create_app
from llm_proxy.settings import ApiSettings

from tests.support.memory import MOCK_CONFIG

KEY = "sk-1234"
LIMIT = 2000


@pytest.fixture(scope="module")
def app() -> Any:
    config = ProxyConfig.model_validate({**MOCK_CONFIG, "general_settings": {"master_key": KEY}})
    settings = ApiSettings.of(environment="local", max_body_bytes=LIMIT)
    return create_app(Gateway(settings, config))


def call(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            sent = {"x-api-key": KEY, **(headers or {})}
            return await client.request(method, path, headers=sent, **kwargs)

    return asyncio.run(send())


def anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message", "code", "param"}
    return body["error"]


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    return body["error"]


def test_a_path_under_messages_it_does_not_serve_is_anthropics_404(app: Any) -> None:
    for path in ("/v1/messages/batches", "/v1/messages/batches/msgbatch_1/results"):
        response = call(app, "POST", path, json={})
        assert response.status_code == 404
        assert anthropic_error(response)["type"] == "not_found_error"


def test_a_method_another_route_serves_is_a_405_in_that_routes_envelope(app: Any) -> None:
    for path in ("/v1/messages/count_tokens", "/v1/messages"):
        response = call(app, "GET", path)
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert anthropic_error(response)["code"] == "method_not_allowed"
    chat = call(app, "GET", "/v1/chat/completions")
    assert chat.status_code == 405 and openai_error(chat)["code"] == "method_not_allowed"


def test_a_body_too_large_is_refused_in_the_envelope_of_the_route_it_was_for(app: Any) -> None:
    too_large = {"content": b"x" * (LIMIT + 1), "headers": {"content-type": "application/json"}}
    messages = call(app, "POST", "/v1/messages", **too_large)
    assert messages.status_code == 413
    assert anthropic_error(messages)["type"] == "request_too_large"
    chat = call(app, "POST", "/v1/chat/completions", **too_large)
    assert chat.status_code == 413 and openai_error(chat)["code"] == "request_too_large"


def test_paths_no_router_serves_are_openais_404(app: Any) -> None:
    response = call(app, "POST", "/v2/messages", json={})
    assert response.status_code == 404 and openai_error(response)["code"] == "not_found"


def test_the_messages_api_answers_and_refuses_in_its_own_shape(app: Any) -> None:
    sent = {"model": "demo", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    answered = call(app, "POST", "/v1/messages", json=sent)
    assert answered.status_code == 200 and answered.json()["type"] == "message"
    refused = call(app, "POST", "/v1/messages", json={**sent, "api_base": "http://x"})
    assert refused.status_code == 400
    assert anthropic_error(refused)["code"] == "unsupported_parameter"
    question = {"model": "demo", "messages": sent["messages"]}
    counted = call(app, "POST", "/v1/messages/count_tokens", json=question)
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0


def test_liveness_answers_under_the_litellm_proxys_names_too(app: Any) -> None:
    for path in ("/health", "/health/liveliness", "/health/liveness"):
        response = call(app, "GET", path)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_stored_responses_are_served_with_and_without_v1(app: Any) -> None:
    created = call(app, "POST", "/v1/responses", json={"model": "demo", "input": "hi"})
    assert created.status_code == 200
    # No responses table here: a stored response is not found, on either path, in one shape.
    for path in ("/v1/responses/resp_1", "/responses/resp_1"):
        missing = call(app, "GET", path)
        assert missing.status_code == 404
        assert openai_error(missing)["code"] == "response_not_found"
        assert call(app, "DELETE", path).status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"),
        ("temperature", 2.5),
        ("top_p", -0.1),
        ("top_logprobs", 21),
        ("truncation", "sometimes"),
        ("parallel_tool_calls", "yes please"),
        ("tools", {"type": "function"}),
        ("include", "reasoning.encrypted_content"),
    ],
)
def test_a_responses_request_is_typed_as_the_spec_types_it(
    app: Any, field: str, value: Any
) -> None:
    refused = call(
        app, "POST", "/v1/responses", json={"model": "demo", "input": "hi", field: value}
    )
    assert refused.status_code == 400
    error = openai_error(refused)
    assert (error["code"], error["param"]) == ("invalid_value", field)
