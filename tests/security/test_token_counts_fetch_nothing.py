"""The gateway counts a prompt's tokens itself (a key's admission, here; a stream without usage
counts the same way); an image in it counts at litellm's default size. litellm would otherwise
fetch a high-detail image's URL to measure it: a request the gateway would make on a client's
behalf, to any URL the client names (tests/support/image_host.py)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import NO_RETRIES, gateway_config, openai_double
from tests.support.image_host import image_host
from tests.support.stack import MASTER_KEY


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(gateway_config(openai_double("gpt-4o"), router_settings=NO_RETRIES))


def question(url: str) -> list[dict[str, object]]:
    part = {"type": "image_url", "image_url": {"url": f"{url}/cat.png", "detail": "high"}}
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]


def test_a_keys_admission_counts_an_image_without_fetching_it(
    gateway: str, upstream: OpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = httpx.post(
        f"{gateway}/key/generate",
        json={"tpm_limit": 100_000},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    key = made.json()["key"]
    with image_host(monkeypatch) as (url, fetched):
        body = {"model": "gpt-4o", "messages": question(url), "max_tokens": 10}
        reply = httpx.post(
            f"{gateway}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )

    assert reply.status_code == 200, reply.text
    assert fetched == []
