from __future__ import annotations

import hmac

import pytest
from llm_proxy.access.auth import authenticate, check_master_key, presented_key
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.errors import ProxyError


def test_key_comes_from_bearer_or_x_api_key() -> None:
    assert presented_key({"authorization": "Bearer sk-a"}) == "sk-a"
    assert presented_key({"authorization": "bearer  sk-b "}) == "sk-b"
    assert presented_key({"x-api-key": "sk-c"}) == "sk-c"
    assert presented_key({"authorization": "Basic abc"}) is None


def test_master_key_check_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    no_virtual_keys = KeyStore(None).authenticate
    master = authenticate({"authorization": "Bearer right-key"}, "right-key", no_virtual_keys)
    assert master.key_id == "master"
    with pytest.raises(ProxyError) as caught:
        authenticate({"authorization": "Bearer wrong-key"}, "right-key", no_virtual_keys)
    assert caught.value.status == 401
    assert len(calls) == 2


@pytest.mark.parametrize("key", ["sk-1234", "short-key", None])
def test_deployed_gateway_refuses_weak_or_missing_master_keys(key: str | None) -> None:
    with pytest.raises(ProxyError) as caught:
        check_master_key(key, local=False)
    assert caught.value.status == 503


def test_local_stack_may_use_the_seed_key() -> None:
    assert check_master_key("sk-1234", local=True) == "sk-1234"


def test_prices_come_from_the_deployment_then_the_cost_map() -> None:
    custom = {
        "litellm_params": {
            "model": "openai/x",
            "input_cost_per_token": 0.5,
            "output_cost_per_token": 1.0,
        }
    }
    assert cost_usd(custom, 2, 3) == 4.0
    in_model_info = {
        "litellm_params": {"model": "openai/x"},
        "model_info": {"input_cost_per_token": 1.0, "output_cost_per_token": 0},
    }
    assert cost_usd(in_model_info, 2, 3) == 2.0
    # The seed's table: GPT-3.5 Turbo is $0.50 / $1.50 per million tokens.
    mapped = cost_usd({"litellm_params": {"model": "gpt-3.5-turbo"}}, 1_000_000, 1_000_000)
    assert mapped == pytest.approx(2.0)
    assert cost_usd({"litellm_params": {"model": "openai/unknown-model-xyz"}}, 10, 10) == 0.0
