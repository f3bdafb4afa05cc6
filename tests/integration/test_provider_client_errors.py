"""A provider's refusal of the request itself (400, 404, 413, 422) reaches the caller with the
provider's status and the provider's message, on every endpoint, JSON and streamed, and is
metered with that status; the provider's own failures (5xx, network) stay the gateway's 502
(tests/integration/test_fault_matrix.py), and so does its refusal of the gateway's own key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.configs import NO_RETRIES, gateway_config, openai_double
from tests.support.stack import MASTER_KEY, usage_item

# Path, body and the error's envelope, per endpoint.
ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    "responses": ("/v1/responses", {"input": "hi"}),
    "messages": (
        "/v1/messages",
        {"max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "embeddings": ("/v1/embeddings", {"input": "hi"}),
}
# The provider's status -> the code the client gets.
REFUSALS = {
    400: "bad_request",
    404: "provider_model_not_found",
    413: "provider_request_too_large",
    422: "unprocessable_request",
}


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    # Without cooldowns: litellm cools a deployment down after a 404, and the cases share it.
    return gateway_for(
        gateway_config(
            openai_double("gpt-4o"),
            openai_double("text-embedding-3-small"),
            router_settings={**NO_RETRIES, "disable_cooldowns": True},
        )
    )


def _cases() -> list[Any]:
    return [
        pytest.param(
            endpoint, stream, status, id=f"{endpoint}-{'stream' if stream else 'json'}-{status}"
        )
        for endpoint in ENDPOINTS
        for stream in (False, True)
        if not (stream and endpoint == "embeddings")
        for status in REFUSALS
    ]


@pytest.mark.parametrize(("endpoint", "stream", "status"), _cases())
def test_provider_refusal_keeps_its_status_and_message(
    gateway: str,
    upstream: OpenAIUpstream,
    aws: dict[str, str],
    endpoint: str,
    stream: bool,
    status: int,
) -> None:
    path, body = ENDPOINTS[endpoint]
    model = "text-embedding-3-small" if endpoint == "embeddings" else "gpt-4o"
    upstream.fail_next(Fault(status=status, message=f"the provider refuses: reason {status}"))

    reply = httpx.post(
        f"{gateway}{path}",
        json={"model": model, **body, **({"stream": True} if stream else {})},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )

    assert reply.status_code == status, reply.text
    if endpoint == "messages":
        envelope = reply.json()
        assert envelope["type"] == "error"
        error = envelope["error"]
    else:
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error"
    assert error["code"] == REFUSALS[status]
    # The provider's own words, without litellm's wrapping of them.
    assert error["message"] == f"Model '{model}': the provider refuses: reason {status}"
    item = usage_item(aws["UsageTable"], reply.headers["x-request-id"])
    assert item["status"] == status and item["error_code"] == REFUSALS[status]
