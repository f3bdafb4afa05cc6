"""pipeline.validate: a caller chooses a model its key may use and the parameters its API
defines, nothing else, and everything it controls is bounded."""

from __future__ import annotations

from typing import Any

import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.litellm_hooks import Permission
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.validate import (
    permitted_groups,
    validate_model,
    validate_request,
)

from tests.support.memory import MASTER, MOCK_CONFIG, QUESTION, mock_router
from tests.support.records import virtual_key

SERVED = ["demo", "other", "coder"]
CONFIG: dict[str, Any] = {
    **MOCK_CONFIG,
    "model_list": [
        *MOCK_CONFIG["model_list"],
        {
            "model_name": "tuned",
            "litellm_params": {"model": "openai/tuned", "mock_response": "t", "api_key": "n"},
            "model_info": {"allowed_params": ["top_k"], "max_output_tokens": 100},
        },
    ],
}


@pytest.fixture(scope="module")
def router() -> ModelRouter:
    return mock_router(CONFIG)


def request(
    body: dict[str, Any],
    api: ApiName = "chat",
    caller: Caller = MASTER,
    sent: dict[str, Any] | None = None,
) -> GatewayRequest:
    return GatewayRequest(
        endpoint="/v1/chat/completions",
        api=APIS[api],
        caller=caller,
        body=body,
        request_id="rid",
        model=str(body.get("model") or ""),
        agent=None,
        sent=sent,
    )


def refused(check: Any, *args: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        check(*args)
    return caught.value


def test_a_key_learns_nothing_of_models_it_may_not_use(router: ModelRouter) -> None:
    limited = Caller("k", key=virtual_key("k", models=["demo"]))
    unknown = request({"model": "no-such-model", "messages": QUESTION}, caller=limited)
    error = refused(validate_model, unknown, router, SERVED, False)
    assert (error.status, error.code) == (403, "model_not_allowed")
    error = refused(validate_model, request({"model": "no-such-model"}), router, SERVED, False)
    assert (error.status, error.code) == (404, "model_not_found")
    assert "demo, other, coder" in error.message


@pytest.mark.parametrize(
    ("model", "code"), [("", "missing_model"), ("m" * 257, "invalid_model_name")]
)
def test_a_model_name_is_required_and_bounded(router: ModelRouter, model: str, code: str) -> None:
    error = refused(validate_model, request({"model": model}), router, SERVED, True)
    assert (error.status, error.code, error.param) == (400, code, "model")


def test_only_the_apis_parameters_pass_and_the_operator_adds_per_group(
    router: ModelRouter,
) -> None:
    validate_request(request({"model": "demo", "messages": QUESTION, "temperature": 1}), router)
    error = refused(validate_request, request({"model": "demo", "api_base": "x"}), router)
    assert (error.code, error.param) == ("unsupported_parameter", "api_base")
    error = refused(validate_request, request({"model": "demo", "top_k": 5}), router)
    assert error.param == "top_k"
    validate_request(request({"model": "tuned", "top_k": 5}), router)
    nested = request({"model": "demo", "extra_body": {"api_key": "x"}})
    assert refused(validate_request, nested, router).param == "extra_body.api_key"


def test_a_translated_request_is_checked_as_the_client_sent_it(router: ModelRouter) -> None:
    sent = {"model": "demo", "max_tokens": 8, "messages": QUESTION, "top_k": 3}
    translated = request({"model": "demo", "messages": QUESTION}, "messages", sent=sent)
    validate_request(translated, router)  # top_k is the Messages API's own
    sent["stream_options"] = {}
    assert refused(validate_request, translated, router).param == "stream_options"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"metadata": {"agent": "bad name"}}, "invalid_agent_name", "metadata.agent"),
        ({"metadata": {"api_base": "x"}}, "unsupported_parameter", "metadata.api_base"),
        ({"metadata": {"tags": ["x" * 9000]}}, "metadata_too_large", "metadata"),
        ({"temperature": float("nan")}, "invalid_number", "temperature"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "invalid_text", None),
    ],
)
def test_what_a_caller_controls_is_bounded(
    router: ModelRouter, body: dict[str, Any], code: str, param: str | None
) -> None:
    error = refused(validate_request, request({"model": "tuned", **body}), router)
    assert (error.status, error.code, error.param) == (400, code, param)


def test_a_keys_model_list_holds_for_its_fallbacks_and_aliases(router: ModelRouter) -> None:
    assert permitted_groups(MASTER, router) == []
    everything = Caller("k", key=virtual_key("k", models=[]))
    assert permitted_groups(everything, router) == []
    coder = Caller("k", key=virtual_key("k", models=["coder"]))
    assert permitted_groups(coder, router) == [{"coder", "demo"}]


def test_a_keys_wildcard_covers_models_and_fallbacks(router: ModelRouter) -> None:
    wildcard = Caller("k", key=virtual_key("k", models=["de*"]))
    validate_model(request({"model": "demo"}, caller=wildcard), router, SERVED, False)
    error = refused(
        validate_model, request({"model": "other"}, caller=wildcard), router, SERVED, False
    )
    assert error.code == "model_not_allowed"
    permission = Permission(permitted_groups(wildcard, router))
    assert permission.allows("demo") and not permission.allows("other")
