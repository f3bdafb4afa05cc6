"""Virtual keys end to end: the /key API with the master key, then the openai SDK with the
keys it made, against the gateway under uvicorn, litellm and the OpenAI-format double; keys,
counters and usage read back from DynamoDB (moto)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import openai
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, gateway_config, openai_double
from tests.support.gateway_http import admin, generated
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY, usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
LIMITED_CONFIG = gateway_config(
    openai_double(),
    openai_double("capped", rpm=2),
    router_settings={"num_retries": 0, "cooldown_time": 0},
    general_settings=MASTER_KEY_FROM_SECRET,
)


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_a_key_is_shown_once_and_stored_only_as_its_hash(
    gateway_url: str, aws: dict[str, str]
) -> None:
    made = generated(gateway_url, models=["gpt-3.5-turbo"], agent="coder", rpm_limit=60)
    raw, token = made["key"], made["token"]
    assert raw.startswith("sk-") and len(raw) > 40
    assert made["metadata"] == {"agent": "coder"}
    assert (made["rpm_limit"], made["models"]) == (60, ["gpt-3.5-turbo"])

    stored = boto3.resource("dynamodb").Table(aws["KeysTable"]).scan()["Items"]
    assert any(item["token"] == token for item in stored)
    assert raw not in repr(stored)

    info = admin(gateway_url, "GET", "/key/info", params={"key": raw}).json()
    assert info["key"] == token
    assert info["info"]["spend"] == 0.0
    assert raw not in repr(info)
    listed = admin(gateway_url, "GET", "/key/list").json()
    assert token in listed["keys"] and raw not in repr(listed)


def test_the_key_api_needs_the_master_key(gateway_url: str) -> None:
    made = generated(gateway_url)
    for method, path, extra in (
        ("POST", "/key/generate", {"json": {}}),
        ("GET", "/key/list", {}),
        ("GET", "/key/info", {"params": {"key": made["token"]}}),
    ):
        response = admin(gateway_url, method, path, key=made["key"], **extra)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "master_key_required"
    unknown = admin(gateway_url, "GET", "/key/list", key="sk-not-a-key-at-all-0000")
    assert unknown.status_code == 401


def test_a_key_reads_its_own_info_as_litellm_allows(gateway_url: str) -> None:
    made = generated(gateway_url, key_alias=f"own-{made_suffix()}", max_budget=5)
    own = admin(gateway_url, "GET", "/key/info", key=made["key"])
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["key"] == made["token"] and body["info"]["remaining_budget"] == 5
    assert made["key"] not in own.text
    master = admin(gateway_url, "GET", "/key/info")
    assert master.status_code == 400 and master.json()["error"]["param"] == "key"


def made_suffix() -> str:
    return uuid.uuid4().hex[:8]


def test_bad_key_settings_are_refused_naming_the_field(gateway_url: str) -> None:
    for fields, param in (
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"budget_duration": "monthly"}, "budget_duration"),
        ({"rmp_limit": 5}, "rmp_limit"),
    ):
        response = admin(gateway_url, "POST", "/key/generate", json=fields)
        assert response.status_code == 400, response.text
        assert param in response.json()["error"]["message"] + str(response.json()["error"]["param"])


def test_a_virtual_key_calls_its_models_and_is_metered_as_itself(
    gateway_url: str, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    made = generated(gateway_url, models=["gpt-3.5-turbo"], agent="coder")
    client = sdk(gateway_url, made["key"])
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.parse().choices[0].message.content == upstream.reply
    item = usage_item(aws["UsageTable"], raw.headers["x-request-id"])
    assert (item["key_id"], item["agent"]) == (made["token"], "coder")
    assert [model.id for model in client.models.list()] == ["gpt-3.5-turbo"]

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="priced", messages=MESSAGES)  # type: ignore[arg-type]
    assert denied.value.status_code == 403
    assert denied.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    assert "gpt-3.5-turbo" in denied.value.body["message"]  # type: ignore[index]


def test_unknown_blocked_expired_and_deleted_keys_get_401(gateway_url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway_url, "sk-never-issued-0123456789").models.list()

    blocked = generated(gateway_url)
    update = {"key": blocked["token"], "blocked": True}
    assert admin(gateway_url, "POST", "/key/update", json=update).status_code == 200
    expired = generated(gateway_url, duration="1s")
    time.sleep(1.1)
    deleted = generated(gateway_url)
    gone = admin(gateway_url, "POST", "/key/delete", json={"keys": [deleted["key"]]})
    assert gone.json() == {"deleted_keys": [deleted["key"]]}
    for made, words in ((blocked, "blocked"), (expired, "expired"), (deleted, "Invalid")):
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk(gateway_url, made["key"]).chat.completions.create(
                model="gpt-3.5-turbo",
                messages=MESSAGES,  # type: ignore[arg-type]
            )
        assert words in refused.value.body["message"]  # type: ignore[index]


def test_over_its_rpm_a_key_gets_429_with_retry_after_and_rate_limit_headers(
    gateway_url: str, aws: dict[str, str]
) -> None:
    made = generated(gateway_url, rpm_limit=2)
    client = sdk(gateway_url, made["key"])
    statuses, last = [], None
    for _ in range(3):
        try:
            client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)  # type: ignore[arg-type]
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            last = exc
    # A minute boundary between the calls would open a new window.
    assert statuses in ([200, 200, 429], [200, 200, 200])
    if last is None:
        return
    headers = last.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert last.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert last.body["type"] == "rate_limit_error"  # type: ignore[index]
    item = usage_item(aws["UsageTable"], headers["x-request-id"])
    assert (item["status"], item["error_code"]) == (429, "rate_limit_exceeded")


def test_under_budget_a_request_that_could_overspend_is_refused_and_key_info_shows_the_spend(
    gateway_url: str,
) -> None:
    # `priced` costs 0.001 per prompt token and 0.002 per completion token: 6 + 5 tokens. The
    # reservation (a prompt estimate of 14 tokens plus max_tokens) fits the budget once; the
    # second does not fit what is left, though the budget is not spent: a budget for ever can
    # only take a smaller request (400), a windowed one serves it again when the window resets
    # (429 with Retry-After, which agents wait out).
    for window, status in ((None, 400), ("1d", 429)):
        made = generated(gateway_url, max_budget=0.02, budget_duration=window)
        client = sdk(gateway_url, made["key"]).with_options(max_retries=0)
        client.chat.completions.create(model="priced", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="priced", messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
        assert refused.value.status_code == status
        code = "request_exceeds_limit" if window is None else "budget_exceeded"
        assert refused.value.body["code"] == code  # type: ignore[index]
        assert "$0.004000 left" in refused.value.body["message"]  # type: ignore[index]
        if window:
            assert 0 < int(refused.value.response.headers["retry-after"]) <= 86_400
    info = admin(gateway_url, "GET", "/key/info", params={"key": made["key"]}).json()["info"]
    assert info["spend"] == pytest.approx(0.016)
    assert info["remaining_budget"] == pytest.approx(0.004)


def test_a_deployment_over_its_own_rpm_is_refused_for_every_key(
    gateway_for: Callable[..., str],
) -> None:
    url = gateway_for(LIMITED_CONFIG)
    first, second = generated(url), generated(url)
    statuses = []
    for made in (first, second, first):
        try:
            sdk(url, made["key"]).chat.completions.create(model="capped", messages=MESSAGES)  # type: ignore[arg-type]
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            assert "capped" in exc.body["message"]  # type: ignore[index]
            assert exc.response.headers["x-ratelimit-limit-requests"] == "2"
            assert int(exc.response.headers["retry-after"]) >= 1
    assert statuses in ([200, 200, 429], [200, 200, 200])


def test_the_cli_manages_keys_against_the_gateway(gateway_url: str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "llm_proxy.cli",
                "--url",
                gateway_url,
                "--master-key",
                MASTER_KEY,
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )

    created = cli("keys", "create", "--agent", "coder", "--models", "gpt-4", "--rpm", "60")
    assert created.returncode == 0, created.stderr
    assert "not shown again" in created.stderr
    made = json.loads(created.stdout)
    assert (made["metadata"]["agent"], made["models"], made["rpm_limit"]) == (
        "coder",
        ["gpt-4"],
        60,
    )
    info = cli("keys", "info", made["token"])
    assert json.loads(info.stdout)["info"]["rpm_limit"] == 60
    assert made["key"] not in cli("keys", "list").stdout
    assert cli("keys", "update", made["key"], "--tpm", "1000").returncode == 0
    assert json.loads(cli("keys", "info", made["key"]).stdout)["info"]["tpm_limit"] == 1000
    assert cli("keys", "delete", made["key"]).returncode == 0
    missing = cli("keys", "info", made["token"])
    assert missing.returncode == 1 and "404" in missing.stderr


def spend_items(aws: dict[str, str], token: str) -> list[dict[str, Any]]:
    items = boto3.resource("dynamodb").Table(aws["CountersTable"]).scan()["Items"]
    return [item for item in items if str(item["counter_id"]).startswith(f"key#{token}#spend")]


def test_spend_is_settled_to_the_real_cost(gateway_url: str, aws: dict[str, str]) -> None:
    made = generated(gateway_url, max_budget=10)
    sdk(gateway_url, made["key"]).chat.completions.create(
        model="priced",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=50,
    )
    (item,) = spend_items(aws, made["token"])
    # Reserved: 6 prompt + 50 completion tokens; settled: 6 + 5.
    assert item["spend"] == Decimal("0.016")
