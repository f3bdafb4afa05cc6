"""Schemathesis over the gateway's own OpenAPI schema, served by uvicorn with healthy upstreams
only (the OpenAI-format double and litellm's mock_response), so no 5xx is ever legitimate here.

Two property tests: any generated request (positive and negative, any model name) and requests
for the served models (which reach the upstream); they leave out only shapes that crash the
upstream double itself. Each gateway bug the fuzzing found is pinned below by a test that
reproduces its input with httpx."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, deployment, gateway_config
from tests.support.stack import MASTER_KEY

CHAT_MODELS = ("gpt-3.5-turbo", "demo")
# `demo` is a chat mock: its canned text is no embedding vector (see the xfail below).
EMBEDDING_MODELS = ("gpt-3.5-turbo",)
SERVED_MODELS = {
    "/v1/chat/completions": CHAT_MODELS,
    "/v1/messages": CHAT_MODELS,
    "/v1/embeddings": EMBEDDING_MODELS,
}
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
SCHEMA_CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Derandomized and without the example database, so every run sends the same requests.
FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def healthy_config(base: str) -> str:
    """Only healthy deployments: the fixture catalogue's "wrong-key" and "keyless" fail on
    purpose."""
    return gateway_config(
        deployment(
            "gpt-3.5-turbo",
            "openai/gpt-3.5-turbo",
            api_base=f"{base}/v1",
            api_key="os.environ/OPENAI_API_KEY",
        ),
        deployment("demo", "openai/demo", mock_response="A mock reply."),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


@pytest.fixture(scope="module")
def fuzz_url(gateway_for: Callable[..., str], upstream: OpenAIUpstream) -> str:
    return gateway_for(healthy_config(upstream.base_url))


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_url: str) -> BaseSchema:
    # An explicit config: no schemathesis.toml lookup, so the run is the same everywhere.
    return schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", config=schemathesis.Config())


@pytest.fixture(scope="module")
def any_request(fuzz_schema: BaseSchema) -> st.SearchStrategy[Case[Any]]:
    return st.one_of(
        fuzz_schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
        fuzz_schema.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )


@pytest.fixture(scope="module")
def served_request(fuzz_schema: BaseSchema) -> st.SearchStrategy[Case[Any]]:
    operations = [
        result.ok()
        for result in fuzz_schema.get_all_operations()
        if isinstance(result, Ok) and result.ok().path in SERVED_MODELS
    ]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/embeddings"}
    return st.one_of([op.as_strategy(generation_mode=GenerationMode.POSITIVE) for op in operations])


@settings(FUZZ_SETTINGS, max_examples=300)
@given(data=st.data())
def test_no_generated_request_gets_a_server_error(
    data: st.DataObject, fuzz_url: str, any_request: st.SearchStrategy[Case[Any]]
) -> None:
    case = data.draw(any_request)
    response = case.call(base_url=fuzz_url, headers=AUTH, timeout=30)
    check_answer(case, response)
    assert response.status_code < 500, describe(case, response)


@settings(FUZZ_SETTINGS, max_examples=200)
@given(data=st.data())
def test_requests_for_served_models_are_answered(
    data: st.DataObject, fuzz_url: str, served_request: st.SearchStrategy[Case[Any]]
) -> None:
    case = data.draw(served_request)
    assert isinstance(case.body, dict)
    body: dict[str, Any] = case.body
    body["model"] = data.draw(st.sampled_from(SERVED_MODELS[case.path]), label="model")
    if case.path == "/v1/chat/completions":
        body["messages"] = [countable_message(message) for message in body["messages"]]
    # Half the bodies keep the schema's free-form parts; the other half are tidied into what
    # a provider accepts, so the success path and streams are exercised as often.
    if data.draw(st.booleans(), label="tidy"):
        tidy(case.path, body, stream=data.draw(st.booleans(), label="stream"))
    response = case.call(base_url=fuzz_url, headers=AUTH, timeout=30)
    check_answer(case, response)
    if response.status_code == 400:
        # The schema is looser than the providers' (free-form messages and tool_choice, any
        # dimensions): litellm's validation refuses those, honestly, as the client's error.
        assert response.json()["error"]["type"] == "invalid_request_error", describe(case, response)
        return
    assert response.status_code == 200, describe(case, response)
    if not body.get("stream"):
        check_result(case, response)


def test_every_keyed_operation_refuses_a_missing_key(
    fuzz_url: str, fuzz_schema: BaseSchema
) -> None:
    # The schema declares no security scheme (an xfail below), so schemathesis cannot check this.
    keyed = [
        result.ok()
        for result in fuzz_schema.get_all_operations()
        if isinstance(result, Ok) and result.ok().path.startswith("/v1/")
    ]
    assert keyed
    for operation in keyed:
        body: dict[str, Any] | None = {} if operation.method.upper() == "POST" else None
        response = httpx.request(
            operation.method.upper(), f"{fuzz_url}{operation.path}", json=body, timeout=30
        )
        assert response.status_code == 401, (operation.label, response.text)
        assert response.headers.get("x-request-id"), operation.label
        assert response.json()["error"]["code"] == "invalid_api_key", operation.label


def countable_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message the upstream double can count: non-string `text` parts crash its
    tokenizer (an unhealthy upstream, which OpenAI itself would answer with 400)."""
    message = dict(message)
    if isinstance(message.get("content"), list):
        message["content"] = [
            {"type": "text", "text": str(part.get("text") or "")} for part in message["content"]
        ]
    return message


def tidy(path: str, body: dict[str, Any], *, stream: bool) -> None:
    if path == "/v1/embeddings":
        # litellm refuses `dimensions` for this deployment's model name.
        body.pop("dimensions", None)
        return
    body["stream"] = stream
    body.pop("tool_choice", None)
    if path == "/v1/messages":
        body.pop("tools", None)
        if not isinstance(body.get("system"), str):
            body.pop("system", None)
        body["messages"] = [
            {
                "role": ("user", "assistant")[index % 2],
                "content": message["content"] if isinstance(message.get("content"), str) else "",
            }
            for index, message in enumerate(body["messages"])
        ]


def check_result(case: Case[Any], response: Response) -> None:
    result = response.json()
    if case.path == "/v1/chat/completions":
        assert result["object"] == "chat.completion", describe(case, response)
        assert isinstance(result["choices"][0]["message"]["content"], str), describe(case, response)
    elif case.path == "/v1/embeddings":
        vectors = [item["embedding"] for item in result["data"]]
        assert all(isinstance(v, list) for v in vectors), describe(case, response)
    elif case.path == "/v1/messages":
        assert result["type"] == "message", describe(case, response)
        assert result["content"][0]["type"] == "text", describe(case, response)


def check_answer(case: Case[Any], response: Response) -> None:
    """Schemathesis's conformance checks, plus the gateway's own contract: every response has
    an x-request-id, every error is OpenAI-shaped, and a stream ends cleanly."""
    assert response.headers.get("x-request-id"), describe(case, response)
    content_type = (response.headers.get("content-type") or [""])[0]
    streamed = content_type.startswith("text/event-stream")
    checks = SCHEMA_CHECKS
    if streamed:
        # The schema documents JSON only for 200; a stream is checked event by event instead.
        assert isinstance(case.body, dict), describe(case, response)
        assert case.body.get("stream") is True, describe(case, response)
        assert response.status_code == 200, describe(case, response)
        check_stream(case, response)
        checks = [check for check in SCHEMA_CHECKS if check is not content_type_conformance]
    case.validate_response(response, checks=checks, headers=AUTH)
    if response.status_code >= 400:
        error = response.json().get("error")
        assert isinstance(error, dict), describe(case, response)
        assert set(error) >= {"message", "type", "param", "code"}, describe(case, response)
        assert isinstance(error["message"], str) and error["message"], describe(case, response)


def check_stream(case: Case[Any], response: Response) -> None:
    text = response.text
    assert not response.stream_cut_short, describe(case, response)
    if case.path == "/v1/messages":
        assert "event: error" not in text, describe(case, response)
        assert "event: message_stop" in text, describe(case, response)
        return
    frames = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data:")]
    assert frames and frames[-1] == "[DONE]", describe(case, response)
    for frame in frames[:-1]:
        assert "error" not in json.loads(frame), describe(case, response)


def describe(case: Case[Any], response: Response) -> str:
    return (
        f"{case.method} {case.path} body={json.dumps(case.body, default=str)[:2000]}\n"
        f"-> {response.status_code} {response.text[:2000]}"
    )


# -- Findings: each a gateway bug, reproduced directly; no provider is called in any of them --


def post(url: str, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=AUTH, timeout=30, **kwargs)


def assert_client_error(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json().get("error")
    assert isinstance(error, dict), response.text
    assert set(error) >= {"message", "type", "param", "code"}, response.text


def test_developer_message_without_content_is_a_client_error(fuzz_url: str) -> None:
    response = post(
        fuzz_url,
        "/v1/chat/completions",
        {"model": "gpt-3.5-turbo", "messages": [{"role": "developer"}]},
    )
    assert_client_error(response)


def test_untyped_user_content_part_is_a_client_error(fuzz_url: str) -> None:
    response = post(
        fuzz_url,
        "/v1/chat/completions",
        {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": [{"x": 1}]}]},
    )
    assert_client_error(response)


def test_unencodable_text_is_a_client_error(fuzz_url: str) -> None:
    body = b'{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"\\ud800"}]}'
    response = httpx.post(
        f"{fuzz_url}/v1/chat/completions",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
        timeout=30,
    )
    assert_client_error(response)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"mock_testing_fallbacks": True}, id="mock_testing_fallbacks-502"),
        pytest.param({"mock_timeout": True, "timeout": 0.2}, id="mock_timeout-504"),
        pytest.param({"specific_deployment": True}, id="specific_deployment-429"),
        pytest.param({"client": "x"}, id="client-502"),
        pytest.param({"timeout": "abc"}, id="timeout-502"),
        pytest.param({"request_timeout": "abc"}, id="request_timeout-502"),
        pytest.param({"response_format": "x"}, id="response_format-502"),
        pytest.param({"extra_body": "x"}, id="extra_body-502"),
    ],
)
def test_litellm_call_options_in_the_body_are_refused(fuzz_url: str, extra: dict[str, Any]) -> None:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = post(fuzz_url, "/v1/chat/completions", body)
    assert_client_error(response)


def test_body_that_is_not_utf8_gets_an_openai_error(fuzz_url: str) -> None:
    response = httpx.post(
        f"{fuzz_url}/v1/chat/completions",
        content=b'{"model": "\xff"}',
        headers={**AUTH, "content-type": "application/json"},
        timeout=30,
    )
    assert response.headers.get("x-request-id")
    assert_client_error(response)


def test_embeddings_from_a_chat_mock_are_vectors_or_refused(fuzz_url: str) -> None:
    response = post(fuzz_url, "/v1/embeddings", {"model": "demo", "input": "hi"})
    if response.status_code == 200:
        embedding = response.json()["data"][0]["embedding"]
        assert isinstance(embedding, list), response.text
    else:
        assert_client_error(response)


def test_method_not_allowed_names_the_allowed_methods(fuzz_url: str) -> None:
    response = httpx.patch(f"{fuzz_url}/v1/chat/completions", headers=AUTH)
    assert response.status_code == 405
    assert response.headers.get("allow") == "POST"


def test_schema_documents_streams(fuzz_url: str) -> None:
    schema = httpx.get(f"{fuzz_url}/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/messages"):
        content = schema["paths"][path]["post"]["responses"]["200"]["content"]
        assert "text/event-stream" in content, path


def test_schema_documents_authentication(fuzz_url: str) -> None:
    schema = httpx.get(f"{fuzz_url}/openapi.json").json()
    assert schema.get("components", {}).get("securitySchemes")
    assert schema["paths"]["/v1/models"]["get"].get("security")


def test_schema_forbids_empty_embedding_input(fuzz_url: str) -> None:
    schema = httpx.get(f"{fuzz_url}/openapi.json").json()
    request = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]
    ref = request["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    branches = schema["components"]["schemas"][ref]["properties"]["input"]["anyOf"]
    arrays = [branch for branch in branches if branch.get("type") == "array"]
    assert arrays and all(branch.get("minItems") == 1 for branch in arrays), branches
