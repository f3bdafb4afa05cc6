"""API Gateway's integration timeout: provider calls stop before it, so the client gets the
gateway's own metered 504 rather than API Gateway's bare one."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from llm_proxy.settings import ApiSettings

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY, usage_item

CONFIG = (REPO / "tests" / "fixtures" / "gateway.yaml").read_text()
BODY = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


def test_provider_deadline_sits_below_the_integration_timeout() -> None:
    assert ApiSettings.from_env({}).provider_deadline_s == 27.0
    settings = ApiSettings.from_env({"LLM_PROXY__API_TIMEOUT_MS": "60000"})
    assert settings.provider_deadline_s == 58.0
    assert ApiSettings.from_env({"LLM_PROXY__API_TIMEOUT_MS": "0"}).provider_deadline_s is None


def test_a_provider_slower_than_the_api_timeout_gets_the_gateways_504(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    url = gateway_for(CONFIG, LLM_PROXY__API_TIMEOUT_MS="3000", LLM_PROXY__TIMEOUT_MARGIN_MS="1000")
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    # A first request does litellm's lazy imports (SnapStart's warm-up does them in Lambda).
    warm = httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
    assert warm.status_code == 200
    upstream.fail_next(Fault(delay_s=6.0), times=3)
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=headers, timeout=15)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "provider_timeout"
    # Cut at 2 s, answered (and metered) before API Gateway would give up at 3 s.
    assert 2.0 <= elapsed < 3.0
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    assert item["status"] == 504
