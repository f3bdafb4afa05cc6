"""The agent CLIs themselves against a served gateway: Claude Code (`claude -p`, the Messages
API) and Codex CLI (`codex exec`, the Responses API through a custom model provider), from
the npm registry (`make clients` installs them under .tools/clients). Skipped where they are
not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY, REPO

CLIENTS = REPO / ".tools" / "clients" / "node_modules" / ".bin"
CONFIG = """\
model_list:
  - model_name: claude-sonnet-4-5
    litellm_params:
      model: openai/house-claude
      mock_response: "Hello from the gateway."
      input_cost_per_token: 0
      output_cost_per_token: 0
  - model_name: gpt-5.1-codex
    litellm_params:
      model: openai/house-codex
      mock_response: "Hello from the gateway."
      input_cost_per_token: 0
      output_cost_per_token: 0
router_settings:
  num_retries: 0
  model_group_alias:
    claude-haiku-4-5: claude-sonnet-4-5
general_settings:
  master_key: os.environ/LLM_PROXY__MASTER_KEY
"""


def client(name: str) -> str:
    found = shutil.which(name, path=str(CLIENTS)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (make clients)")
    return found


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_claude_code_answers_through_the_messages_api(url: str, tmp_path: Path) -> None:
    claude = client("claude")
    done = run(
        [claude, "-p", "Say hi", "--model", "claude-sonnet-4-5"],
        {
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_AUTH_TOKEN": MASTER_KEY,
            "HOME": str(tmp_path),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Hello from the gateway." in done.stdout


def test_codex_answers_through_the_responses_api(url: str, tmp_path: Path) -> None:
    codex = client("codex")
    home = tmp_path / "codex"
    home.mkdir()
    provider = (
        'model_providers.gateway={name="LLM Proxy", base_url="' + url + '/v1", '
        'env_key="LLM_PROXY_KEY", wire_api="responses"}'
    )
    done = run(
        [
            codex,
            "exec",
            "--skip-git-repo-check",
            "-c",
            "model_provider=gateway",
            "-c",
            provider,
            "-m",
            "gpt-5.1-codex",
            "Say hi",
        ],
        {"LLM_PROXY_KEY": MASTER_KEY, "CODEX_HOME": str(home), "HOME": str(tmp_path)},
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Hello from the gateway." in done.stdout
    assert "ERROR" not in done.stderr
