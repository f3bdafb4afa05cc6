"""The response cache keeps tenants apart: an answer is shared by the virtual key that asked
for it (or, where the operator says so, by its team), never with another tenant, and it never
carries another caller's `user`. A client's `cache.ttl` cannot outlive the operator's TTL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, gateway_config, openai_double
from tests.support.gateway_http import new_key, new_team
from tests.support.stack import MASTER_KEY

OPERATOR_TTL_S = 600
MODEL = "gpt-3.5-turbo"


def cached_config(**cache_params: Any) -> str:
    return gateway_config(
        openai_double(MODEL),
        router_settings=NO_RETRIES,
        litellm_settings={
            "cache": True,
            "cache_params": {"type": "redis", "ttl": OPERATOR_TTL_S, **cache_params},
        },
        general_settings=MASTER_KEY_FROM_SECRET,
    )


@pytest.fixture(scope="module")
def per_key(gateway_for: Callable[..., str]) -> str:
    return gateway_for(cached_config())


@pytest.fixture(scope="module")
def per_team(gateway_for: Callable[..., str]) -> str:
    return gateway_for(cached_config(scope="team"))


def post(url: str, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    answer = httpx.post(
        f"{url}{path}",
        json={"model": MODEL, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer


def hit(answer: httpx.Response) -> bool:
    return {"true": True, "false": False}[answer.headers["x-litellm-cache-hit"]]


def output_text(answer: httpx.Response) -> str:
    return "".join(
        part["text"]
        for item in answer.json()["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


def provider_calls(upstream: OpenAIUpstream, path: str) -> int:
    return len([request for request in upstream.requests if request.path == path])


def question() -> str:
    # A question of its own per test, so no other test's answer is in the cache.
    return f"What is on the roadmap? ({uuid.uuid4().hex})"


def test_another_tenant_never_gets_a_responses_answer_nor_its_user(
    per_key: str, upstream: OpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_a, tenant_b = new_key(per_key), new_key(per_key)
    asked = question()
    monkeypatch.setattr(upstream, "reply", "The answer for tenant A.")
    first = post(per_key, "/v1/responses", tenant_a, {"input": asked, "user": "a@example.com"})
    assert (hit(first), output_text(first), first.json()["user"]) == (
        False,
        "The answer for tenant A.",
        "a@example.com",
    )

    monkeypatch.setattr(upstream, "reply", "The answer for tenant B.")
    other = post(per_key, "/v1/responses", tenant_b, {"input": asked})
    assert not hit(other)
    assert output_text(other) == "The answer for tenant B."
    assert "a@example.com" not in other.text and "tenant A" not in other.text
    assert provider_calls(upstream, "/v1/responses") == 2

    # Each tenant's own repeat is a hit on its own answer, with its own user.
    again_a = post(per_key, "/v1/responses", tenant_a, {"input": asked, "user": "a@example.com"})
    again_b = post(per_key, "/v1/responses", tenant_b, {"input": asked})
    assert (hit(again_a), output_text(again_a), again_a.json()["user"]) == (
        True,
        "The answer for tenant A.",
        "a@example.com",
    )
    assert (hit(again_b), output_text(again_b)) == (True, "The answer for tenant B.")
    assert "a@example.com" not in again_b.text
    assert provider_calls(upstream, "/v1/responses") == 2


def test_a_user_is_part_of_the_question_within_a_key(
    per_key: str, upstream: OpenAIUpstream
) -> None:
    key, asked = new_key(per_key), question()
    first = post(per_key, "/v1/responses", key, {"input": asked, "user": "a@example.com"})
    second = post(per_key, "/v1/responses", key, {"input": asked, "user": "b@example.com"})
    assert (hit(first), hit(second)) == (False, False)
    assert second.json()["user"] == "b@example.com" and "a@example.com" not in second.text
    assert provider_calls(upstream, "/v1/responses") == 2


def test_another_tenant_never_gets_a_chat_answer(
    per_key: str, upstream: OpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_a, tenant_b = new_key(per_key), new_key(per_key)
    messages = [{"role": "user", "content": question()}]
    monkeypatch.setattr(upstream, "reply", "The answer for tenant A.")
    first = post(per_key, "/v1/chat/completions", tenant_a, {"messages": messages})
    monkeypatch.setattr(upstream, "reply", "The answer for tenant B.")
    other = post(per_key, "/v1/chat/completions", tenant_b, {"messages": messages})
    again = post(per_key, "/v1/chat/completions", tenant_a, {"messages": messages})
    assert [hit(first), hit(other), hit(again)] == [False, False, True]
    assert [answer.json()["choices"][0]["message"]["content"] for answer in (other, again)] == [
        "The answer for tenant B.",
        "The answer for tenant A.",
    ]
    assert provider_calls(upstream, "/v1/chat/completions") == 2


def test_the_master_key_is_a_tenant_of_its_own(per_key: str, upstream: OpenAIUpstream) -> None:
    messages = [{"role": "user", "content": question()}]
    assert not hit(post(per_key, "/v1/chat/completions", MASTER_KEY, {"messages": messages}))
    assert hit(post(per_key, "/v1/chat/completions", MASTER_KEY, {"messages": messages}))
    assert not hit(post(per_key, "/v1/chat/completions", new_key(per_key), {"messages": messages}))
    assert provider_calls(upstream, "/v1/chat/completions") == 2


def test_keys_of_one_team_share_nothing_unless_the_operator_says_so(
    per_key: str, upstream: OpenAIUpstream
) -> None:
    team = new_team(per_key, f"team-{uuid.uuid4().hex[:8]}")
    first, second = new_key(per_key, team_id=team), new_key(per_key, team_id=team)
    messages = [{"role": "user", "content": question()}]
    assert not hit(post(per_key, "/v1/chat/completions", first, {"messages": messages}))
    assert not hit(post(per_key, "/v1/chat/completions", second, {"messages": messages}))
    assert provider_calls(upstream, "/v1/chat/completions") == 2


def test_team_wide_sharing_shares_within_the_team_only(
    per_team: str, upstream: OpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    red, blue = (
        new_team(per_team, f"{colour}-{uuid.uuid4().hex[:8]}") for colour in ("red", "blue")
    )
    red_one, red_two = new_key(per_team, team_id=red), new_key(per_team, team_id=red)
    blue_one, teamless = new_key(per_team, team_id=blue), new_key(per_team)
    asked = question()
    monkeypatch.setattr(upstream, "reply", "The answer for team red.")
    first = post(per_team, "/v1/responses", red_one, {"input": asked})
    shared = post(per_team, "/v1/responses", red_two, {"input": asked})
    assert (hit(first), hit(shared), output_text(shared)) == (
        False,
        True,
        "The answer for team red.",
    )
    assert shared.json()["id"] != first.json()["id"]

    monkeypatch.setattr(upstream, "reply", "Someone else's answer.")
    for outsider in (blue_one, teamless, MASTER_KEY):
        answer = post(per_team, "/v1/responses", outsider, {"input": asked})
        assert (hit(answer), output_text(answer)) == (False, "Someone else's answer.")
    assert provider_calls(upstream, "/v1/responses") == 4


def cached_lifetimes(aws: dict[str, str], marker: str) -> list[float]:
    """How long the cache table keeps each answer that says `marker`, in seconds from now."""
    table = boto3.resource("dynamodb").Table(aws["CacheTable"])
    items: list[dict[str, Any]] = []
    scan: dict[str, Any] = {}
    while True:
        page = table.scan(**scan)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        scan = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    now = time.time()
    return [
        int(item["expires_at"]) - now
        for item in items
        if marker in json.dumps(json.loads(str(item["response"])))
    ]


@pytest.mark.parametrize(
    ("control", "most_s"),
    [
        ({"ttl": 365 * 86_400}, OPERATOR_TTL_S),
        ({"s-maxage": 10 * 365 * 86_400}, OPERATOR_TTL_S),
        ({"ttl": 120}, 120),
    ],
)
def test_a_clients_ttl_never_outlives_the_operators(
    per_key: str,
    upstream: OpenAIUpstream,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    control: dict[str, int],
    most_s: int,
) -> None:
    marker = f"kept for at most {most_s} s ({uuid.uuid4().hex})"
    monkeypatch.setattr(upstream, "reply", marker)
    messages = [{"role": "user", "content": question()}]
    post(
        per_key, "/v1/chat/completions", new_key(per_key), {"messages": messages, "cache": control}
    )
    lifetimes = cached_lifetimes(aws, marker)
    assert len(lifetimes) == 1
    assert most_s - 30 < lifetimes[0] <= most_s
