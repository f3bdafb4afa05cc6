"""Secrets Manager out of reach: the last good provider-keys secret keeps the gateway serving
(a warning logged, `stale` set) up to its maximum staleness, and 503 past it.

Secrets Manager is the moto server behind a loopback forwarder; stopping the forwarder closes
its port, as an unreachable endpoint would."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import httpx
import pytest
from botocore.config import Config
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from llm_proxy.config import load_config
from llm_proxy.gateway import Gateway
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.settings import ApiSettings

from devstack.server import BackgroundServer
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

CONFIG = REPO / "tests" / "fixtures" / "gateway.yaml"
BODY = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
SERVING_STALE = "provider-keys secret unreadable; serving the last good value"


class SecretsManagerLink:
    """Secrets Manager on a loopback port that forwards to moto until it is cut."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.server: BackgroundServer | None = None
        self.port: int | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/")
        async def forward(request: Request) -> Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    self.upstream, content=await request.body(), headers=headers
                )
            return Response(
                answer.content, answer.status_code, media_type=answer.headers.get("content-type")
            )

        return app

    def up(self) -> None:
        self.server = BackgroundServer(self.app(), port=self.port).start()
        self.port = self.server.port

    def cut(self) -> None:
        assert self.server is not None
        self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def link(aws: dict[str, str]) -> Iterator[SecretsManagerLink]:
    link = SecretsManagerLink(aws["endpoint"])
    link.up()
    yield link
    link.cut()


def provider_keys(
    aws: dict[str, str], link: SecretsManagerLink, ttl_s: int, max_staleness_s: int = 60
) -> ProviderKeys:
    client = boto3.client(
        "secretsmanager", endpoint_url=link.url, config=Config(retries={"max_attempts": 1})
    )
    return ProviderKeys(
        aws["ProviderKeysSecret"], ttl_s, client=client, max_staleness_s=max_staleness_s
    )


def gateway(api: object, aws: dict[str, str], keys: ProviderKeys) -> TestClient:
    settings = ApiSettings.from_env(
        {
            "LLM_PROXY__ENV": "aws",
            "LLM_PROXY__SECRET_ID": aws["ProviderKeysSecret"],
            "LLM_PROXY__USAGE_TABLE": aws["UsageTable"],
        }
    )
    app = api.create_app(Gateway(settings, load_config(CONFIG), provider_keys=keys))  # type: ignore[attr-defined]
    return TestClient(app)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_the_last_good_secret_serves_until_max_staleness_then_503(
    api: object, aws: dict[str, str], link: SecretsManagerLink, caplog: pytest.LogCaptureFixture
) -> None:
    keys = provider_keys(aws, link, ttl_s=1, max_staleness_s=4)
    client = gateway(api, aws, keys)
    assert client.post("/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
    # The last good value was read by now (at the latest): its staleness counts from before.
    read_at = time.time()
    assert not keys.stale

    link.cut()
    time.sleep(1.2)  # past the TTL: the next request must read the secret, and cannot
    caplog.clear()
    response = client.post("/v1/chat/completions", headers=AUTH, json=BODY)
    assert response.status_code == 200, response.text
    assert keys.stale and keys.stale_since is not None
    assert SERVING_STALE in warnings(caplog)
    # A forced read (the readiness probe's) that fails keeps the last good value.
    assert keys.get(force=True)["LLM_PROXY__MASTER_KEY"] == MASTER_KEY
    assert client.get("/v1/models", headers=AUTH).status_code == 200

    time.sleep(max(read_at + 4.2 - time.time(), 0))
    response = client.post("/v1/chat/completions", headers=AUTH, json=BODY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dependency_unavailable"
    assert "provider-keys secret" in response.json()["error"]["message"]
    assert MASTER_KEY not in response.text


def test_a_stale_secret_is_fresh_again_once_secrets_manager_answers(
    api: object, aws: dict[str, str], link: SecretsManagerLink
) -> None:
    keys = provider_keys(aws, link, ttl_s=1, max_staleness_s=60)
    client = gateway(api, aws, keys)
    assert client.post("/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
    link.cut()
    time.sleep(1.2)
    assert client.post("/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
    assert keys.stale

    link.up()
    time.sleep(1.2)  # the next read is due
    assert client.post("/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
    assert not keys.stale and keys.stale_since is None


def test_after_a_restore_the_last_good_secret_still_serves(
    api: object, aws: dict[str, str], link: SecretsManagerLink
) -> None:
    # A SnapStart restore forgets the client and the cache; a failed read after it falls back
    # to the value read before, within the same maximum staleness.
    keys = provider_keys(aws, link, ttl_s=300, max_staleness_s=60)
    client = gateway(api, aws, keys)
    assert client.post("/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
    link.cut()
    keys.reset()
    assert client.post("/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
    assert keys.stale


def test_without_a_good_read_an_unreachable_secret_is_still_503(
    api: object, aws: dict[str, str], link: SecretsManagerLink
) -> None:
    link.cut()
    keys = provider_keys(aws, link, ttl_s=1)
    response = gateway(api, aws, keys).post("/v1/chat/completions", headers=AUTH, json=BODY)
    assert response.status_code == 503
    assert not keys.stale
