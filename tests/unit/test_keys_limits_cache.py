"""The pure parts of virtual keys, limits and the cache: durations, model scopes, the cache
key and its settings, and the 429s' headers."""

from __future__ import annotations

import pytest
from llm_proxy.access.auth import MASTER, Caller
from llm_proxy.access.budgets import key_budget
from llm_proxy.access.key_record import VirtualKey, duration_s, token_of
from llm_proxy.access.limits import Limits, over_limit, parallel_limit_reached
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.config import ConfigError, ProxyConfig
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.cache import CacheControl, CacheSettings, cache_key

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("30d", 2_592_000)]
)
def test_durations_in_litellms_form(text: str, seconds: int) -> None:
    assert duration_s(text, "duration") == seconds


@pytest.mark.parametrize("text", ["0s", "monthly", "5", "1y", ""])
def test_other_durations_are_400_naming_the_field(text: str) -> None:
    with pytest.raises(ProxyError) as refused:
        duration_s(text, "budget_duration")
    assert (refused.value.status, refused.value.param) == (400, "budget_duration")


def test_a_key_allows_its_models_or_all_when_none_are_listed() -> None:
    assert VirtualKey(token="t", key_name="k").allows("anything")
    scoped = VirtualKey(token="t", key_name="k", models=["gpt-4"])
    assert scoped.allows("gpt-4") and not scoped.allows("gpt-3.5-turbo")


@pytest.mark.parametrize(
    ("models", "allowed", "refused"),
    [
        (["*"], ["gpt-4o", "claude"], []),
        (["openai/*"], ["openai/gpt-4o", "openai/o3"], ["anthropic/claude", "openai", "gpt-4o"]),
        (["bedrock/anthropic.*"], ["bedrock/anthropic.claude-v2"], ["bedrock/meta.llama"]),
        (["gpt-4?", "a[b]c"], ["gpt-4?", "a[b]c"], ["gpt-4o", "abc"]),
    ],
)
def test_a_key_allows_what_its_wildcards_cover(
    models: list[str], allowed: list[str], refused: list[str]
) -> None:
    key = VirtualKey(token="t", key_name="k", models=models)
    assert all(key.allows(model) for model in allowed)
    assert not any(key.allows(model) for model in refused)


def test_a_key_survives_its_item_form() -> None:
    key = VirtualKey(
        token=token_of("sk-x"),
        key_name="sk-x...",
        models=["gpt-4"],
        max_budget=2.5,
        rpm_limit=60,
        metadata={"agent": "coder", "nested": {"ratio": 0.5, "": [1, 2.5]}},
    )
    assert VirtualKey.from_item(key.to_item()) == key
    assert key.agent == "coder"


def test_tokens_and_raw_keys_both_name_a_key() -> None:
    assert KeyStore.resolve("sk-abc") == token_of("sk-abc")
    assert KeyStore.resolve(token_of("sk-abc")) == token_of("sk-abc")


def test_the_cache_key_is_the_question_not_its_delivery() -> None:
    base = cache_key("gpt-4", {"messages": MESSAGES, "temperature": 0}, "key:a")
    assert base == cache_key(
        "gpt-4",
        {
            "messages": MESSAGES,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "metadata": {"trace": "1"},
            "cache": {"ttl": 60},
            "store": False,
            "previous_response_id": "resp_1",
        },
        "key:a",
    )
    assert base != cache_key("gpt-4", {"messages": MESSAGES, "temperature": 1}, "key:a")
    assert base != cache_key("gpt-3.5-turbo", {"messages": MESSAGES, "temperature": 0}, "key:a")


def test_the_cache_key_holds_its_owner_and_what_the_answer_echoes() -> None:
    body = {"input": "hi", "user": "a@example.com"}
    assert cache_key("gpt-4", body, "key:a") != cache_key("gpt-4", body, "key:b")
    assert cache_key("gpt-4", body, "key:a") != cache_key("gpt-4", body, "team:a")
    assert cache_key("gpt-4", body, "key:a") != cache_key(
        "gpt-4", {**body, "user": "b@example.com"}, "key:a"
    )
    assert cache_key("gpt-4", body, "key:a") != cache_key(
        "gpt-4", {**body, "instructions": "Be brief."}, "key:a"
    )


def test_answers_are_shared_per_key_or_per_team() -> None:
    alone = Caller(key_id="t1", key=VirtualKey(token="t1", key_name="k1"))
    teamed = Caller(key_id="t2", key=VirtualKey(token="t2", key_name="k2", team_id="red"))
    master = Caller(key_id=MASTER)
    per_key, per_team = CacheSettings(True, 3600), CacheSettings(True, 3600, "team")
    assert [per_key.owner(c) for c in (alone, teamed, master)] == [
        "key:t1",
        "key:t2",
        "key:master",
    ]
    assert [per_team.owner(c) for c in (alone, teamed, master)] == [
        "key:t1",
        "team:red",
        "key:master",
    ]


def test_cache_settings_in_the_seeds_and_litellms_forms() -> None:
    seed = ProxyConfig.model_validate(
        {"general_settings": {"cache": {"type": "redis", "ttl": 3600}}}
    )
    assert CacheSettings.from_config(seed) == CacheSettings(True, 3600)
    litellm_form = ProxyConfig.model_validate(
        {"litellm_settings": {"cache": True, "cache_params": {"type": "redis", "ttl": 600}}}
    )
    assert CacheSettings.from_config(litellm_form) == CacheSettings(True, 600)
    assert not CacheSettings.from_config(ProxyConfig()).enabled
    teams = ProxyConfig.model_validate(
        {"litellm_settings": {"cache": True, "cache_params": {"scope": "team"}}}
    )
    assert CacheSettings.from_config(teams) == CacheSettings(True, 3600, "team")
    seed_teams = ProxyConfig.model_validate({"general_settings": {"cache": {"scope": "team"}}})
    assert CacheSettings.from_config(seed_teams).scope == "team"


def test_an_unknown_cache_scope_fails_the_start_naming_the_field() -> None:
    config = ProxyConfig.model_validate(
        {"litellm_settings": {"cache": True, "cache_params": {"scope": "everyone"}}}
    )
    with pytest.raises(ConfigError, match=r"litellm_settings\.cache_params\.scope.*'everyone'"):
        CacheSettings.from_config(config)


def test_per_request_cache_control() -> None:
    on = CacheSettings(True, 3600)
    assert CacheControl.of({}, on) == CacheControl(True, True, 3600)
    assert CacheControl.of({"cache": {"no-cache": True, "ttl": 60}}, on) == CacheControl(
        False, True, 60
    )
    assert CacheControl.of({"cache": {"no-store": True}}, on).store is False
    assert CacheControl.of({"n": 2}, on) == CacheControl(False, False, 3600)
    assert CacheControl.of({}, CacheSettings()).lookup is False
    with pytest.raises(ProxyError):
        CacheControl.of({"cache": "yes"}, on)


@pytest.mark.parametrize("asked", [{"ttl": 31_536_000}, {"s-maxage": 10**12}, {"ttl": 3600.5}])
def test_a_clients_ttl_is_cut_to_the_operators(asked: dict[str, int | float]) -> None:
    assert CacheControl.of({"cache": asked}, CacheSettings(True, 3600)).ttl_s == 3600


def test_a_fraction_of_a_second_is_kept_for_one() -> None:
    assert CacheControl.of({"cache": {"ttl": 0.5}}, CacheSettings(True, 3600)).ttl_s == 1


@pytest.mark.parametrize("ttl", [0, -5, True, "600", None])
def test_a_ttl_that_is_no_positive_number_is_a_400(ttl: object) -> None:
    with pytest.raises(ProxyError) as refused:
        CacheControl.of({"cache": {"ttl": ttl}}, CacheSettings(True, 3600))
    assert (refused.value.status, refused.value.param) == (400, "cache.ttl")


def test_a_rate_limit_429_carries_openais_headers() -> None:
    error = over_limit("This key", Limits(rpm=10, tpm=1000), {"n": 10, "tokens": 400}, now=125.0)
    assert error.status == 429
    assert error.headers["Retry-After"] == "55"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-remaining-tokens"] == "600"
    assert "10 requests per minute" in error.message


def test_a_budget_429_says_when_the_window_resets() -> None:
    key = VirtualKey(token="t", key_name="k", max_budget=1.0, budget_duration="1h")
    error = key_budget(key).exceeded(1.25, now=3600 * 5 + 600)
    assert (error.status, error.error_type, error.code) == (429, *["budget_exceeded"] * 2)
    # LiteLLM's words, which its users' alerting matches.
    assert error.message.startswith("Budget has been exceeded! Current cost: 1.25, Max budget: 1.0")
    assert error.headers["Retry-After"] == "3000"
    assert key_budget(key).item(3600 * 5 + 600) == "key#t#spend#18000"


def test_under_budget_a_request_too_dear_for_what_is_left_is_a_400() -> None:
    key = VirtualKey(token="t", key_name="k", max_budget=1.0)
    error = key_budget(key).would_overspend(0.75, 0.5, now=3600 * 5 + 600)
    assert (error.status, error.code, error.param) == (400, "request_exceeds_limit", "max_tokens")
    assert "$0.250000 left" in error.message and "current cost: 0.75" in error.message


def test_a_windowed_budget_without_room_for_the_request_says_when_it_has() -> None:
    """Waiting for the window serves the request: a 429 an agent retries after Retry-After."""
    key = VirtualKey(token="t", key_name="k", max_budget=1.0, budget_duration="1h")
    error = key_budget(key).would_overspend(0.75, 0.5, now=3600 * 5 + 600)
    assert (error.status, error.code) == (429, "budget_exceeded")
    assert error.headers["Retry-After"] == "3000"
    assert "$0.250000 left" in error.message and "resets in 3000 s" in error.message


def test_the_parallel_limit_is_worded_as_litellms_rate_limiter() -> None:
    key = VirtualKey(token="t", key_name="k", max_parallel_requests=3)
    error = parallel_limit_reached(key)
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert error.headers["Retry-After"] == "1"
    assert error.message == (
        "Rate limit exceeded for api_key: t. Limit type: max_parallel_requests. "
        "Current limit: 3, Remaining: 0."
    )


def test_a_keys_aliases_name_the_model_it_is_served_by() -> None:
    key = VirtualKey(token="t", key_name="k", aliases={"mistral-7b": "gpt-3.5-turbo"})
    assert (key.resolve("mistral-7b"), key.resolve("gpt-4")) == ("gpt-3.5-turbo", "gpt-4")
    assert VirtualKey.from_item(key.to_item()) == key
