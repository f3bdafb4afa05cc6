from __future__ import annotations

import hmac
from typing import Any

import pytest
from llm_proxy.access.auth import authenticate, check_master_key, presented_key
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.meter import record_usage

from tests.support.records import usage_record


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


def test_prompt_cache_reads_and_writes_have_their_own_prices() -> None:
    priced = {
        "litellm_params": {
            "model": "anthropic/x",
            "input_cost_per_token": 1.0,
            "output_cost_per_token": 2.0,
            "cache_read_input_token_cost": 0.1,
            "cache_creation_input_token_cost": 1.25,
        }
    }
    # 100 prompt tokens: 60 read from the cache, 20 written to it, 20 uncached.
    assert cost_usd(priced, 100, 10, 60, 20) == pytest.approx(20 * 1.0 + 60 * 0.1 + 20 * 1.25 + 20)
    no_cache_price = {"litellm_params": {"model": "openai/x", "input_cost_per_token": 1.0}}
    assert cost_usd(no_cache_price, 100, 0, 60, 0) == pytest.approx(100.0)


CHAT = {"prompt_tokens": 100, "completion_tokens": 5}
CACHED_40 = {"cached_tokens": 40}


@pytest.mark.parametrize(
    ("usage", "cached", "written"),
    [
        ({**CHAT, "prompt_tokens_details": {"cached_tokens": 60}}, 60, 0),
        ({**CHAT, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 30}, 50, 30),
        ({"input_tokens": 100, "output_tokens": 5, "input_tokens_details": CACHED_40}, 40, 0),
    ],
)
def test_usage_counts_prompt_cache_tokens(usage: dict[str, Any], cached: int, written: int) -> None:
    record = usage_record(request_id="r")
    record_usage(record, usage)
    assert (record.prompt_tokens, record.completion_tokens) == (100, 5)
    assert (record.cached_tokens, record.cache_write_tokens) == (cached, written)
