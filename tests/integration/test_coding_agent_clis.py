"""The coding-agent CLIs that speak OpenAI's chat completions, configured as their own docs show
an OpenAI-compatible provider (no `limit` for the model), complete a tool-using task through
the gateway, on an OpenAI-format and on an Anthropic deployment: OpenCode (`opencode run`),
Kilo Code's CLI (`kilo run`), and Cline's (`cline`, the `openai` provider). `make clients`
installs them under .tools/clients; skipped where they are not.

Each asks for `max_tokens: 32000` (gpt-4o answers at most 16384: the gateway serves the request
with its limit, docs/keys-and-limits.md#output-limits); the model asks for the CLI's file-read
tool on a file in the working directory, the CLI reads it and sends the result back, and the
answer quotes it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import free_port, serving
from tests.support.agent_clis import NOTE, client
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS

PROMPT = "Read note.txt and tell me what it says"
GPT_4O_LIMIT = 16384


@dataclass(frozen=True)
class Cli:
    """A CLI: its file-read tool and that tool's input for a path, and how it is run."""

    name: str
    read_tool: str
    read_input: Callable[[str], dict[str, Any]]
    run: Callable[[str, str, Path], subprocess.CompletedProcess[str]]


def sandbox(home: Path) -> dict[str, str]:
    """The CLI's home, config, data and cache under the test's directory, which is its working
    directory (OpenCode and Kilo take it from PWD)."""
    return {
        "HOME": str(home),
        "PWD": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".data"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LLM_PROXY_KEY": MASTER_KEY,
    }


def run(command: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env={**os.environ, **sandbox(home), **env},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def opencode_config(url: str, model: str) -> dict[str, Any]:
    """OpenCode's (and Kilo's) custom provider, as their provider docs show it: the AI SDK's
    OpenAI-compatible package, the base URL and the key, and the model, with no `limit`."""
    return {
        "provider": {
            "llmproxy": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "LLM Proxy",
                "options": {"baseURL": f"{url}/v1", "apiKey": "{env:LLM_PROXY_KEY}"},
                "models": {model: {"name": model}},
            }
        },
        "model": f"llmproxy/{model}",
    }


def opencode(url: str, model: str, home: Path) -> subprocess.CompletedProcess[str]:
    (home / "opencode.json").write_text(json.dumps(opencode_config(url, model)))
    command = [client("opencode"), "run", "-m", f"llmproxy/{model}", PROMPT]
    return run(command, home, OPENCODE_CONFIG=str(home / "opencode.json"))


def kilo(url: str, model: str, home: Path) -> subprocess.CompletedProcess[str]:
    (home / "kilo.json").write_text(json.dumps(opencode_config(url, model)))
    command = [client("kilo"), "run", "-m", f"llmproxy/{model}", PROMPT]
    return run(command, home, KILO_CONFIG=str(home / "kilo.json"))


def cline(url: str, model: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`cline auth` with the OpenAI Compatible provider, then a task (auto-approved). Cline
    starts a hub daemon that outlives it: on a port of the test's own, stopped afterwards."""
    executable = client("cline")
    auth = [executable, "auth", "-p", "openai", "-k", MASTER_KEY, "-m", model, "-b", f"{url}/v1"]
    hub = {"CLINE_HUB_PORT": str(free_port())}
    try:
        done = run(auth, home, **hub)
        if done.returncode != 0:
            return done
        return run([executable, PROMPT], home, **hub)
    finally:
        stop_hub_daemons(home)


def stop_hub_daemons(home: Path) -> None:
    """Cline's hub daemons started for this working directory (their command line names it)."""
    for process in Path("/proc").iterdir():
        try:
            command = (process / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--cline-hub-daemon" in command and str(home).encode() in command:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(process.name), signal.SIGTERM)


CLIS = [
    Cli("opencode", "read", lambda path: {"filePath": path}, opencode),
    Cli("kilo", "read", lambda path: {"filePath": path}, kilo),
    Cli("cline", "read_files", lambda path: {"files": [{"path": path}]}, cline),
]


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], anthropic: AnthropicUpstream) -> str:
    return gateway_for(
        gateway_config(
            openai_double("gpt-4o"),
            deployment(
                "claude-sonnet-4-5",
                "anthropic/claude-sonnet-4-5",
                api_base=anthropic.base_url,
                api_key="os.environ/ANTHROPIC_API_KEY",
            ),
            router_settings=NO_RETRIES,
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )


@pytest.mark.parametrize("cli", CLIS, ids=lambda cli: cli.name)
def test_a_tool_using_task_on_an_openai_deployment(
    cli: Cli, url: str, upstream: OpenAIUpstream, tmp_path: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text(NOTE + "\n")
    upstream.call_tools, upstream.tool_name = True, cli.read_tool
    upstream.tool_input = cli.read_input(str(note))

    done = cli.run(url, "gpt-4o", tmp_path)

    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    asked = [r.body for r in upstream.requests if r.body.get("tools")]
    assert any(message["role"] == "tool" for message in asked[-1]["messages"])
    assert NOTE in str(asked[-1]["messages"])
    # Asked for 32000 tokens; served with gpt-4o's limit.
    assert {body.get("max_tokens") or body.get("max_completion_tokens") for body in asked} == {
        GPT_4O_LIMIT
    }
    assert NOTE in done.stdout


@pytest.mark.parametrize("cli", CLIS, ids=lambda cli: cli.name)
def test_a_tool_using_task_on_an_anthropic_deployment(
    cli: Cli, url: str, anthropic: AnthropicUpstream, tmp_path: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text(NOTE + "\n")
    anthropic.reset()
    anthropic.call_tools, anthropic.tool_name = True, cli.read_tool
    anthropic.tool_input = cli.read_input(str(note))

    done = cli.run(url, "claude-sonnet-4-5", tmp_path)

    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    asked = [r.body for r in anthropic.requests if r.body.get("tools")]
    last = asked[-1]["messages"][-1]["content"]
    results = [block for block in last if block.get("type") == "tool_result"]
    assert results and NOTE in str(results[0]["content"])
    assert NOTE in done.stdout
