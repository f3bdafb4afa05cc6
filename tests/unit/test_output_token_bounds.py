"""pipeline.output_limits: an answer's length within the model's output limit, capped in the
body the provider gets (or refused, as the operator chooses); where the limit is unknown, no
answer may be longer than any model's."""

from __future__ import annotations

from typing import Any

import pytest
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.apis import APIS
from llm_proxy.pipeline.output_limits import MAX_OUTPUT_TOKENS, bound_output_tokens
from llm_proxy.pipeline.request import GatewayRequest

from tests.support.memory import MASTER


def request(body: dict[str, Any], sent: dict[str, Any] | None = None) -> GatewayRequest:
    api = APIS["messages" if sent is not None else "chat"]
    return GatewayRequest("/v1/x", api, MASTER, body, "rid", "demo", None, sent=sent)


def test_cap_lowers_each_parameter_over_the_limit_and_leaves_the_rest() -> None:
    capped = request({"max_tokens": 500, "max_completion_tokens": 50, "temperature": 1})
    bound_output_tokens(capped, 100, "cap")
    assert capped.body == {"max_tokens": 100, "max_completion_tokens": 50, "temperature": 1}


def test_a_translated_request_is_capped_in_the_providers_body() -> None:
    sent = {"max_tokens": 500, "messages": []}
    translated = request({"max_tokens": 500, "messages": []}, sent=sent)
    bound_output_tokens(translated, 100, "cap")
    assert translated.body["max_tokens"] == 100
    assert sent["max_tokens"] == 500  # what the client sent is kept as sent


@pytest.mark.parametrize(
    ("limit", "over", "value", "message"),
    [
        (100, "refuse", 101, "'max_tokens' is 101, more than the model's limit of 100 tokens."),
        (
            None,
            "cap",
            MAX_OUTPUT_TOKENS + 1,
            f"'max_tokens' is {MAX_OUTPUT_TOKENS + 1}, more than any model's limit of "
            f"{MAX_OUTPUT_TOKENS} tokens.",
        ),
    ],
)
def test_refused_where_the_operator_says_or_no_limit_is_known(
    limit: int | None, over: Any, value: int, message: str
) -> None:
    with pytest.raises(ProxyError) as refused:
        bound_output_tokens(request({"max_tokens": value}), limit, over)
    error = refused.value
    assert (error.status, error.code, error.param, error.message) == (
        400,
        "max_tokens_too_large",
        "max_tokens",
        message,
    )


def test_values_that_are_not_numbers_are_left_to_the_schema() -> None:
    odd = request({"max_tokens": "many", "max_output_tokens": True})
    bound_output_tokens(odd, 10, "cap")
    assert odd.body == {"max_tokens": "many", "max_output_tokens": True}
