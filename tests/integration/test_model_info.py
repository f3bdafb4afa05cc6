"""LiteLLM's `/v1/model/info`, where Kilo Code's and Cline's LiteLLM providers (and other
LiteLLM clients) read each model's context and output limits: the caller's models only, the
deployment's model and nothing else of its parameters."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.configs import gateway_config, openai_double
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(
        gateway_config(
            openai_double("gpt-4o"),
            openai_double(
                "local-coder",
                "openai/qwen2.5-coder",
                model_info={"max_input_tokens": 32768, "max_output_tokens": 8192},
                input_cost_per_token=0.000001,
            ),
        )
    )


def info(
    url: str, key: str = MASTER_KEY, path: str = "/v1/model/info", **query: str
) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=query, headers={"Authorization": f"Bearer {key}"})


def test_each_model_carries_its_limits_in_litellms_shape(gateway: str) -> None:
    reply = info(gateway)
    assert reply.status_code == 200
    entries = {entry["model_name"]: entry for entry in reply.json()["data"]}
    assert set(entries) == {"gpt-4o", "local-coder"}

    gpt = entries["gpt-4o"]
    assert gpt["litellm_params"] == {"model": "openai/gpt-4o"}
    assert gpt["model_info"]["max_output_tokens"] == 16384
    assert gpt["model_info"]["max_input_tokens"] == 128000
    assert gpt["model_info"]["supports_function_calling"] is True
    assert gpt["model_info"]["litellm_provider"] == "openai"
    # The operator's model_info and prices come first.
    coder = entries["local-coder"]["model_info"]
    assert (coder["max_input_tokens"], coder["max_output_tokens"]) == (32768, 8192)
    assert coder["input_cost_per_token"] == 0.000001
    assert coder["id"] == "local-coder#1"
    # Without /v1 too, as the LiteLLM proxy serves it; one deployment by its id.
    assert info(gateway, path="/model/info").json() == reply.json()
    one = info(gateway, litellm_model_id="local-coder#1").json()["data"]
    assert [entry["model_name"] for entry in one] == ["local-coder"]


def test_nothing_of_the_operators_deployment_shows(gateway: str) -> None:
    text = info(gateway).text
    for secret_or_url in (UPSTREAM_KEY, "api_base", "api_key", "127.0.0.1", "os.environ"):
        assert secret_or_url not in text


def test_a_key_sees_the_models_it_may_use(gateway: str) -> None:
    made = httpx.post(
        f"{gateway}/key/generate",
        json={"models": ["local-coder"]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    key = made.json()["key"]
    entries = info(gateway, key=key).json()["data"]
    assert [entry["model_name"] for entry in entries] == ["local-coder"]
    refused = info(gateway, key="sk-not-a-key")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
