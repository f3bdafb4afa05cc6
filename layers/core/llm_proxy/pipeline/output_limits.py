"""An answer's length, bounded by the model's output limit. Agent CLIs configured as their docs
show (OpenCode, Kilo Code, Cline) ask for 32000 tokens from models that answer at most 16384:
by default the request is served with the model's limit (what the reservation and the provider
get); an operator who would rather have such requests fail sets
`LLM_PROXY__OUTPUT_TOKENS_OVER_LIMIT=refuse`."""

from __future__ import annotations

from typing import Any, Literal

from llm_proxy.errors import MAX_TOKENS_TOO_LARGE
from llm_proxy.pipeline.request import GatewayRequest

OverLimit = Literal["cap", "refuse"]
# The parameters that bound an answer's length, and the bound where a model's own is unknown.
OUTPUT_TOKEN_PARAMS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MAX_OUTPUT_TOKENS = 1_000_000


def bound_output_tokens(request: GatewayRequest, model_limit: int | None, over: OverLimit) -> None:
    """Every output-token parameter the client sent within the model's limit: capped in the
    body the provider gets, or refused. Where the model's limit is unknown, no answer may be
    asked to be longer than any model's."""
    if model_limit is None:
        _refuse_over(request.as_sent, MAX_OUTPUT_TOKENS, "any model's")
    elif over == "refuse":
        _refuse_over(request.as_sent, model_limit, "the model's")
    else:
        for name in OUTPUT_TOKEN_PARAMS:
            if _number(request.body.get(name)) > model_limit:
                request.body[name] = model_limit


def _refuse_over(body: dict[str, Any], limit: int, whose: str) -> None:
    for name in OUTPUT_TOKEN_PARAMS:
        value = _number(body.get(name))
        if value > limit:
            raise MAX_TOKENS_TOO_LARGE(
                f"'{name}' is {value:.0f}, more than {whose} limit of {limit} tokens.",
                param=name,
            )


def _number(value: Any) -> float:
    """A number the client sent (types are the schema's to check), else 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return 0
