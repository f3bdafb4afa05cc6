"""The stack the gateway benches run against, on loopback: moto in its own process with the
template's resources, the OpenAI-format upstream double, and the api function's module served
by uvicorn, imported with the deployed function's environment."""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.aws import REPO_ROOT, LocalAWS, local_aws
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import BackgroundServer, serving

API_APP = REPO_ROOT / "functions" / "api" / "app.py"

MASTER_KEY = "sk-bench-master-0123456789abcdef0123"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
NAMES = {"UsageTable": "bench-usage", "ProviderKeysSecret": "bench/provider-keys"}
MODEL = "gpt-3.5-turbo"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Say hello in one sentence."}]

# One deployment on the double: the route under test, and nothing that logs warnings at init.
GATEWAY_CONFIG = """\
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: os.environ/TEST_OPENAI_BASE
      api_key: os.environ/OPENAI_API_KEY
router_settings:
  num_retries: 0
general_settings:
  master_key: os.environ/LLM_PROXY__MASTER_KEY
"""

# Of the api function's variables, the ones every bench's gateway gets: no rollups table and
# no dead-letter queue, so its usage transaction holds the usage Put only.
API_VARIABLES = ("LLM_PROXY__SECRET_ID", "LLM_PROXY__USAGE_TABLE")


@dataclass(frozen=True)
class Stack:
    """Where the running stack listens, and the environment the api function imports with."""

    upstream: OpenAIUpstream
    gateway_url: str
    upstream_key: str
    master_key: str
    api_env: dict[str, str]
    # The served app's gateway, to measure it also with the usage write before the response.
    gateway: Any

    @property
    def upstream_url(self) -> str:
        return self.upstream.base_url


def api_env(
    aws: LocalAWS, config_path: Path, upstream_url: str, variables: Sequence[str] = ()
) -> dict[str, str]:
    """The deployed function's environment, pointed at the local stack: API_VARIABLES and
    `variables` of the variables template.yaml gives the api function."""
    function_env = aws.function_env("ApiFunction")
    return {
        **aws.env,
        "LLM_PROXY__ENV": "aws",
        "LLM_PROXY__CONFIG_PATH": str(config_path),
        **{name: function_env[name] for name in (*API_VARIABLES, *variables)},
        "TEST_OPENAI_BASE": f"{upstream_url}/v1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


@contextmanager
def _environ(values: Mapping[str, str], drop: Sequence[str] = ()) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    for name in drop:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _import_api(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, API_APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _silence_request_logs() -> None:
    # The app logs one JSON line per request to stdout; keep the formatting cost (it is part of
    # the request path) but not the output, so the table stays readable.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    for handler in logging.getLogger("llm-proxy").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


@contextmanager
def bench_stack(config: str = GATEWAY_CONFIG, variables: Sequence[str] = ()) -> Iterator[Stack]:
    """The stack, with the gateway serving `config`. `variables` names more of the api
    function's variables (the keys table, say) to give the app."""
    with ExitStack() as running, tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp:
        # moto in its own process: in-process it would compete with the gateway for the GIL
        # and charge the usage write far more than a real DynamoDB round trip costs.
        provider_keys = {"OPENAI_API_KEY": UPSTREAM_KEY, "LLM_PROXY__MASTER_KEY": MASTER_KEY}
        aws = running.enter_context(local_aws(provider_keys, NAMES, in_process=False))
        double = running.enter_context(serving(OpenAIUpstream(api_key=UPSTREAM_KEY)))

        config_path = Path(tmp) / "gateway.yaml"
        config_path.write_text(config, encoding="utf-8")
        env = api_env(aws, config_path, double.base_url, variables)
        # The master key must come from the secret, as deployed.
        running.enter_context(_environ(env, drop=["LLM_PROXY__MASTER_KEY"]))
        api = _import_api("api_app_bench")
        _silence_request_logs()
        gateway = BackgroundServer(api.app).start()
        running.callback(gateway.stop)

        yield Stack(double, gateway.url, UPSTREAM_KEY, MASTER_KEY, env, api.gateway)
