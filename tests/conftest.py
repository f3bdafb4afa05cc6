"""Shared fixtures: a moto server and an OpenAI-format upstream on loopback, and the api
function's module imported against them exactly as Lambda would import it."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from llm_proxy.gateway import Gateway
from llm_proxy.settings import ApiSettings

from devstack.aws import LocalAWS, local_aws
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import BackgroundServer, serving

REPO = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-test-master-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-secret-key-42"
WRONG_UPSTREAM_KEY = "sk-upstream-wrong-key-99"
TEST_NAMES = {
    "UsageTable": "test-usage",
    "KeysTable": "test-keys",
    "CountersTable": "test-counters",
    "CacheTable": "test-cache",
    "ProviderKeysSecret": "test/provider-keys",
}
# The gpt-3.5-turbo deployment on the OpenAI-format double, as a model_list entry.
DOUBLE_DEPLOYMENT = """\
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: os.environ/TEST_OPENAI_BASE
      api_key: os.environ/OPENAI_API_KEY
"""
# A catalogue of that deployment alone: no retries, the master key from the secret.
ONE_DEPLOYMENT_CONFIG = f"""\
model_list:
{DOUBLE_DEPLOYMENT}router_settings:
  num_retries: 0
general_settings:
  master_key: os.environ/LLM_PROXY__MASTER_KEY
"""
# Every provider's key as stored in the test stack's provider-keys secret.
PROVIDER_KEYS = {
    "OPENAI_API_KEY": UPSTREAM_KEY,
    "ANTHROPIC_API_KEY": "sk-ant-test-secret-key-07",
    "AZURE_API_KEY": "azure-test-secret-key-0815",
    "OPENROUTER_API_KEY": "sk-or-test-secret-key-66",
    "DEEPSEEK_API_KEY": "sk-deepseek-test-secret-key-5",
    "WRONG_OPENAI_KEY": WRONG_UPSTREAM_KEY,
    # The existing LiteLLM proxy of LLM_PROXY__LLM_MODE=litellm is the OpenAI-format double.
    "LLM_PROXY__LITELLM_API_KEY": UPSTREAM_KEY,
    "LLM_PROXY__MASTER_KEY": MASTER_KEY,
}


# The tests serve the api and key management from one process, as `make dev` does, with the
# OpenAPI schema on (the schema tests read it).
ONE_PROCESS = {"LLM_PROXY__KEY_MANAGEMENT": "true", "LLM_PROXY__OPENAPI": "true"}


@pytest.fixture(scope="session")
def upstream() -> Iterator[OpenAIUpstream]:
    with serving(OpenAIUpstream(api_key=UPSTREAM_KEY)) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture(scope="session")
def aws_stack() -> Iterator[LocalAWS]:
    """A moto server on a free loopback port with the template's resources in it (tables,
    secret, dead-letter queue, report bucket and topic), its endpoint in this process's
    environment."""
    with local_aws(PROVIDER_KEYS, TEST_NAMES) as stack:
        os.environ.update(stack.env)
        yield stack


@pytest.fixture(scope="session")
def aws(aws_stack: LocalAWS) -> dict[str, str]:
    """The endpoint, and the template's resources by logical id."""
    return {"endpoint": aws_stack.endpoint, **aws_stack.resources}


@pytest.fixture(scope="session")
def api(aws_stack: LocalAWS, upstream: OpenAIUpstream) -> ModuleType:
    """functions/api/app.py, imported with the deployed function's environment."""
    os.environ.update(
        LLM_PROXY__ENV="aws",
        LLM_PROXY__CONFIG_PATH=str(REPO / "tests" / "fixtures" / "gateway.yaml"),
        TEST_OPENAI_BASE=f"{upstream.base_url}/v1",
        **aws_stack.function_env("ApiFunction"),
        **ONE_PROCESS,
    )
    os.environ.pop("LLM_PROXY__MASTER_KEY", None)
    return import_api_module("api_app_under_test")


@pytest.fixture(scope="session")
def gateway_for(
    api: ModuleType, aws_stack: LocalAWS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., str]]:
    """Serve the api app with another config (YAML text, or None for the modes that need
    none) under uvicorn; returns its base URL.

    The gateway reads the session's provider-keys secret and writes the session's usage and
    rollup tables (dead letters to its queue), exactly like the deployed function; extra
    settings are `LLM_PROXY__*` overrides."""
    servers: list[BackgroundServer] = []
    folder = tmp_path_factory.mktemp("configs")

    def start(config_text: str | None, **overrides: str) -> str:
        env = {
            "LLM_PROXY__ENV": "aws",
            **aws_stack.function_env("ApiFunction"),
            **ONE_PROCESS,
            **overrides,
        }
        if config_text is not None:
            path = folder / f"config-{len(servers)}.yaml"
            path.write_text(config_text)
            env["LLM_PROXY__CONFIG_PATH"] = str(path)
        gateway = Gateway.from_settings(ApiSettings.from_env(env), api.DEFAULT_CONFIG)
        server = BackgroundServer(api.create_app(gateway)).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def import_api_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "functions" / "api" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gateway_url(api: ModuleType) -> Iterator[str]:
    server = BackgroundServer(api.app).start()
    yield server.url
    server.stop()


def usage_item(table: str, request_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The usage item for a request, read back from DynamoDB."""
    dynamodb = boto3.resource("dynamodb")
    deadline = time.monotonic() + timeout_s
    while True:
        item = dynamodb.Table(table).get_item(Key={"request_id": request_id}).get("Item")
        if item or time.monotonic() > deadline:
            assert item, f"no usage item for request {request_id}"
            return dict(item)
        time.sleep(0.05)


def streamed_reasoning(stream: Any) -> tuple[str, str]:
    """A chat stream's reasoning (its `reasoning_content` deltas) and its text."""
    reasoning, content = "", ""
    for chunk in stream:
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    return reasoning, content
