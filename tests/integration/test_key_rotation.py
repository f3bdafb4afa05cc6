"""Key rotation (LiteLLM's `POST /key/{key}/regenerate`) and `last_active`, end to end: the key
API with the master key, requests with the keys it made, against the gateway under uvicorn,
litellm and the OpenAI-format double; keys and spend in DynamoDB (moto)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, gateway_config, openai_double
from tests.support.gateway_http import admin, generated
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
CONFIG = gateway_config(
    openai_double(),
    router_settings={"num_retries": 0, "cooldown_time": 0},
    general_settings=MASTER_KEY_FROM_SECRET,
)


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], upstream: OpenAIUpstream) -> str:
    return gateway_for(CONFIG)


def rotate(url: str, key: str, **body: Any) -> dict[str, Any]:
    response = admin(url, "POST", f"/key/{key}/regenerate", json=body or None)
    assert response.status_code == 200, response.text
    rotated: dict[str, Any] = response.json()
    return rotated


def info(url: str, key: str) -> dict[str, Any]:
    response = admin(url, "GET", "/key/info", params={"key": key})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["info"]
    return found


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-3.5-turbo", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def spend_of(url: str, key: str) -> float:
    # The usage settles after the response: a moment's wait at most.
    deadline = time.monotonic() + 5
    spent = float(info(url, key)["spend"])
    while spent == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        spent = float(info(url, key)["spend"])
    return spent


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_a_rotated_key_keeps_its_settings_and_spend_and_the_old_one_stops(url: str) -> None:
    alias = f"rotating-{uuid.uuid4().hex[:8]}"
    made = generated(
        url, key_alias=alias, models=["gpt-3.5-turbo"], max_budget=10.0, rpm_limit=50, agent="bot"
    )
    old = made["key"]
    assert chat(url, old).status_code == 200
    spent = spend_of(url, old)
    assert spent > 0

    rotated = rotate(url, old)
    new = rotated["key"]
    assert new.startswith("sk-") and new != old
    # The same key: its token, alias, limits and agent; the new raw key only in this answer.
    assert rotated["token_id"] == rotated["token"] == made["token"]
    assert (rotated["key_alias"], rotated["models"], rotated["max_budget"]) == (
        alias,
        ["gpt-3.5-turbo"],
        10.0,
    )
    assert (rotated["rpm_limit"], rotated["metadata"]) == (50, {"agent": "bot"})
    assert rotated["key_name"] == f"{new[:5]}...{new[-4:]}"
    assert not {"secret", "previous_secret", "previous_secret_until"} & rotated.keys()

    refused = chat(url, old)
    assert refused.status_code == 401, refused.text
    assert error_code(refused) == "invalid_api_key"
    assert old not in refused.text

    assert info(url, new)["spend"] == pytest.approx(spent)
    assert chat(url, new).status_code == 200
    deadline = time.monotonic() + 5
    while float(info(url, new)["spend"]) <= spent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert float(info(url, new)["spend"]) > spent
    assert info(url, made["token"])["key_alias"] == alias

    # Rotated again: the second key stops too, the third works; still one key in the list.
    third = rotate(url, made["token"])["key"]
    assert chat(url, new).status_code == 401
    assert chat(url, third).status_code == 200
    listed = admin(url, "GET", "/key/list", params={"key_alias": alias}).json()
    assert listed["keys"] == [made["token"]]
    # Deleting by the current key removes the key: no secret opens it any more.
    assert admin(url, "POST", "/key/delete", json={"keys": [third]}).status_code == 200
    assert chat(url, third).status_code == 401
    assert admin(url, "GET", "/key/info", params={"key": made["token"]}).status_code == 404


def test_with_a_grace_period_both_keys_work_until_it_ends(url: str) -> None:
    made = generated(url, max_budget=10.0)
    old = made["key"]
    rotated = rotate(url, old, grace_period="2s", rpm_limit=40)
    new = rotated["key"]
    assert rotated["rpm_limit"] == 40
    assert chat(url, old).status_code == 200
    assert chat(url, new).status_code == 200
    # Requests on the old key count to the same key.
    assert spend_of(url, new) > 0
    time.sleep(2.5)
    refused = chat(url, old)
    assert refused.status_code == 401, refused.text
    assert chat(url, new).status_code == 200


def test_last_active_is_null_until_the_key_is_used(url: str) -> None:
    made = generated(url)
    assert info(url, made["token"])["last_active"] is None
    before = datetime.now(UTC).replace(microsecond=0)
    assert chat(url, made["key"]).status_code == 200
    deadline = time.monotonic() + 5
    while info(url, made["token"])["last_active"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    last_active = info(url, made["token"])["last_active"]
    assert last_active is not None
    assert before <= datetime.fromisoformat(last_active) <= datetime.now(UTC)


def test_only_the_master_key_rotates_and_an_unknown_key_is_404(url: str) -> None:
    made = generated(url)
    refused = admin(url, "POST", f"/key/{made['key']}/regenerate", key=made["key"])
    assert refused.status_code == 403
    assert error_code(refused) == "master_key_required"
    assert made["key"] not in refused.text
    nobody = admin(url, "POST", "/key/sk-nobody/regenerate", key="sk-nobody")
    assert nobody.status_code == 401
    assert chat(url, made["key"]).status_code == 200

    missing = admin(url, "POST", f"/key/sk-{uuid.uuid4().hex}/regenerate")
    assert missing.status_code == 404
    assert error_code(missing) == "key_not_found"
    bad = admin(url, "POST", f"/key/{made['key']}/regenerate", json={"grace_period": "soon"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "grace_period"
    chosen = admin(url, "POST", f"/key/{made['key']}/regenerate", json={"new_key": "sk-mine-123"})
    assert chosen.status_code == 400
    assert chosen.json()["error"]["param"] == "new_key"
    # Refused rotations changed nothing.
    assert chat(url, made["key"]).status_code == 200


def test_litellms_body_form_rotates_the_key_it_names(url: str) -> None:
    made = generated(url)
    response = admin(url, "POST", "/key/regenerate", json={"key": made["token"]})
    assert response.status_code == 200, response.text
    assert chat(url, response.json()["key"]).status_code == 200
    assert chat(url, made["key"]).status_code == 401


def test_the_cli_rotates_a_key(url: str) -> None:
    made = generated(url)
    command = [sys.executable, "-m", "llm_proxy.cli", "--url", url, "--master-key", MASTER_KEY]
    done = subprocess.run(
        [*command, "keys", "rotate", made["key"], "--grace-period", "1m"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "not shown again" in done.stderr
    new = json.loads(done.stdout)["key"]
    assert chat(url, new).status_code == 200
    assert chat(url, made["key"]).status_code == 200
