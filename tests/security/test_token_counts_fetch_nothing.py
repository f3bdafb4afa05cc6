"""The gateway counts a prompt's tokens itself (a key's admission, a stream without usage); an
image in it counts at litellm's default size. litellm would otherwise fetch a high-detail
image's URL to measure it: a request the gateway would make on a client's behalf, to any URL
the client names. litellm's own guard refuses loopback hosts, so it is lifted here, to see that
no fetch is made at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import litellm
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import BackgroundServer
from tests.support.configs import NO_RETRIES, gateway_config, openai_double
from tests.support.stack import MASTER_KEY


@pytest.fixture
def image_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    fetched: list[str] = []
    images = FastAPI()

    @images.get("/{name}")
    async def image(name: str) -> Response:
        fetched.append(name)
        return Response(b"", media_type="image/png")

    monkeypatch.setattr(litellm, "user_url_validation", False)
    server = BackgroundServer(images).start()
    yield server.url, fetched
    server.stop()


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(gateway_config(openai_double("gpt-4o"), router_settings=NO_RETRIES))


def question(url: str) -> list[dict[str, object]]:
    part = {"type": "image_url", "image_url": {"url": f"{url}/cat.png", "detail": "high"}}
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]


def test_a_keys_admission_counts_an_image_without_fetching_it(
    gateway: str, upstream: OpenAIUpstream, image_host: tuple[str, list[str]]
) -> None:
    url, fetched = image_host
    made = httpx.post(
        f"{gateway}/key/generate",
        json={"tpm_limit": 100_000},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    key = made.json()["key"]
    body = {"model": "gpt-4o", "messages": question(url), "max_tokens": 10}

    reply = httpx.post(
        f"{gateway}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )

    assert reply.status_code == 200, reply.text
    assert fetched == []
