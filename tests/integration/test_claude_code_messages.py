"""What Claude Code and the anthropic SDK use of the Messages API beyond a plain message:
count_tokens, betas and tool definitions handed to Anthropic deployments as sent (and kept
from the others), `?beta=true`, `msg_` ids, the prompt's tokens in `message_start`,
Anthropic's error envelope everywhere under `/v1/messages`, and the models list in
Anthropic's shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream, count_input_tokens
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import serving
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS


def config_for(anthropic: str, openai: str) -> str:
    return gateway_config(
        deployment(
            "claude",
            "anthropic/claude-sonnet-4-5",
            api_base=anthropic,
            api_key="os.environ/ANTHROPIC_API_KEY",
            model_info={
                "anthropic_betas": {
                    "drop": ["dropped-beta-2025-01-01"],
                    "map": {"old-beta-2024-01-01": "context-management-2025-06-27"},
                }
            },
        ),
        deployment(
            "gpt",
            "openai/gpt-3.5-turbo",
            api_base=f"{openai}/v1",
            api_key="os.environ/OPENAI_API_KEY",
        ),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


BETAS = ",".join(
    [
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "dropped-beta-2025-01-01",
        "old-beta-2024-01-01",
    ]
)
TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        "defer_loading": True,
        "cache_control": {"type": "ephemeral"},
    }
]
MESSAGES = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def claude_double() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(scope="module")
def url(
    gateway_for: Callable[..., str], claude_double: AnthropicUpstream, upstream: OpenAIUpstream
) -> str:
    return gateway_for(config_for(claude_double.base_url, upstream.base_url))


@pytest.fixture
def client(url: str, claude_double: AnthropicUpstream) -> anthropic.Anthropic:
    claude_double.reset()
    return anthropic.Anthropic(
        base_url=url,
        api_key=MASTER_KEY,
        max_retries=0,
        default_headers={"anthropic-beta": BETAS},
    )


def test_betas_and_tools_reach_an_anthropic_deployment_as_sent(
    client: anthropic.Anthropic, claude_double: AnthropicUpstream
) -> None:
    message = client.messages.create(
        model="claude",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert message.id.startswith("msg_")
    sent = claude_double.requests[-1]
    # The operator's rules applied: one beta dropped, one renamed, the rest as sent.
    forwarded = set(sent.headers["anthropic-beta"].split(","))
    assert forwarded == {
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
    }
    assert sent.body["tools"] == TOOLS


def test_betas_are_kept_from_other_providers(
    client: anthropic.Anthropic, upstream: OpenAIUpstream
) -> None:
    upstream.reset()
    client.messages.create(model="gpt", max_tokens=64, messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    sent = upstream.requests[-1]
    assert "anthropic-beta" not in sent.headers
    assert sent.body["tools"][0]["type"] == "function"  # translated for OpenAI


def test_the_beta_client_and_streams_carry_msg_ids_and_the_prompts_tokens(
    client: anthropic.Anthropic, claude_double: AnthropicUpstream
) -> None:
    with client.beta.messages.stream(
        model="claude",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(event for event in events if event.type == "message_start")
    assert start.message.id.startswith("msg_") and start.message.id == final.id
    # The provider's own count, as Anthropic's message_start reported it to the gateway.
    sent = claude_double.requests[-1].body
    assert start.message.usage.input_tokens == count_input_tokens(sent) == 2
    assert final.usage.input_tokens == 2


def test_a_stream_from_another_provider_starts_with_the_gateways_count(
    client: anthropic.Anthropic,
) -> None:
    with client.messages.stream(
        model="gpt",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as stream:
        events = list(stream)
    start = next(event for event in events if event.type == "message_start")
    assert start.message.usage.input_tokens > 0


def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model="claude", messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    plain = client.messages.count_tokens(model="claude", messages=MESSAGES)  # type: ignore[arg-type]
    assert counted.input_tokens > plain.input_tokens > 0


@pytest.mark.parametrize(
    ("call", "status", "kind"),
    [
        (
            lambda c: c.messages.count_tokens(model="nope", messages=MESSAGES),
            404,
            "not_found_error",
        ),
        (
            lambda c: c.messages.create(
                model="claude", max_tokens=8, messages=MESSAGES, extra_body={"top_q": 1}
            ),
            400,
            "invalid_request_error",
        ),
    ],
)
def test_errors_under_messages_are_anthropics(
    client: anthropic.Anthropic, call: Callable[[Any], Any], status: int, kind: str
) -> None:
    with pytest.raises(anthropic.APIStatusError) as failed:
        call(client)
    assert failed.value.status_code == status
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert failed.value.body["error"]["type"] == kind  # type: ignore[index]


def test_unknown_routes_under_messages_are_anthropic_errors(url: str) -> None:
    response = httpx.post(f"{url}/v1/messages/batches", json={}, headers={"x-api-key": MASTER_KEY})
    assert response.status_code in (404, 405)
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "not_found_error" or response.status_code == 405
    denied = httpx.post(f"{url}/v1/messages", json={}, headers={"x-api-key": "sk-wrong-key"})
    assert denied.json()["error"]["type"] == "authentication_error"


def test_models_in_anthropics_shape(client: anthropic.Anthropic, url: str) -> None:
    page = client.models.list()
    assert {model.id for model in page.data} >= {"claude", "gpt"}
    assert all(model.type == "model" for model in page.data)
    openai_shaped = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert openai_shaped.json()["object"] == "list"
