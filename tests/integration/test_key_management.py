"""The key API as a LiteLLM user drives it: LiteLLM's request bodies (its e2e scripts' among
them) and response shapes, each key field honoured or refused by name, key aliases, and
max_parallel_requests held across two gateways sharing the tables; spent budgets answer
LiteLLM's `budget_exceeded`. Against the gateway under uvicorn, litellm, the OpenAI-format
double and DynamoDB (moto)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx
import pytest
from llm_proxy.access.key_record import VirtualKey
from llm_proxy.access.limits import PARALLEL_SLOT_LEASE_S
from llm_proxy.errors import ProxyError
from llm_proxy.store.counters import CountersTable

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, gateway_config, openai_double
from tests.support.gateway_http import admin, generated, new_team
from tests.support.stack import usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
# Two deployments, so a key's alias and its model list can point at different ones.
CONFIG = gateway_config(
    openai_double(),
    openai_double("gpt-4", "openai/gpt-4-turbo"),
    router_settings={"num_retries": 0, "cooldown_time": 0},
    general_settings=MASTER_KEY_FROM_SECRET,
)


def chat(url: str, key: str, model: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


# -- LiteLLM's bodies and shapes ------------------------------------------------------------------


def test_litellms_key_script_body_generates_and_updates_a_key(
    url: str, upstream: OpenAIUpstream
) -> None:
    # BerriAI/litellm tests/test_keys.py: generate_key(), then update_key() and a chat call.
    made = generated(
        url,
        **{
            "models": ["azure-models", "gpt-4", "dall-e-3"],
            "aliases": {"mistral-7b": "gpt-3.5-turbo"},
            "duration": None,
            "max_budget": None,
            "budget_duration": None,
        },
    )
    assert made["key"].startswith("sk-") and made["aliases"] == {"mistral-7b": "gpt-3.5-turbo"}
    assert (made["expires"], made["max_budget"]) == (None, None)

    updated = admin(url, "POST", "/key/update", json={"key": made["key"], "models": ["gpt-4"]})
    assert updated.status_code == 200, updated.text
    body = updated.json()
    # LiteLLM's update_key_fn: the updated fields at the top level, no "info" wrapper.
    assert "info" not in body and body["models"] == ["gpt-4"]
    assert body["key"] == made["token"] and made["key"] not in updated.text
    assert chat(url, made["key"], "gpt-4").status_code == 200

    info = admin(url, "GET", "/key/info", params={"key": made["key"]}).json()
    assert info["key"] == made["token"] and info["info"]["models"] == ["gpt-4"]


def test_a_keys_alias_names_the_model_and_its_model_list_holds_for_that_model(
    url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    made = generated(
        url,
        **{
            "models": ["gpt-4"],
            "aliases": {"fast": "gpt-4", "cheap": "gpt-3.5-turbo"},
        },
    )
    answered = chat(url, made["key"], "fast")
    assert answered.status_code == 200, answered.text
    assert upstream.requests[-1].body["model"] == "gpt-4-turbo"
    item = usage_item(aws["UsageTable"], answered.headers["x-request-id"])
    assert item["model_requested"] == "gpt-4"

    # The alias resolves first; the key may not use what it names (LiteLLM checks the same).
    refused = chat(url, made["key"], "cheap")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert "gpt-3.5-turbo" in refused.json()["error"]["message"]
    # Another key has no such alias.
    other = generated(url, **{"models": ["gpt-4"]})
    assert chat(url, other["key"], "fast").status_code == 403


def test_litellms_key_fields_are_kept_and_returned(url: str) -> None:
    team, user = new_team(url, unique("team")), unique("user")
    fields = {
        "key_alias": unique("alias"),
        "user_id": user,
        "team_id": team,
        "tags": ["prod", "coding-agent"],
        "metadata": {"agent": "coder", "owner": "platform"},
        "max_parallel_requests": 4,
        "rpm_limit": 100,
        "tpm_limit": 100_000,
        "max_budget": 12.5,
        "budget_duration": "30d",
        "duration": "90d",
        "blocked": False,
    }
    made = generated(url, **fields)
    info = admin(url, "GET", "/key/info", params={"key": made["token"]}).json()["info"]
    for name, value in fields.items():
        if name != "duration":
            assert made[name] == value and info[name] == value, name
    assert made["expires"] and info["budget_reset_at"]
    assert (info["spend"], info["remaining_budget"]) == (0.0, 12.5)

    for query in ({"user_id": user}, {"team_id": team}, {"key_alias": fields["key_alias"]}):
        listed = admin(url, "GET", "/key/list", params=query).json()
        assert listed["keys"] == [made["token"]], query


def test_a_key_alias_names_one_key_as_in_litellm(url: str) -> None:
    alias = unique("coder")
    first = generated(url, **{"key_alias": alias})
    second = admin(url, "POST", "/key/generate", json={"key_alias": alias})
    assert second.status_code == 400, second.text
    error = second.json()["error"]
    assert (error["code"], error["param"]) == ("key_alias_taken", "key_alias")
    assert error["message"] == (
        f"Key with alias '{alias}' already exists. Unique key aliases across all keys are required."
    )
    other = generated(url)
    taken = admin(url, "POST", "/key/update", json={"key": other["token"], "key_alias": alias})
    assert taken.status_code == 400 and taken.json()["error"]["code"] == "key_alias_taken"
    again = admin(url, "POST", "/key/update", json={"key": first["token"], "key_alias": alias})
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("soft_budget", 10.0, "alerts"),
        ("model_rpm_limit", {"gpt-4": 5}, "per-model limits"),
        ("budget_id", "budget-1", "shared budget tables"),
        ("config", {"temperature": 0}, "operator's config"),
        ("permissions", {"pii_masking": True}, "permissions"),
        ("spend", 5.0, "metered by the gateway"),
        ("key", "sk-chosen-by-me-0000000000", "generated by the gateway"),
        ("guardrails", ["pii"], "guardrails"),
        ("allowed_routes", ["/key/generate"], "route restrictions"),
        ("organization_id", "org-1", "organizations"),
        ("rmp_limit", 5, "not a key field"),
    ],
)
def test_a_key_field_not_served_is_refused_by_name_with_its_reason(
    url: str, field: str, value: Any, reason: str
) -> None:
    response = admin(url, "POST", "/key/generate", json={field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", field)
    assert f"'{field}'" in error["message"] and reason in error["message"]
    assert "Extra inputs" not in error["message"]
    if field == "key":
        return  # on /key/update, `key` names the key to update
    made = generated(url)
    update = admin(url, "POST", "/key/update", json={"key": made["token"], field: value})
    assert update.status_code == 400 and update.json()["error"]["param"] == field


def test_litellms_empty_defaults_ask_for_nothing(url: str) -> None:
    # LiteLLM's GenerateKeyRequest defaults, as a client that sends every field sends them.
    made = generated(
        url,
        **{
            "config": {},
            "permissions": {},
            "model_max_budget": {},
            "allowed_cache_controls": [],
            "spend": 0,
            "soft_budget": None,
            "key_type": "default",
            "send_invite_email": None,
            "auto_rotate": False,
            "metadata": {},
            "models": [],
            "max_budget": "",
        },
    )
    assert made["max_budget"] is None
    assert made["models"] == [] and made["metadata"] == {}
    assert "config" not in made and "soft_budget" not in made


def test_key_list_pages_in_litellms_shape(url: str) -> None:
    team = new_team(url, unique("team"))
    tokens = {generated(url, **{"team_id": team})["token"] for _ in range(3)}
    first = admin(url, "GET", "/key/list", params={"team_id": team, "size": 2}).json()
    assert (first["total_count"], first["current_page"], first["total_pages"]) == (3, 1, 2)
    second = admin(url, "GET", "/key/list", params={"team_id": team, "size": 2, "page": 2}).json()
    assert len(first["keys"]) == 2 and len(second["keys"]) == 1
    assert set(first["keys"]) | set(second["keys"]) == tokens
    full = admin(
        url, "GET", "/key/list", params={"team_id": team, "return_full_object": "true"}
    ).json()
    assert {key["token"] for key in full["keys"]} == tokens
    assert all(key["team_id"] == team and "spend" in key for key in full["keys"])
    too_big = admin(url, "GET", "/key/list", params={"size": 101})
    assert too_big.status_code == 400 and "size" in too_big.json()["error"]["param"]


# -- budget_exceeded -----------------------------------------------------------------------------


def test_a_zero_budget_is_budget_exceeded_from_the_first_request(url: str) -> None:
    made = generated(url, **{"max_budget": 0.0})
    refused = chat(url, made["key"], "gpt-3.5-turbo")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("budget_exceeded", "budget_exceeded")
    assert error["message"] == "Budget has been exceeded! Current cost: 0.0, Max budget: 0.0"


def test_spend_at_the_budget_is_budget_exceeded_in_each_apis_shape(
    gateway_url: str, upstream: OpenAIUpstream
) -> None:
    # `priced`: 0.001 a prompt token, 0.002 a completion token; the double answers 6 + 5 tokens
    # (0.016), and a reservation of 14 prompt tokens + max_tokens 1 is 0.016: the first request
    # spends the budget exactly.
    made = generated(gateway_url, **{"max_budget": 0.016, "budget_duration": "1d"})
    assert chat(gateway_url, made["key"], "priced", max_tokens=1).status_code == 200
    before = len(upstream.requests)

    refused = chat(gateway_url, made["key"], "priced", max_tokens=1)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("budget_exceeded", "budget_exceeded")
    assert error["message"].startswith(
        "Budget has been exceeded! Current cost: 0.016, Max budget: 0.016"
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400

    messages = httpx.post(
        f"{gateway_url}/v1/messages",
        json={"model": "priced", "max_tokens": 1, "messages": MESSAGES},
        headers={"x-api-key": made["key"], "anthropic-version": "2023-06-01"},
        timeout=60,
    )
    assert messages.status_code == 429, messages.text
    envelope = messages.json()
    assert envelope["type"] == "error"
    assert (envelope["error"]["type"], envelope["error"]["code"]) == (
        "rate_limit_error",
        "budget_exceeded",
    )
    assert envelope["error"]["message"].startswith("Budget has been exceeded! Current cost:")
    assert len(upstream.requests) == before

    # Lowering the budget under the spend: refused the same way before any estimate.
    lowered = {"key": made["token"], "max_budget": 0.001}
    assert admin(gateway_url, "POST", "/key/update", json=lowered).status_code == 200
    again = chat(gateway_url, made["key"], "priced", max_tokens=1)
    assert again.json()["error"]["message"].startswith(
        "Budget has been exceeded! Current cost: 0.016, Max budget: 0.001"
    )


# -- max_parallel_requests -----------------------------------------------------------------------


def in_flight(aws: dict[str, str], token: str) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(aws["CountersTable"])
    item: dict[str, Any] = table.get_item(Key={"counter_id": f"key#{token}#parallel"}).get(
        "Item", {}
    )
    return item


def settles_to(aws: dict[str, str], token: str, count: int) -> dict[str, Any]:
    """The key's in-flight counter once it reads `count` (releases land after the answer)."""
    deadline = time.monotonic() + 15
    while True:
        item = in_flight(aws, token)
        if int(item.get("n", 0)) == count or time.monotonic() > deadline:
            assert int(item.get("n", 0)) == count, item
            return item
        time.sleep(0.1)


@contextmanager
def open_stream(url: str, key: str) -> Iterator[tuple[httpx.Response, Iterator[str]]]:
    """A streamed chat completion, open once its first event has arrived; with its lines."""
    with httpx.Client(timeout=60) as client:
        body = {"model": "gpt-3.5-turbo", "messages": MESSAGES, "stream": True}
        headers = {"Authorization": f"Bearer {key}"}
        with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            yield r, lines


def test_max_parallel_requests_holds_across_two_gateways_and_every_ending_releases(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    first, second = gateway_for(CONFIG), gateway_for(CONFIG)
    made = generated(first, **{"max_parallel_requests": 2})
    key, token = made["key"], made["token"]
    upstream.chunk_delay_s = 1.0

    with open_stream(first, key) as (hung_up, _), open_stream(second, key) as (_, finished):
        settles_to(aws, token, 2)
        for url in (first, second):
            refused = chat(url, key, "gpt-3.5-turbo")
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "rate_limit_exceeded"
            assert error["message"] == (
                f"Rate limit exceeded for api_key: {token}. Limit type: max_parallel_requests. "
                "Current limit: 2, Remaining: 0."
            )
            assert refused.headers["retry-after"] == "1"

        # A client that hangs up gives its slot back.
        hung_up.close()
        settles_to(aws, token, 1)
        # A normal answer, and a failed one, each take the free slot and give it back.
        assert chat(second, key, "gpt-3.5-turbo").status_code == 200
        settles_to(aws, token, 1)
        upstream.fail_next(Fault(status=500, message="boom"))
        assert chat(first, key, "gpt-3.5-turbo").status_code == 502
        settles_to(aws, token, 1)
        # A stream read to its end.
        assert any("[DONE]" in line for line in finished)
    item = settles_to(aws, token, 0)
    assert not [name for name in item if name.startswith("slot_")]


def test_a_slot_a_crashed_container_left_frees_when_its_lease_ends(aws: dict[str, str]) -> None:
    counters = CountersTable(aws["CountersTable"])
    key = VirtualKey(token=uuid.uuid4().hex, key_name="k", max_parallel_requests=1)
    # Taken long ago and never released.
    counters.admit(key, 0, 0.0, now=time.time() - PARALLEL_SLOT_LEASE_S - 1)
    held = counters.admit(key, 0, 0.0)
    with pytest.raises(ProxyError) as refused:
        counters.admit(key, 0, 0.0)
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    counters.release(held)
    # A release counts once, however often it comes.
    counters.release(held)
    assert in_flight(aws, key.token)["n"] == 0
    assert counters.admit(key, 0, 0.0).parallel_slot


def test_a_keys_aliases_are_bounded(url: str) -> None:
    aliases = {f"name-{n}": "gpt-4" for n in range(101)}
    response = admin(url, "POST", "/key/generate", json={"aliases": aliases})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "aliases"
