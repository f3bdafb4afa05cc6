"""pipeline.admit: a key's rpm, tpm and budget are reserved at the request's worst case before
the provider is called; a request whose worst case can never fit is refused outright."""

from __future__ import annotations

from typing import Any

import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.errors import DomainError, ProxyError
from llm_proxy.pipeline.admit import DEFAULT_OUTPUT_RESERVE, admit, estimate, needs_counters
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.store.counters import CountersTable

from tests.support.memory import INPUT_PRICE, MOCK_CONFIG, OUTPUT_PRICE, MemoryCounters, mock_router
from tests.support.records import virtual_key

LONGEST_ANSWER = 1000
CONFIG: dict[str, Any] = {
    **MOCK_CONFIG,
    "model_list": [
        {
            **MOCK_CONFIG["model_list"][0],
            "model_info": {"max_output_tokens": LONGEST_ANSWER},
        },
        # The same group, dearer: the reservation takes the dearest price.
        {
            "model_name": "demo",
            "litellm_params": {
                "model": "openai/demo-dear",
                "mock_response": "x",
                "api_key": "n",
                "input_cost_per_token": INPUT_PRICE * 2,
                "output_cost_per_token": OUTPUT_PRICE * 2,
            },
            "model_info": {"max_output_tokens": LONGEST_ANSWER},
        },
    ],
}
PROMPT = [{"role": "user", "content": "a question of some length " * 10}]


@pytest.fixture(scope="module")
def router() -> ModelRouter:
    return mock_router(CONFIG)


def request(body: dict[str, Any], caller: Caller, api: ApiName = "chat") -> GatewayRequest:
    return GatewayRequest(
        endpoint="/v1/chat/completions",
        api=APIS[api],
        caller=caller,
        body={"model": "demo", **body},
        request_id="rid",
        model="demo",
        agent=None,
    )


def limited(**limits: Any) -> Caller:
    return Caller("k", key=virtual_key("k", **limits))


def test_the_worst_case_is_n_answers_of_the_longest_at_the_dearest_price(
    router: ModelRouter,
) -> None:
    tokens, cost = estimate(request({"messages": PROMPT, "max_tokens": 50}, limited()), router)
    prompt = tokens - 50
    assert prompt > 10
    assert cost == pytest.approx(prompt * INPUT_PRICE * 2 + 50 * OUTPUT_PRICE * 2)
    twice, _ = estimate(request({"messages": PROMPT, "max_tokens": 50, "n": 2}, limited()), router)
    assert twice == 2 * tokens


def test_without_max_tokens_the_models_longest_answer_is_reserved(router: ModelRouter) -> None:
    tokens, _ = estimate(request({"messages": PROMPT}, limited()), router)
    assert tokens > LONGEST_ANSWER
    answer, _ = estimate(request({"input": "hi"}, limited(), "responses"), router)
    assert answer > LONGEST_ANSWER
    assert not APIS["embeddings"].generates
    vectors, _ = estimate(request({"input": "hello world"}, limited(), "embeddings"), router)
    assert vectors == 2  # the tokenizer's count, nothing for an answer
    tokens_in, _ = estimate(request({"input": [[1, 2, 3], [4]]}, limited(), "embeddings"), router)
    assert tokens_in == 4


def test_instructions_and_tool_definitions_are_reserved_as_input(router: ModelRouter) -> None:
    bare, _ = estimate(request({"messages": PROMPT, "max_tokens": 1}, limited()), router)
    tool = {"type": "function", "function": {"name": "f", "description": "word " * 2000}}
    with_tools, _ = estimate(
        request({"messages": PROMPT, "max_tokens": 1, "tools": [tool]}, limited()), router
    )
    assert with_tools > bare + 1900
    plain, _ = estimate(
        request({"input": "hi", "max_output_tokens": 16}, limited(), "responses"), router
    )
    instructed, _ = estimate(
        request(
            {"input": "hi", "max_output_tokens": 16, "instructions": "word " * 2000},
            limited(),
            "responses",
        ),
        router,
    )
    assert instructed > plain + 1900
    assert DEFAULT_OUTPUT_RESERVE == 4096  # where the model's own limit is unknown


def test_a_key_without_limits_takes_no_counters(router: ModelRouter) -> None:
    counters = MemoryCounters()
    free = request({"messages": PROMPT}, Caller("master"))
    assert not needs_counters(free)
    admission, _ = admit(counters, free, router, cache_hit=False)
    assert counters.admitted == [] and not admission.holds_counters


def test_a_budget_is_reserved_at_the_estimate_and_a_cache_hit_reserves_nothing(
    router: ModelRouter,
) -> None:
    counters, caller = MemoryCounters(), limited(max_budget=1.0)
    body = {"messages": PROMPT, "max_tokens": 50}
    admission, _ = admit(counters, request(body, caller), router, cache_hit=False)
    tokens, cost = estimate(request(body, caller), router)
    assert counters.admitted == [("k", tokens, pytest.approx(cost))]
    assert admission.holds_counters
    admit(counters, request(body, caller), router, cache_hit=True)
    assert counters.admitted[-1] == ("k", 0, 0.0)


@pytest.mark.parametrize(
    ("limits", "body"),
    [
        ({"tpm_limit": 100}, {"max_tokens": 500}),
        ({"max_budget": 0.0001}, {"max_tokens": 500}),
    ],
)
def test_a_request_that_can_never_fit_is_refused_outright(
    router: ModelRouter, limits: dict[str, Any], body: dict[str, Any]
) -> None:
    counters = MemoryCounters()
    with pytest.raises(ProxyError) as refused:
        admit(counters, request({"messages": PROMPT, **body}, limited(**limits)), router, False)
    assert (refused.value.status, refused.value.code) == (400, "request_exceeds_limit")
    assert counters.admitted == []


@pytest.mark.parametrize(("max_budget", "spent"), [(0.0001, 0.0001), (0.0, 0.0), (0.0001, 0.5)])
def test_a_spent_budget_is_budget_exceeded_whatever_the_request_costs(
    router: ModelRouter, max_budget: float, spent: float
) -> None:
    counters, caller = MemoryCounters(), limited(max_budget=max_budget)
    counters.spent["k"] = spent
    with pytest.raises(ProxyError) as refused:
        admit(counters, request({"messages": PROMPT, "max_tokens": 500}, caller), router, False)
    assert (refused.value.status, refused.value.code) == (429, "budget_exceeded")
    assert f"Current cost: {spent}, Max budget: {max_budget}" in refused.value.message
    assert counters.admitted == []


def test_a_key_with_limits_needs_the_counters_table(router: ModelRouter) -> None:
    caller = limited(tpm_limit=100)
    with pytest.raises(DomainError) as missing:
        admit(CountersTable(None), request({"messages": PROMPT}, caller), router, False)
    assert missing.value.as_proxy_error().code == "counters_table_missing"
