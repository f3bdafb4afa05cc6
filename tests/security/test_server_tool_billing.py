"""Provider-run tools are billed: Anthropic's web search costs $10 per 1,000 searches on top of
the tokens, OpenAI's $10 to $25. A model group enables such a tool in its config
(`model_info.server_tools`), and then each search the provider reports is priced and metered;
a request that offers one to a group that does not enable it is refused before any provider is
called.

A served gateway in front of the Anthropic double (which searches as Anthropic does, and
reports `usage.server_tool_use.web_search_requests`) and the OpenAI double (whose Responses API
lists a `web_search_call` output item per search); usage items and the key's spend are read
back from DynamoDB (moto)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.accounting.pricing import WEB_SEARCH_PRICE
from llm_proxy.config import ConfigError, ProxyConfig, load_config, secret_then_env
from llm_proxy.pipeline.apis import APIS
from llm_proxy.pipeline.model_router import build_router
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.server_tools import server_tool_reserve

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import serving
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

HAIKU = "anthropic/claude-3-haiku-20240307"
# The seed's price for claude-3-haiku, USD per token, and Anthropic's per web search.
INPUT_PRICE, OUTPUT_PRICE = 0.25e-6, 1.25e-6
SEARCH_PRICE = 0.01
SEARCHES = 50
WEB_SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search"}
QUESTION = [{"role": "user", "content": "What happened in the news today"}]
# An OpenAI deployment's prices, the operator's: USD per token, and per web search.
GPT_INPUT_PRICE, GPT_OUTPUT_PRICE = 2e-6, 8e-6
GPT_SEARCH_PRICE = 0.025
GPT_SEARCHES = 3


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh_anthropic(anthropic: AnthropicUpstream) -> None:
    anthropic.reset()


def catalogue(api_base: str) -> str:
    on_double = {"api_base": api_base, "api_key": "os.environ/ANTHROPIC_API_KEY"}
    search = {"server_tools": ["web_search"], "search_context_cost_per_query": SEARCH_PRICE}
    return gateway_config(
        deployment("claude-search", HAIKU, model_info=search, **on_double),
        deployment("claude-plain", HAIKU, **on_double),
        deployment("claude-search-falls-back", HAIKU, model_info=search, **on_double),
        openai_double(
            "gpt-search",
            "openai/gpt-4.1",
            model_info={"server_tools": ["web_search"], WEB_SEARCH_PRICE: GPT_SEARCH_PRICE},
            input_cost_per_token=GPT_INPUT_PRICE,
            output_cost_per_token=GPT_OUTPUT_PRICE,
        ),
        openai_double("gpt-plain", "openai/gpt-4.1"),
        router_settings={
            "num_retries": 0,
            "fallbacks": [{"claude-search-falls-back": ["claude-plain"]}],
        },
        general_settings=MASTER_KEY_FROM_SECRET,
    )


@pytest.fixture(scope="module")
def gateway(
    gateway_for: Callable[..., str], anthropic: AnthropicUpstream, upstream: OpenAIUpstream
) -> str:
    return gateway_for(catalogue(anthropic.base_url))


def post(gateway: str, path: str, body: dict[str, Any], key: str = MASTER_KEY) -> httpx.Response:
    return httpx.post(
        f"{gateway}{path}", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60
    )


def new_key(gateway: str) -> str:
    made = post(gateway, "/key/generate", {"max_budget": 100})
    assert made.status_code == 200, made.text
    return str(made.json()["key"])


def spend(gateway: str, key: str) -> float:
    info = httpx.get(
        f"{gateway}/key/info",
        params={"key": key},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    return float(info.json()["info"]["spend"])


# The same 50 searches asked for on each API and as JSON or a stream: the Messages API offers
# Anthropic's tool as sent, chat asks with OpenAI's `web_search_options`.
SEARCH_REQUESTS = {
    "messages": ("/v1/messages", {"max_tokens": 1024, "tools": [WEB_SEARCH_TOOL]}),
    "chat": ("/v1/chat/completions", {"max_tokens": 1024, "web_search_options": {}}),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("served", sorted(SEARCH_REQUESTS))
def test_each_web_search_is_priced_and_counted_against_the_key(
    gateway: str,
    anthropic: AnthropicUpstream,
    aws: dict[str, str],
    served: str,
    stream: bool,
) -> None:
    anthropic.web_searches = SEARCHES
    key = new_key(gateway)
    path, extra = SEARCH_REQUESTS[served]
    body = {"model": "claude-search", "messages": QUESTION, "stream": stream, **extra}
    answer = post(gateway, path, body, key)
    assert answer.status_code == 200, answer.text
    if not stream:  # the client is told the count, as the provider reports it
        assert answer.json()["usage"]["server_tool_use"] == {"web_search_requests": SEARCHES}

    (sent,) = anthropic.requests
    assert [tool["type"] for tool in sent.body["tools"]] == ["web_search_20250305"]
    assert sent.answer is not None
    usage = sent.answer["usage"]
    assert usage["server_tool_use"] == {"web_search_requests": SEARCHES}
    tokens = usage["input_tokens"] * INPUT_PRICE + usage["output_tokens"] * OUTPUT_PRICE
    expected = tokens + SEARCHES * SEARCH_PRICE

    item = usage_item(aws["UsageTable"], answer.headers["x-request-id"])
    assert item["web_search_requests"] == SEARCHES
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert float(item["cost_usd"]) == pytest.approx(expected)
    assert spend(gateway, key) == pytest.approx(expected)


def test_answers_without_searches_cost_tokens_only(
    gateway: str, anthropic: AnthropicUpstream, aws: dict[str, str]
) -> None:
    body = {"model": "claude-search", "max_tokens": 64, "messages": QUESTION}
    answer = post(gateway, "/v1/messages", body)
    assert answer.status_code == 200, answer.text
    item = usage_item(aws["UsageTable"], answer.headers["x-request-id"])
    assert item["web_search_requests"] == 0
    expected = (
        int(item["prompt_tokens"]) * INPUT_PRICE + int(item["completion_tokens"]) * OUTPUT_PRICE
    )
    assert float(item["cost_usd"]) == pytest.approx(expected)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("tool_type", ["web_search", "web_search_preview"])
def test_each_openai_web_search_call_is_priced_and_counted_against_the_key(
    gateway: str,
    upstream: OpenAIUpstream,
    aws: dict[str, str],
    tool_type: str,
    stream: bool,
) -> None:
    """OpenAI's Responses API lists each search as a `web_search_call` output item: each is
    one search at the deployment's price, on top of the tokens."""
    upstream.web_searches = GPT_SEARCHES
    key = new_key(gateway)
    body = {
        "model": "gpt-search",
        "input": "What happened in the news today",
        "tools": [{"type": tool_type}],
        "stream": stream,
    }
    answer = post(gateway, "/v1/responses", body, key)
    assert answer.status_code == 200, answer.text

    (sent,) = upstream.requests
    assert sent.path == "/v1/responses"
    assert sent.body["tools"] == [{"type": tool_type}]
    completed = streamed_response(answer.text) if stream else answer.json()
    searches = [item for item in completed["output"] if item["type"] == "web_search_call"]
    assert len(searches) == GPT_SEARCHES
    assert all(item["action"]["type"] == "search" for item in searches)
    assert completed["output"][-1]["type"] == "message"
    # The client gets OpenAI's usage: the count is in the output items, not in the usage.
    assert "server_tool_use" not in completed["usage"]

    item = usage_item(aws["UsageTable"], answer.headers["x-request-id"])
    assert item["web_search_requests"] == GPT_SEARCHES
    usage = completed["usage"]
    assert (item["prompt_tokens"], item["completion_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    tokens = usage["input_tokens"] * GPT_INPUT_PRICE + usage["output_tokens"] * GPT_OUTPUT_PRICE
    expected = tokens + GPT_SEARCHES * GPT_SEARCH_PRICE
    assert float(item["cost_usd"]) == pytest.approx(expected)
    assert spend(gateway, key) == pytest.approx(expected)


def streamed_response(text: str) -> dict[str, Any]:
    """The response a Responses API stream's `response.completed` event carries."""
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done")
    (completed,) = [event for event in events if event["type"] == "response.completed"]
    response: dict[str, Any] = completed["response"]
    return response


# A provider-run tool on a group that does not enable it (or a tool no group can enable), on
# each API: (path, body, the parameter the error names, the tool).
REFUSED = {
    "messages-web-search": (
        "/v1/messages",
        {"model": "claude-plain", "max_tokens": 64, "tools": [WEB_SEARCH_TOOL]},
        "tools[0]",
        "web_search",
    ),
    "messages-code-execution": (
        "/v1/messages",
        {
            "model": "claude-search",
            "max_tokens": 64,
            "tools": [
                {"name": "lookup", "input_schema": {"type": "object"}},
                {"type": "code_execution_20250825", "name": "code_execution"},
            ],
        },
        "tools[1]",
        "code_execution",
    ),
    "chat-web-search-options": (
        "/v1/chat/completions",
        {"model": "claude-plain", "web_search_options": {"search_context_size": "low"}},
        "web_search_options",
        "web_search",
    ),
    "chat-anthropic-tool": (
        "/v1/chat/completions",
        {"model": "claude-plain", "tools": [WEB_SEARCH_TOOL]},
        "tools[0]",
        "web_search",
    ),
    "chat-gemini-search-tool": (
        "/v1/chat/completions",
        {"model": "claude-plain", "tools": [{"googleSearch": {}}]},
        "tools[0]",
        "web_search",
    ),
    "responses-web-search": (
        "/v1/responses",
        {"model": "claude-plain", "tools": [{"type": "web_search"}]},
        "tools[0]",
        "web_search",
    ),
    "responses-web-search-where-enabled": (
        "/v1/responses",
        {"model": "claude-search", "tools": [{"type": "web_search_preview"}]},
        "tools[0]",
        "web_search",
    ),
    "responses-code-interpreter-in-namespace": (
        "/v1/responses",
        {
            "model": "claude-search",
            "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "code_interpreter"}]}],
        },
        "tools[0].tools[0]",
        "code_interpreter",
    ),
    "responses-openai-web-search": (
        "/v1/responses",
        {"model": "gpt-plain", "tools": [{"type": "web_search"}]},
        "tools[0]",
        "web_search",
    ),
    # OpenAI's chat answers do not count their searches: only its Responses API's do.
    "chat-openai-web-search-options": (
        "/v1/chat/completions",
        {"model": "gpt-search", "web_search_options": {}},
        "web_search_options",
        "web_search",
    ),
    "a-fallback-does-not-enable-it": (
        "/v1/messages",
        {"model": "claude-search-falls-back", "max_tokens": 64, "tools": [WEB_SEARCH_TOOL]},
        "tools[0]",
        "web_search",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_server_tool_the_group_does_not_enable_is_refused_before_any_provider_call(
    gateway: str,
    anthropic: AnthropicUpstream,
    upstream: OpenAIUpstream,
    aws: dict[str, str],
    case: str,
) -> None:
    path, fields, param, kind = REFUSED[case]
    conversation = {"input": "hi"} if path == "/v1/responses" else {"messages": QUESTION}
    answer = post(gateway, path, {**conversation, **fields})

    assert answer.status_code == 400, answer.text
    body = answer.json()
    error = body["error"]
    if path == "/v1/messages":
        assert body["type"] == "error"  # Anthropic's envelope
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "server_tool_not_enabled"
    assert error["param"] == param
    assert f"provider-run tool '{kind}'" in error["message"]
    assert "model_info.server_tools" in error["message"]
    if case == "a-fallback-does-not-enable-it":
        assert "for model 'claude-plain'" in error["message"]
    if kind == "web_search":  # what a Codex user can do about it
        assert 'Codex CLI: -c web_search="disabled"' in error["message"]
    assert anthropic.requests == []
    assert upstream.requests == []
    item = usage_item(aws["UsageTable"], answer.headers["x-request-id"])
    assert (item["status"], item["error_code"]) == (400, "server_tool_not_enabled")
    assert float(item["cost_usd"]) == 0


def test_client_tools_pass_whatever_api_they_come_on(
    gateway: str, anthropic: AnthropicUpstream
) -> None:
    """Tools the client runs are not the provider's: Anthropic's custom and versioned client
    tools, OpenAI's function tools."""
    tools = [
        {"name": "lookup", "input_schema": {"type": "object"}},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    body = {"model": "claude-plain", "max_tokens": 64, "messages": QUESTION, "tools": tools}
    assert post(gateway, "/v1/messages", body).status_code == 200
    function = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    body = {"model": "claude-plain", "messages": QUESTION, "tools": [function]}
    assert post(gateway, "/v1/chat/completions", body).status_code == 200
    assert len(anthropic.requests) == 2


@pytest.mark.parametrize(
    ("model_info", "reason"),
    [
        ({"server_tools": ["web_search"]}, "needs a price per use: set search_context_cost"),
        ({"server_tools": ["code_execution"]}, "'code_execution' cannot be enabled"),
        ({"server_tools": "web_search"}, "must be a list of tool names"),
    ],
)
def test_a_tool_the_gateway_cannot_price_cannot_be_enabled(
    tmp_path: Path, model_info: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(gateway_config(deployment("claude", HAIKU, model_info=model_info)))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert str(path) in message and "model_list[0] (model_name 'claude')" in message
    assert reason in message


def test_web_search_on_a_provider_that_reports_no_search_count_cannot_be_enabled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    info = {"server_tools": ["web_search"], "search_context_cost_per_query": 0.025}
    path.write_text(gateway_config(deployment("ds", "deepseek/deepseek-chat", model_info=info)))
    with pytest.raises(ConfigError, match="do not report how many searches ran"):
        load_config(path)


@pytest.mark.parametrize(
    ("model", "model_info"),
    [
        # litellm's cost map prices gpt-4.1's searches ($25 per 1,000 at every context size).
        ("openai/gpt-4.1", {}),
        ("azure/my-gpt-deployment", {"search_context_cost_per_query": 0.014}),
    ],
)
def test_web_search_can_be_enabled_on_openai_and_azure_where_a_search_is_priced(
    tmp_path: Path, model: str, model_info: dict[str, Any]
) -> None:
    path = tmp_path / "config.yaml"
    info = {"server_tools": ["web_search"], **model_info}
    path.write_text(gateway_config(deployment("gpt", model, model_info=info)))
    (loaded,) = load_config(path).model_list
    assert loaded.model_info["server_tools"] == ["web_search"]


def test_web_search_on_an_openai_model_with_no_known_search_price_cannot_be_enabled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    info = {"server_tools": ["web_search"]}  # litellm's cost map has no price for gpt-4o's
    path.write_text(gateway_config(deployment("gpt", "openai/gpt-4o", model_info=info)))
    with pytest.raises(ConfigError, match="needs a price per use"):
        load_config(path)


def test_the_catalogue_prices_searches_where_the_config_does_not() -> None:
    info = {"server_tools": ["web_search"]}
    sonnet = deployment("sonnet", "anthropic/claude-sonnet-4-5", model_info=info)
    config = ProxyConfig.model_validate({"model_list": [sonnet]})
    router = build_router(config, secret_then_env(PROVIDER_KEYS, {}), "http://127.0.0.1:9")
    tool = {**WEB_SEARCH_TOOL, "max_uses": 7}
    # litellm's cost map: $10 per 1,000 searches for claude-sonnet-4-5.
    assert reserve(router, "/v1/messages", {"tools": [tool]}) == pytest.approx(0.07)
    # No max_uses: no bound to reserve; chat's search_context_size is litellm's max_uses.
    assert reserve(router, "/v1/messages", {"tools": [WEB_SEARCH_TOOL]}) == 0
    options = {"web_search_options": {"search_context_size": "high"}}
    assert reserve(router, "/v1/chat/completions", options) == pytest.approx(0.10)


def reserve(router: Any, endpoint: str, fields: dict[str, Any]) -> float:
    api = APIS["messages" if endpoint == "/v1/messages" else "chat"]
    body = {"model": "sonnet", "messages": QUESTION, **fields}
    request = GatewayRequest(
        endpoint=endpoint,
        api=api,
        caller=Caller(key_id="master"),
        body=body,
        request_id="req-reserve",
        model="sonnet",
        agent=None,
    )
    return server_tool_reserve(request, router)
