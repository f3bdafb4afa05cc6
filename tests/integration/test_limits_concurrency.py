"""Limits that hold across containers: two gateway processes (two Lambda containers, in
effect) share one moto DynamoDB, and threads send more requests than a key's limit through
both at once. Exactly `limit` requests may be admitted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.processes import wait_until_answered
from devstack.server import free_port
from tests.support.configs import MASTER_KEY_FROM_SECRET, gateway_config, openai_double
from tests.support.gateway_http import get, managed, new_key, post
from tests.support.paths import REPO

# `budgeted` prices output tokens only, at a round price: the double answers 5 tokens, so
# 0.005 a request.
CONFIG = gateway_config(
    openai_double(),
    openai_double("budgeted", input_cost_per_token=0, output_cost_per_token=0.001),
    router_settings={"num_retries": 0, "cooldown_time": 0},
    general_settings=MASTER_KEY_FROM_SECRET,
)
THREADS = 8
REQUESTS = 24
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def gateways(
    api: Any, upstream: OpenAIUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two gateway processes serving functions/api/app.py under uvicorn."""
    config = tmp_path_factory.mktemp("concurrency") / "config.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "LLM_PROXY__CONFIG_PATH": str(config)}
    processes, urls = [], []
    for _ in range(2):
        port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "app:app",
            "--app-dir", str(REPO / "functions" / "api"),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
        processes.append(subprocess.Popen(command, env=env, cwd=REPO))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_until_answered(f"{url}/health")
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def _flood(urls: list[str], key: str | list[str], body: dict[str, Any]) -> Counter[int]:
    """REQUESTS requests from THREADS threads, alternating between the two processes (and
    between the keys, when there are several)."""
    keys = [key] if isinstance(key, str) else key

    def send(index: int) -> tuple[int, dict[str, Any]]:
        response = httpx.post(
            f"{urls[index % len(urls)]}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {keys[index // len(urls) % len(keys)]}"},
            timeout=60,
        )
        return response.status_code, response.json()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(send, range(REQUESTS)))
    for status, answer in results:
        assert status in (200, 429), answer
    return Counter(status for status, _ in results)


def _inside_one_minute() -> None:
    """Rate windows are calendar minutes: start early in one, so the flood stays inside it."""
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)


def test_exactly_rpm_requests_are_admitted_across_two_processes(
    gateways: list[str], upstream: OpenAIUpstream
) -> None:
    key = new_key(gateways[0], rpm_limit=10)
    _inside_one_minute()
    before = len(upstream.requests)
    statuses = _flood(gateways, key, {"model": "gpt-3.5-turbo", "messages": MESSAGES})
    assert statuses == Counter({200: 10, 429: REQUESTS - 10})
    assert len(upstream.requests) - before == 10


def test_exactly_the_budget_is_admitted_across_two_processes(gateways: list[str]) -> None:
    # Four requests of 0.005 each; max_tokens makes the reservation the real cost.
    key = new_key(gateways[1], max_budget=0.02)
    body = {"model": "budgeted", "messages": MESSAGES, "max_tokens": 5}
    statuses = _flood(gateways, key, body)
    assert statuses == Counter({200: 4, 429: REQUESTS - 4})
    info = managed(get(gateways[0], "/key/info", key=key))["info"]
    assert info["spend"] == pytest.approx(0.02)
    assert info["remaining_budget"] == pytest.approx(0.0)


# Four requests of 0.005 each fit every budget below; max_tokens makes each reservation the
# request's real cost, so exactly four are admitted whichever keys and processes send them.
BUDGETED = {"model": "budgeted", "messages": MESSAGES, "max_tokens": 5}


def test_a_teams_budget_holds_across_its_keys_and_two_processes(gateways: list[str]) -> None:
    team = managed(post(gateways[0], "/team/new", {"max_budget": 0.02}))["team_id"]
    keys = [new_key(gateways[index % 2], team_id=team) for index in range(3)]
    assert _flood(gateways, keys, BUDGETED) == Counter({200: 4, 429: REQUESTS - 4})
    info = managed(get(gateways[1], "/team/info", team_id=team))
    assert info["team_info"]["spend"] == pytest.approx(0.02)


def test_a_users_budget_holds_across_their_keys_and_two_processes(gateways: list[str]) -> None:
    user = managed(post(gateways[0], "/user/new", {"max_budget": 0.02, "auto_create_key": False}))[
        "user_id"
    ]
    keys = [new_key(gateways[index % 2], user_id=user) for index in range(3)]
    assert _flood(gateways, keys, BUDGETED) == Counter({200: 4, 429: REQUESTS - 4})
    info = managed(get(gateways[1], "/user/info", user_id=user))
    assert info["user_info"]["spend"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    "fields",
    [
        {"model_max_budget": {"budgeted": {"budget_limit": 0.02, "time_period": "1d"}}},
        {
            "budget_limits": [
                {"budget_duration": "1h", "max_budget": 0.02},
                {"budget_duration": "30d", "max_budget": 1},
            ]
        },
    ],
    ids=["per-model", "windows"],
)
def test_per_model_and_window_budgets_hold_across_two_processes(
    gateways: list[str], fields: dict[str, Any]
) -> None:
    key = new_key(gateways[0], **fields)
    assert _flood(gateways, key, BUDGETED) == Counter({200: 4, 429: REQUESTS - 4})
    assert managed(get(gateways[1], "/key/info", key=key))["info"]["spend"] == pytest.approx(0.02)
