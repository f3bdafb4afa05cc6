"""Shared fixtures: a moto server and an OpenAI-format upstream on loopback, and the api
function's module imported against them exactly as Lambda would import it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
from llm_proxy.gateway import Gateway
from llm_proxy.settings import ApiSettings

from devstack.aws import LocalAWS, local_aws
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import BackgroundServer, serving, stop_all
from tests.support.functions import import_api_module
from tests.support.paths import REPO
from tests.support.stack import ONE_PROCESS, PROVIDER_KEYS, TEST_NAMES, UPSTREAM_KEY


@pytest.fixture(scope="session")
def upstream() -> Iterator[OpenAIUpstream]:
    with serving(OpenAIUpstream(api_key=UPSTREAM_KEY)) as double:
        yield double


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the session's double gets it fresh and leaves it fresh: the tests that
    reach it only through a gateway's config see its own reply, no faults, no delay."""
    if "upstream" not in request.fixturenames:
        yield
        return
    double: OpenAIUpstream = request.getfixturevalue("upstream")
    double.reset()
    yield
    double.reset()


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
    stop_all(servers)


@pytest.fixture(scope="session")
def gateway_url(api: ModuleType) -> Iterator[str]:
    server = BackgroundServer(api.app).start()
    yield server.url
    server.stop()
