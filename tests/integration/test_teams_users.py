"""Teams and users (LiteLLM's `/team/*` and `/user/*`), end to end: the management API with the
master key, requests with their keys, against the gateway under uvicorn, litellm and the
OpenAI-format double; teams, users, keys and spend in DynamoDB (moto)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from llm_proxy.access import principal_store, virtual_keys

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, gateway_config, openai_double
from tests.support.gateway_http import new_key, post
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
# `priced`: 0.001 a prompt token, 0.002 a completion token; the double answers 6 + 5 tokens, and
# with max_tokens 1 a request is reserved at 0.016 and costs 0.016.
REQUEST_COST = 0.016
CONFIG = gateway_config(
    openai_double(),
    openai_double("gpt-4", "openai/gpt-4-turbo"),
    openai_double(
        "priced", "openai/house-model", input_cost_per_token=0.001, output_cost_per_token=0.002
    ),
    router_settings={"num_retries": 0, "cooldown_time": 0},
    general_settings=MASTER_KEY_FROM_SECRET,
)


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], upstream: OpenAIUpstream) -> str:
    return gateway_for(CONFIG)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def get(url: str, path: str, auth: str = MASTER_KEY, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{url}{path}", params=params, headers={"Authorization": f"Bearer {auth}"}, timeout=30
    )


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()["error"]
    assert found["code"] == code, found
    return found


def chat(url: str, key: str, model: str = "priced") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, "max_tokens": 1},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def settled(read: Callable[[], float], at_least: float) -> float:
    """A spend once it has reached `at_least` (spend settles just after the response)."""
    deadline = time.monotonic() + 5
    spent = read()
    while spent < at_least - 1e-9 and time.monotonic() < deadline:
        time.sleep(0.1)
        spent = read()
    return spent


def team_spend(url: str, team_id: str) -> float:
    return float(ok(get(url, "/team/info", team_id=team_id))["team_info"]["spend"])


def user_spend(url: str, user_id: str) -> float:
    return float(ok(get(url, "/user/info", user_id=user_id))["user_info"]["spend"])


# -- the management API's shapes ---------------------------------------------------------------


def test_a_team_is_made_read_listed_updated_in_litellms_shapes(url: str) -> None:
    team_id = unique("team")
    body = {
        "team_id": team_id,
        "team_alias": "platform",
        "models": ["gpt-3.5-turbo"],
        "max_budget": 10.5,
        "budget_duration": "30d",
        "rpm_limit": 100,
        "tpm_limit": 100_000,
        "metadata": {"cost_center": 42},
    }
    made = ok(post(url, "/team/new", body))
    assert {name: made[name] for name in body} == body
    assert (made["blocked"], made["spend"]) == (False, 0.0)
    assert made["created_at"] and "deleted" not in made

    key = new_key(url, team_id=team_id, key_alias=unique("k"))
    info = ok(get(url, "/team/info", team_id=team_id))
    assert info["team_id"] == team_id
    assert info["team_info"]["team_alias"] == "platform"
    assert info["team_info"]["spend"] == 0.0
    assert [k["team_id"] for k in info["keys"]] == [team_id]
    assert key not in json.dumps(info)
    assert "token" in info["keys"][0] and "spend" in info["keys"][0]

    generated = ok(post(url, "/team/new", {"team_alias": "anonymous"}))
    assert uuid.UUID(generated["team_id"]).version == 4
    listed = ok(get(url, "/team/list"))
    assert {team_id, generated["team_id"]} <= {team["team_id"] for team in listed}
    assert all("spend" in team for team in listed)

    # Fields not given stay; a null list is empty, a null budget none.
    updated = ok(post(url, "/team/update", {"team_id": team_id, "rpm_limit": 5, "models": None}))
    assert updated["team_id"] == team_id
    data = updated["data"]
    assert (data["rpm_limit"], data["models"], data["team_alias"]) == (5, [], "platform")
    assert (data["max_budget"], data["metadata"]) == (10.5, {"cost_center": 42})
    cleared = ok(post(url, "/team/update", {"team_id": team_id, "max_budget": None}))
    assert cleared["data"]["max_budget"] is None


def test_a_taken_unknown_or_bad_team_is_refused_by_name(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id}))
    found = error(post(url, "/team/new", {"team_id": team_id}), 400, "team_exists")
    assert found["param"] == "team_id"
    missing = unique("nobody")
    error(get(url, "/team/info", team_id=missing), 404, "team_not_found")
    error(post(url, "/team/update", {"team_id": missing, "rpm_limit": 1}), 404, "team_not_found")
    error(post(url, "/team/delete", {"team_ids": [team_id, missing]}), 404, "team_not_found")
    # Nothing was deleted: every team named must exist first.
    ok(get(url, "/team/info", team_id=team_id))

    refused = error(
        post(url, "/team/new", {"members_with_roles": [{"role": "admin", "user_id": "a"}]}),
        400,
        "unsupported_parameter",
    )
    assert refused["param"] == "members_with_roles"
    assert "not supported" in refused["message"]
    odd = error(post(url, "/team/new", {"colour": "red"}), 400, "unsupported_parameter")
    assert odd["param"] == "colour"
    # LiteLLM's empty defaults ask for nothing.
    ok(post(url, "/team/new", {"members_with_roles": [], "organization_id": None, "tags": []}))
    bad = error(post(url, "/team/new", {"budget_duration": "soon"}), 400, "invalid_duration")
    assert bad["param"] == "budget_duration"
    error(post(url, "/team/new", {"metadata": {"n": 1e-200}}), 400, "invalid_number")
    error(post(url, "/team/new", {"max_budget": -1}), 400, "invalid_value")
    error(post(url, "/team/new", {"team_id": "a#b"}), 400, "invalid_value")


def test_a_user_is_made_with_a_key_read_updated_and_listed(url: str) -> None:
    user_id = unique("dev")
    body = {
        "user_id": user_id,
        "user_alias": "Ada",
        "user_email": "ada@example.com",
        "user_role": "internal_user",
        "max_budget": 3.0,
        "budget_duration": "1d",
        "models": ["priced"],
    }
    made = ok(post(url, "/user/new", body))
    assert {name: made[name] for name in body} == body
    assert made["key"].startswith("sk-") and made["spend"] == 0.0
    assert chat(url, made["key"]).status_code == 200

    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id, "team_alias": "core"}))
    new_key(url, user_id=user_id, team_id=team_id)
    info = ok(get(url, "/user/info", user_id=user_id))
    assert info["user_id"] == user_id
    assert info["user_info"]["user_email"] == "ada@example.com"
    assert len(info["keys"]) == 2 and made["key"] not in json.dumps(info)
    assert [(t["team_id"], t["team_alias"]) for t in info["teams"]] == [(team_id, "core")]

    updated = ok(post(url, "/user/update", {"user_id": user_id, "user_alias": "Ada L."}))
    assert (updated["user_alias"], updated["max_budget"]) == ("Ada L.", 3.0)

    keyless = ok(post(url, "/user/new", {"auto_create_key": False}))
    assert keyless["key"] is None and uuid.UUID(keyless["user_id"])
    assert ok(get(url, "/user/info", user_id=keyless["user_id"]))["keys"] == []
    listed = ok(get(url, "/user/list", page_size=100))
    assert {user_id, keyless["user_id"]} <= {user["user_id"] for user in listed["users"]}
    assert listed["total"] >= 2

    error(post(url, "/user/new", {"user_id": user_id}), 400, "user_exists")
    error(get(url, "/user/info", user_id=unique("nobody")), 404, "user_not_found")
    error(post(url, "/user/new", {"user_role": "root"}), 400, "invalid_value")
    teams = error(post(url, "/user/new", {"teams": [team_id]}), 400, "unsupported_parameter")
    assert "team_id" in teams["message"]


def test_only_the_master_key_manages_teams_and_users(url: str) -> None:
    key = new_key(url)
    routes = [
        ("POST", "/team/new", {}),
        ("GET", "/team/info", {"team_id": "x"}),
        ("GET", "/team/list", {}),
        ("POST", "/team/update", {"team_id": "x"}),
        ("POST", "/team/delete", {"team_ids": ["x"]}),
        ("POST", "/user/new", {}),
        ("GET", "/user/info", {"user_id": "x"}),
        ("GET", "/user/list", {}),
        ("POST", "/user/update", {"user_id": "x"}),
        ("POST", "/user/delete", {"user_ids": ["x"]}),
    ]
    for method, path, body in routes:
        if method == "POST":
            refused, nobody = post(url, path, body, key=key), post(url, path, body, key="sk-no")
        else:
            refused, nobody = get(url, path, key, **body), get(url, path, "sk-no", **body)
        error(refused, 403, "master_key_required")
        assert key not in refused.text
        error(nobody, 401, "invalid_api_key")
    # The key is checked before the body.
    error(post(url, "/team/new", "[]", key=key), 403, "master_key_required")
    error(post(url, "/user/delete", {"user_ids": []}, key=key), 403, "master_key_required")


# -- what teams and users hold ---------------------------------------------------------------


def test_a_teams_budget_is_shared_by_its_keys_and_its_spend_is_theirs(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id, "max_budget": 2 * REQUEST_COST}))
    first, second = new_key(url, team_id=team_id), new_key(url, team_id=team_id)
    assert chat(url, first).status_code == 200
    assert chat(url, second).status_code == 200
    for key in (first, second):
        refused = error(chat(url, key), 429, "budget_exceeded")
        assert refused["type"] == "budget_exceeded"
        assert f"Team '{team_id}'" in refused["message"]

    spent = settled(lambda: team_spend(url, team_id), 2 * REQUEST_COST)
    keys = ok(get(url, "/team/info", team_id=team_id))["keys"]
    assert spent == pytest.approx(sum(float(key["spend"]) for key in keys))
    assert spent == pytest.approx(2 * REQUEST_COST)
    # A higher budget serves the team's keys again.
    ok(post(url, "/team/update", {"team_id": team_id, "max_budget": 1.0}))
    assert chat(url, first).status_code == 200


def test_a_users_budget_is_shared_by_its_keys(url: str) -> None:
    made = ok(post(url, "/user/new", {"max_budget": 2 * REQUEST_COST}))
    user_id, first = made["user_id"], made["key"]
    second = new_key(url, user_id=user_id)
    assert chat(url, first).status_code == 200
    assert chat(url, second).status_code == 200
    error(chat(url, first), 429, "budget_exceeded")
    error(chat(url, second), 429, "budget_exceeded")
    spent = settled(lambda: user_spend(url, user_id), 2 * REQUEST_COST)
    keys = ok(get(url, "/user/info", user_id=user_id))["keys"]
    assert spent == pytest.approx(sum(float(key["spend"]) for key in keys))


def test_a_team_key_uses_the_teams_budget_instead_of_its_users(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id, "max_budget": 1.0}))
    made = ok(post(url, "/user/new", {"max_budget": REQUEST_COST}))
    team_key = new_key(url, team_id=team_id, user_id=made["user_id"])
    assert chat(url, made["key"]).status_code == 200
    error(chat(url, made["key"]), 429, "budget_exceeded")
    # The user's budget is spent; its key of the team is held to the team's.
    assert chat(url, team_key).status_code == 200
    assert settled(lambda: user_spend(url, made["user_id"]), 2 * REQUEST_COST) == pytest.approx(
        2 * REQUEST_COST
    )


def test_a_teams_models_restrict_its_keys(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id, "models": ["gpt-3.5-turbo"]}))
    # A key may not list models outside its team's; one with no list of its own takes the team's.
    error(
        post(url, "/key/generate", {"team_id": team_id, "models": ["gpt-4"]}),
        403,
        "model_not_allowed",
    )
    key = new_key(url, team_id=team_id)
    assert chat(url, key, "gpt-3.5-turbo").status_code == 200
    refused = error(chat(url, key, "gpt-4"), 403, "model_not_allowed")
    assert f"Team '{team_id}'" in refused["message"]
    made = ok(post(url, "/user/new", {"models": ["gpt-4"]}))
    error(chat(url, made["key"], "gpt-3.5-turbo"), 403, "model_not_allowed")
    assert chat(url, made["key"], "gpt-4").status_code == 200


def test_a_teams_rpm_is_shared_by_its_keys(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id, "rpm_limit": 2}))
    first, second = new_key(url, team_id=team_id), new_key(url, team_id=team_id)
    # Three requests within one minute window.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    assert chat(url, first, "gpt-3.5-turbo").status_code == 200
    assert chat(url, second, "gpt-3.5-turbo").status_code == 200
    error(chat(url, first, "gpt-3.5-turbo"), 429, "rate_limit_exceeded")


def test_a_blocked_team_or_user_refuses_its_keys_until_unblocked(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id}))
    key = new_key(url, team_id=team_id)
    assert chat(url, key, "gpt-3.5-turbo").status_code == 200
    ok(post(url, "/team/update", {"team_id": team_id, "blocked": True}))
    refused = error(chat(url, key, "gpt-3.5-turbo"), 401, "invalid_api_key")
    assert "blocked" in refused["message"]
    ok(post(url, "/team/update", {"team_id": team_id, "blocked": None}))
    assert chat(url, key, "gpt-3.5-turbo").status_code == 200

    user = ok(post(url, "/user/new", {"blocked": True}))
    error(chat(url, user["key"], "gpt-3.5-turbo"), 401, "invalid_api_key")


# -- deletion --------------------------------------------------------------------------------


def test_deleting_a_team_or_user_deletes_its_keys(url: str) -> None:
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id}))
    team_key = new_key(url, team_id=team_id)
    user = ok(post(url, "/user/new", {}))
    other = new_key(url)
    assert chat(url, team_key).status_code == 200
    assert chat(url, user["key"]).status_code == 200

    assert ok(post(url, "/team/delete", {"team_ids": [team_id]})) == {"deleted_teams": [team_id]}
    error(chat(url, team_key), 401, "invalid_api_key")
    error(get(url, "/team/info", team_id=team_id), 404, "team_not_found")
    assert team_id not in {team["team_id"] for team in ok(get(url, "/team/list"))}
    error(get(url, "/key/info", key=team_key), 404, "key_not_found")

    deleted = ok(post(url, "/user/delete", {"user_ids": [user["user_id"]]}))
    assert deleted == {"deleted_users": [user["user_id"]]}
    error(chat(url, user["key"]), 401, "invalid_api_key")
    error(get(url, "/user/info", user_id=user["user_id"]), 404, "user_not_found")
    assert chat(url, other).status_code == 200
    # A deleted team's id may be taken again.
    assert ok(post(url, "/team/new", {"team_id": team_id}))["team_id"] == team_id


def test_a_deleted_teams_keys_are_refused_on_every_container(
    url: str, gateway_for: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(virtual_keys, "KEY_CACHE_TTL_S", 0.5)
    monkeypatch.setattr(principal_store, "PRINCIPAL_CACHE_TTL_S", 0.5)
    other = gateway_for(CONFIG)
    team_id = unique("team")
    ok(post(url, "/team/new", {"team_id": team_id}))
    key = new_key(url, team_id=team_id)
    # The other container has the key and its team cached.
    assert chat(other, key).status_code == 200
    ok(post(url, "/team/delete", {"team_ids": [team_id]}))
    time.sleep(0.6)
    error(chat(other, key), 401, "invalid_api_key")


# -- the command line ------------------------------------------------------------------------


def cli(url: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", "--url", url, "--master-key", MASTER_KEY, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_cli_manages_teams_and_users(url: str) -> None:
    team_id = unique("team")
    made = cli(url, "teams", "new", "--team-id", team_id, "--max-budget", "5", "--models", "priced")
    assert (made["team_id"], made["max_budget"], made["models"]) == (team_id, 5.0, ["priced"])
    updated = cli(url, "teams", "update", team_id, "--rpm-limit", "7", "--team-alias", "ops")
    assert (updated["data"]["rpm_limit"], updated["data"]["team_alias"]) == (7, "ops")
    assert cli(url, "teams", "info", team_id)["team_info"]["rpm_limit"] == 7
    assert team_id in {team["team_id"] for team in cli(url, "teams", "list")}
    key = cli(url, "keys", "create", "--team-id", team_id)
    assert key["team_id"] == team_id

    user_id = unique("dev")
    user = cli(url, "users", "new", "--user-id", user_id, "--user-email", "a@example.com")
    assert user["user_id"] == user_id and user["key"].startswith("sk-")
    assert cli(url, "users", "update", user_id, "--max-budget", "2")["max_budget"] == 2.0
    assert len(cli(url, "users", "info", user_id)["keys"]) == 1
    keyless = cli(url, "users", "new", "--no-key")
    assert keyless["key"] is None
    assert cli(url, "users", "delete", user_id) == {"deleted_users": [user_id]}
    assert cli(url, "teams", "delete", team_id) == {"deleted_teams": [team_id]}
