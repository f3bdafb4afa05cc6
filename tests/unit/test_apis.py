"""pipeline.apis: the table of APIs. Each row is whole (an API that streams has its reader and
encoder; one that calls no model answers by itself), and the facts each step reads from it."""

from __future__ import annotations

import pytest
from llm_proxy.pipeline import api_params
from llm_proxy.pipeline.apis import APIS, Api
from llm_proxy.pipeline.request_options import ROUTING_OPTIONS
from llm_proxy.pipeline.validate import allowed_params


@pytest.mark.parametrize("api", APIS.values(), ids=lambda api: api.name)
def test_every_row_is_whole(api: Api) -> None:
    assert APIS[api.name] is api
    assert (api.reader is None) == (api.encode is None), "a stream needs its reader and encoder"
    if api.router_call is None:
        assert api.reader is None and api.from_cache is None, "nothing called, nothing streamed"
    if api.router_call == "embedding":
        assert api.reader is None and api.from_cache is None
    assert "model" in api.params


def test_the_envelope_is_anthropics_on_the_messages_api_only() -> None:
    anthropic = {name for name, api in APIS.items() if api.envelope == "anthropic"}
    assert anthropic == {"messages", "count_tokens"}


def test_what_each_step_reads_from_the_table() -> None:
    assert {n for n, a in APIS.items() if a.from_cache is not None} == {"chat", "responses"}
    assert {n for n, a in APIS.items() if a.conversations} == {"responses", "input_tokens"}
    assert {n for n, a in APIS.items() if not a.generates} == {"embeddings"}
    assert {n for n, a in APIS.items() if a.translate is not None} == {"messages", "count_tokens"}
    assert {n for n, a in APIS.items() if a.cache_header} == {"chat", "messages", "responses"}


@pytest.mark.parametrize(
    ("name", "sdk", "gateway"),
    [
        ("chat", api_params.CHAT_COMPLETIONS, {"cache", "extra_body", *ROUTING_OPTIONS}),
        ("embeddings", api_params.EMBEDDINGS, {"extra_body", *ROUTING_OPTIONS}),
        ("messages", api_params.MESSAGES, {"temperature", "top_p", "top_k", *ROUTING_OPTIONS}),
        (
            "responses",
            api_params.RESPONSES,
            {"cache", "extra_body", "client_metadata", *ROUTING_OPTIONS},
        ),
        ("count_tokens", api_params.MESSAGES_COUNT_TOKENS, set()),
        ("input_tokens", api_params.RESPONSES_INPUT_TOKENS, set()),
    ],
)
def test_an_apis_parameters_are_its_sdks_and_the_gateways_own(
    name: str, sdk: frozenset[str], gateway: set[str]
) -> None:
    assert allowed_params(name) == sdk | gateway  # type: ignore[arg-type]
    assert allowed_params(name, ["top_k"]) == sdk | gateway | {"top_k"}  # type: ignore[arg-type]
