"""The stack the gateway benches run against: the one `make dev` runs (the local moto server in
a process of its own, the api module under uvicorn in another, given every variable
template.yaml gives the api function: usage, rollups, keys, counters, cache, queues), with a
catalogue whose one deployment is the OpenAI-format upstream double, served in this process."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.aws import LocalAWS, local_aws
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.gateway import GatewayProcess, gateway_env, gateway_process
from devstack.server import serving
from scripts.bench.load import Target

MASTER_KEY = "sk-bench-master-0123456789abcdef0123"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"

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


@dataclass(frozen=True)
class Stack:
    upstream: OpenAIUpstream
    aws: LocalAWS
    gateway: GatewayProcess
    # The gateway process's environment (`make dev`'s, see devstack.gateway.gateway_env).
    env: dict[str, str]
    upstream_key: str = UPSTREAM_KEY
    master_key: str = MASTER_KEY

    @property
    def upstream_url(self) -> str:
        return self.upstream.base_url

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    @property
    def api_env(self) -> dict[str, str]:
        """The environment the api module imports with in the cold-init figures: the deployed
        function's (`LLM_PROXY__ENV=aws`)."""
        return {**self.env, "LLM_PROXY__ENV": "aws"}

    def direct(self) -> Target:
        return Target(
            "direct",
            f"{self.upstream_url}/v1/chat/completions",
            {"Authorization": f"Bearer {self.upstream_key}"},
        )

    def target(self, name: str = "gateway", gateway: GatewayProcess | None = None) -> Target:
        served = gateway or self.gateway
        return Target(
            name,
            f"{served.url}/v1/chat/completions",
            {"Authorization": f"Bearer {self.master_key}"},
            served.pid,
        )

    def another_gateway(
        self, variables: Mapping[str, str]
    ) -> AbstractContextManager[GatewayProcess]:
        """One more gateway process on the same stack, with `variables` added."""
        return gateway_process({**self.env, **variables})


def _own_environment() -> dict[str, str]:
    """This process's environment without settings that would reach the gateway: the local
    stack's AWS variables and the gateway's settings are the bench's own."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "LLM_PROXY__")) and name != "OPENAI_API_KEY"
    }


@contextmanager
def bench_stack(
    config: str = GATEWAY_CONFIG,
    *,
    variables: Mapping[str, str] | None = None,
    profile: Path | None = None,
) -> Iterator[Stack]:
    """The stack, with the gateway serving `config`; `variables` added to (or, empty,
    removing) the gateway's settings; `profile` as devstack.gateway.profile_on_signals."""
    with ExitStack() as running, tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp:
        # The master key comes from the provider-keys secret, as deployed.
        provider_keys = {"OPENAI_API_KEY": UPSTREAM_KEY, "LLM_PROXY__MASTER_KEY": MASTER_KEY}
        aws = running.enter_context(local_aws(provider_keys, in_process=False))
        double = running.enter_context(serving(OpenAIUpstream(api_key=UPSTREAM_KEY)))
        config_path = Path(tmp) / "gateway.yaml"
        config_path.write_text(config, encoding="utf-8")
        settings = {
            "LLM_PROXY__CONFIG_PATH": str(config_path),
            "TEST_OPENAI_BASE": f"{double.base_url}/v1",
        }
        env = gateway_env(aws, _own_environment() | settings) | dict(variables or {})
        gateway = running.enter_context(gateway_process(env, profile=profile))
        yield Stack(double, aws, gateway, env)
