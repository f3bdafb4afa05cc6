"""SnapStart hooks, called directly (`snapshot_restore_py` exists only in Lambda's runtime)."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import litellm
import pytest
from fastapi.testclient import TestClient
from llm_proxy import aws as aws_clients
from llm_proxy import snapstart
from llm_proxy.config import load_config
from llm_proxy.gateway import Gateway
from llm_proxy.settings import ApiSettings

from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

CONFIG = REPO / "tests" / "fixtures" / "gateway.yaml"
BODY = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


def make_gateway(aws_names: dict[str, str]) -> Gateway:
    settings = ApiSettings.from_env(
        {
            "LLM_PROXY__ENV": "aws",
            "LLM_PROXY__SECRET_ID": aws_names["ProviderKeysSecret"],
            "LLM_PROXY__USAGE_TABLE": aws_names["UsageTable"],
        }
    )
    return Gateway(settings, load_config(CONFIG))


def test_hooks_register_only_where_the_runtime_provides_them(
    api: ModuleType, aws: dict[str, str]
) -> None:
    gateway = make_gateway(aws)
    registered: dict[str, Any] = {}
    runtime = SimpleNamespace(
        register_before_snapshot=lambda hook: registered.setdefault("before", hook),
        register_after_restore=lambda hook: registered.setdefault("after", hook),
    )
    assert snapstart.register(gateway, api.app, runtime) is True
    assert set(registered) == {"before", "after"}
    # Outside Lambda there is no snapshot_restore_py: nothing to register, no error.
    assert snapstart.register(gateway, api.app) is False


def test_before_snapshot_warms_and_after_restore_makes_unique_state_again(
    api: ModuleType,
    aws: dict[str, str],
    upstream: OpenAIUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = make_gateway(aws)
    app = api.create_app(gateway)
    snapstart.before_snapshot(gateway, app)
    # Every rehearsed path (chat, stream, messages, count_tokens, responses) answered.
    assert "warm-up request failed" not in caplog.text
    assert upstream.requests == []  # no provider was called
    router = gateway.model_router()
    secrets_client = aws_clients.client("secretsmanager")
    litellm.in_memory_llm_clients_cache.set_cache("probe", object())

    snapstart.after_restore(gateway)

    assert gateway.model_router() is not router  # a new Router, with new HTTP clients
    assert aws_clients.client("secretsmanager") is not secrets_client
    # The request path's clients were made during the restore, not left to the first request.
    assert aws_clients.client.cache_info().currsize >= 3
    assert litellm.in_memory_llm_clients_cache.get_cache("probe") is None
    # The Router's lookups and each DynamoDB operation were made, and the operations wrote
    # nothing: botocore's Stubber answered them.
    assert "left to the first request" not in caplog.text
    usage = boto3.resource("dynamodb").Table(aws["UsageTable"])
    assert "Item" not in usage.get_item(Key={"request_id": "snapshot-rehearsal"})
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    response = client.post("/v1/chat/completions", headers=headers, json=BODY)
    assert response.status_code == 200, response.text
    assert upstream.requests, "the restored gateway reached the provider"
