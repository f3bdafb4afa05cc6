"""What the gateway does when a dependency or its own set-up is wrong: clear errors, no crash
loop, nothing half-written. AWS is the moto server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient
from llm_proxy.config import load_config
from llm_proxy.gateway import Gateway
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.settings import ApiSettings

from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import free_port
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY, UPSTREAM_KEY, usage_item

CONFIG = REPO / "tests" / "fixtures" / "gateway.yaml"
BODY = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def build_client(
    api_module: object,
    settings: ApiSettings,
    config_path: Path = CONFIG,
    keys: ProviderKeys | None = None,
) -> TestClient:
    gateway = Gateway(settings, load_config(config_path), provider_keys=keys)
    return TestClient(api_module.create_app(gateway))  # type: ignore[attr-defined]


def settings(aws: dict[str, str], **overrides: str) -> ApiSettings:
    env = {
        "LLM_PROXY__ENV": "aws",
        "LLM_PROXY__SECRET_ID": aws["ProviderKeysSecret"],
        "LLM_PROXY__USAGE_TABLE": aws["UsageTable"],
        **overrides,
    }
    return ApiSettings.from_env(env)


def auth(key: str = MASTER_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_unreachable_secrets_manager_is_503_then_recovers(
    api: object, aws: dict[str, str], upstream: OpenAIUpstream
) -> None:
    closed = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{free_port()}")
    down = ProviderKeys(aws["ProviderKeysSecret"], 300, client=closed)
    client = build_client(api, settings(aws), keys=down)
    response = client.post("/v1/chat/completions", headers=auth(), json=BODY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dependency_unavailable"
    assert "provider-keys secret" in response.json()["error"]["message"]
    assert client.get("/health").status_code == 200
    assert client.get("/health/readiness").status_code == 503

    down._client, down._provider = boto3.client("secretsmanager"), None
    assert client.post("/v1/chat/completions", headers=auth(), json=BODY).status_code == 200


def test_unknown_secret_id_is_503_naming_the_cause(api: object, aws: dict[str, str]) -> None:
    client = build_client(api, settings(aws, LLM_PROXY__SECRET_ID="no/such-secret"))
    response = client.get("/v1/models", headers=auth())
    assert response.status_code == 503
    assert "ResourceNotFoundException" in response.json()["error"]["message"]


def test_failed_usage_write_does_not_fail_the_response(
    api: object, aws: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client = build_client(api, settings(aws, LLM_PROXY__USAGE_TABLE="no-such-table"))
    response = client.post("/v1/chat/completions", headers=auth(), json=BODY)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "A mock reply."
    assert client.get("/health/readiness").json()["checks"]["usage_table"].startswith("unreachable")


def test_deployed_function_refuses_a_publicly_known_master_key(
    api: object, aws: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG.read_text().replace(
            "master_key: os.environ/LLM_PROXY__MASTER_KEY", "master_key: sk-1234"
        )
    )
    deployed = build_client(api, settings(aws), config_path=config)
    response = deployed.get("/v1/models", headers=auth("sk-1234"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "master_key_insecure"
    assert "sk-1234" not in response.text

    local = build_client(api, settings(aws, LLM_PROXY__ENV="local"), config_path=config)
    assert local.get("/v1/models", headers=auth("sk-1234")).status_code == 200


def test_request_id_comes_from_api_gateway_when_present(api: object, aws: dict[str, str]) -> None:
    client = build_client(api, settings(aws))
    response = client.post("/v1/chat/completions", headers=auth(), json=BODY)
    generated = response.headers["x-request-id"]
    assert len(generated) == 32
    assert usage_item(aws["UsageTable"], generated)["status"] == 200


def test_detailed_debug_logs_requests_but_never_a_key(
    api: object,
    aws: dict[str, str],
    upstream: OpenAIUpstream,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import logging

    from litellm._logging import _disable_debugging
    from llm_proxy.logs import LITELLM_LOGGERS, SERVICE

    try:
        client = build_client(api, settings(aws, LLM_PROXY__DETAILED_DEBUG="true"))
        body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
        response = client.post("/v1/chat/completions", headers=auth(), json=body)
        assert response.status_code == 200
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    finally:
        _disable_debugging()
        for name in (SERVICE, *LITELLM_LOGGERS):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(SERVICE).setLevel(logging.INFO)
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert "POST Request Sent from LiteLLM" in output or "litellm.acompletion" in output
    assert UPSTREAM_KEY not in output
    assert MASTER_KEY not in output


def test_rotated_provider_key_is_used_after_the_secret_cache_expires(
    api: object, aws: dict[str, str], upstream: OpenAIUpstream
) -> None:
    secrets = boto3.client("secretsmanager")
    original = secrets.get_secret_value(SecretId=aws["ProviderKeysSecret"])["SecretString"]
    rotated = json.loads(original) | {"OPENAI_API_KEY": "sk-rotated-key-0000000001"}
    client = build_client(api, settings(aws, LLM_PROXY__SECRET_TTL_S="0"))
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    try:
        assert client.post("/v1/chat/completions", headers=auth(), json=body).status_code == 200
        secrets.put_secret_value(
            SecretId=aws["ProviderKeysSecret"], SecretString=json.dumps(rotated)
        )
        response = client.post("/v1/chat/completions", headers=auth(), json=body)
    finally:
        secrets.put_secret_value(SecretId=aws["ProviderKeysSecret"], SecretString=original)
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-rotated-key-0000000001"
    # The double only knows the old key: the rotation reached the provider call.
    assert response.status_code == 502
    assert "sk-rotated-key-0000000001" not in response.text


def test_an_unexpected_error_is_an_openai_shaped_500_with_request_id(
    api: object, aws: dict[str, str]
) -> None:
    gateway = Gateway(settings(aws), load_config(CONFIG))
    app = api.create_app(gateway)  # type: ignore[attr-defined]

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"bug while holding {MASTER_KEY}")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"]
    assert MASTER_KEY not in response.text
