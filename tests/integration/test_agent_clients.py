"""The agent CLIs themselves against a served gateway, from the npm registry (`make clients`
installs them under .tools/clients; skipped where they are not): Claude Code (`claude -p`, the
Messages API) on a mock deployment and, running a tool with thinking on, on an Anthropic
deployment served by the double; Codex CLI (`codex exec`, the Responses API through a custom
model provider) on a mock deployment and, running a command, on an OpenAI deployment."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.base import RecordedRequest
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import serving
from tests.support.agent_clis import NOTE, client, run_client
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    deployment,
    gateway_config,
    openai_double,
)
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS

# Claude Code asks for its small model (for side tasks) under another name.
CLAUDE_CODE_ROUTING = {
    "num_retries": 0,
    "model_group_alias": {"claude-haiku-4-5": "claude-sonnet-4-5"},
}
CONFIG = gateway_config(
    deployment(
        "claude-sonnet-4-5",
        "openai/house-claude",
        mock_response="Hello from the gateway.",
        input_cost_per_token=0,
        output_cost_per_token=0,
    ),
    deployment(
        "gpt-5.1-codex",
        "openai/house-codex",
        mock_response="Hello from the gateway.",
        input_cost_per_token=0,
        output_cost_per_token=0,
    ),
    router_settings=CLAUDE_CODE_ROUTING,
    general_settings=MASTER_KEY_FROM_SECRET,
)


def tools_config(base: str) -> str:
    """Claude Code's model, and the small one it uses for side tasks, on an Anthropic
    deployment."""
    return gateway_config(
        deployment(
            "claude-sonnet-4-5",
            "anthropic/claude-sonnet-4-5",
            api_base=base,
            api_key="os.environ/ANTHROPIC_API_KEY",
            input_cost_per_token=0,
            output_cost_per_token=0,
        ),
        router_settings=CLAUDE_CODE_ROUTING,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


# Codex's model on an OpenAI deployment: the OpenAI double's Responses API.
CODEX_CONFIG = gateway_config(
    openai_double("gpt-5.1-codex"),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


def test_claude_code_answers_through_the_messages_api(url: str, tmp_path: Path) -> None:
    claude = client("claude")
    done = run_client(
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


@pytest.fixture(scope="module")
def claude_double() -> Iterator[AnthropicUpstream]:
    with serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"])) as double:
        yield double


@pytest.fixture(scope="module")
def tools_url(gateway_for: Callable[..., str], claude_double: AnthropicUpstream) -> str:
    return gateway_for(tools_config(claude_double.base_url))


def test_claude_code_runs_a_tool_through_the_messages_api(
    tools_url: str, claude_double: AnthropicUpstream, tmp_path: Path
) -> None:
    """The model thinks, then asks for Claude Code's Read tool on a file in the working
    directory; Claude Code runs it and sends the signed thinking block and the tool_result back
    through the gateway (the double refuses a thinking block it did not sign), and prints the
    answer that quotes the file."""
    claude = client("claude")
    note = tmp_path / "note.txt"
    note.write_text(NOTE + "\n")
    claude_double.reset()
    claude_double.call_tools = True
    claude_double.tool_name = "Read"
    claude_double.tool_input = {"file_path": str(note)}
    done = run_client(
        [
            claude,
            "-p",
            "Read note.txt and tell me what it says",
            "--model",
            "claude-sonnet-4-5",
            "--tools",
            "Read",
            "--allowedTools",
            "Read",
            "--permission-mode",
            "dontAsk",
        ],
        {
            "ANTHROPIC_BASE_URL": tools_url,
            "ANTHROPIC_AUTH_TOKEN": MASTER_KEY,
            "HOME": str(tmp_path),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "MAX_THINKING_TOKENS": "2048",
        },
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    calling = next(recorded for recorded in claude_double.requests if tool_use(recorded))
    assert calling.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    call = tool_use(calling) or {}
    assert call["name"] == "Read"
    answered = [
        recorded for recorded in claude_double.requests if tool_result(recorded, call["id"])
    ]
    assert answered, "no tool_result for the tool_use came back"
    assert NOTE in str((tool_result(answered[0], call["id"]) or {})["content"])
    # The assistant turn went back as Claude Code got it: the signed thinking block first.
    turn = answered[0].body["messages"][-2]
    assert turn["content"][0] == (calling.answer or {})["content"][0]
    assert turn["content"][0]["type"] == "thinking"
    assert "The tool said:" in done.stdout and NOTE in done.stdout


def tool_use(recorded: RecordedRequest) -> dict[str, Any] | None:
    """The tool call the double answered a request with."""
    content = (recorded.answer or {}).get("content") or []
    return next((block for block in content if block["type"] == "tool_use"), None)


def tool_result(recorded: RecordedRequest, tool_use_id: str) -> dict[str, Any] | None:
    """The result for a tool call that a request's last message carries."""
    content = recorded.body["messages"][-1]["content"]
    return next(
        (
            block
            for block in (content if isinstance(content, list) else [])
            if block.get("type") == "tool_result" and block.get("tool_use_id") == tool_use_id
        ),
        None,
    )


def codex_exec(
    url: str, prompt: str, tmp_path: Path, *, web_search: bool = False, key: str = MASTER_KEY
) -> subprocess.CompletedProcess[str]:
    """`codex exec` with the gateway as a custom model provider (the Responses API); with its
    default web search on where `web_search` says so."""
    codex = client("codex")
    home = tmp_path / "codex"
    home.mkdir()
    provider = (
        'model_providers.gateway={name="LLM Proxy", base_url="' + url + '/v1", '
        'env_key="LLM_PROXY_KEY", wire_api="responses"}'
    )
    command = [codex, "exec", "--skip-git-repo-check", "-c", "model_provider=gateway"]
    # Codex offers OpenAI's web search (a provider-run tool, billed per search) unless told
    # not to; the gateway refuses it on a model group that does not enable it.
    command += ["-c", provider]
    if not web_search:
        command += ["-c", 'web_search="disabled"']
    command += ["-m", "gpt-5.1-codex", prompt]
    env = {"LLM_PROXY_KEY": key, "CODEX_HOME": str(home), "HOME": str(tmp_path)}
    return run_client(command, env, tmp_path)


def test_codex_answers_through_the_responses_api(url: str, tmp_path: Path) -> None:
    done = codex_exec(url, "Say hi", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Hello from the gateway." in done.stdout
    assert "ERROR" not in done.stderr


def test_codex_runs_a_command_with_reasoning_kept_across_turns(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, tmp_path: Path
) -> None:
    """An OpenAI deployment (the OpenAI double's Responses API, forwarded natively) reasons
    and asks for Codex's `exec_command`; Codex runs `ls` and sends the output back with the
    reasoning item's encrypted content (the double refuses reasoning it cannot read)."""
    url = gateway_for(CODEX_CONFIG)
    (tmp_path / "notes-for-codex.txt").write_text("hi\n")
    upstream.call_tools, upstream.tool_name = True, "exec_command"
    upstream.tool_input = {"cmd": "ls"}
    done = codex_exec(url, "List the files", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    first, second = [r.body for r in upstream.requests if r.path == "/v1/responses"]
    assert first["include"] == ["reasoning.encrypted_content"]
    call = next(item for item in second["input"] if item.get("type") == "function_call")
    output = next(item for item in second["input"] if item.get("type") == "function_call_output")
    assert (call["name"], output["call_id"]) == ("exec_command", call["call_id"])
    assert "notes-for-codex.txt" in str(output["output"])
    reasoning = [item for item in second["input"] if item.get("type") == "reasoning"]
    assert reasoning and all(item["encrypted_content"] for item in reasoning)
    assert "The tool said:" in done.stdout and "notes-for-codex.txt" in done.stdout


# Codex's model on an OpenAI deployment that enables OpenAI's web search, at $10 per 1,000
# (tokens free, so the key's spend is its searches').
SEARCH_PRICE = 0.01
CODEX_SEARCH_CONFIG = gateway_config(
    openai_double(
        "gpt-5.1-codex",
        model_info={"server_tools": ["web_search"], "search_context_cost_per_query": SEARCH_PRICE},
        input_cost_per_token=0,
        output_cost_per_token=0,
    ),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)


def test_codex_with_its_default_web_search_on_a_group_that_enables_it(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, tmp_path: Path
) -> None:
    """Codex as installed, offering OpenAI's web search on every request: the group enables it,
    the double searches twice (`web_search_call` items, streamed) and answers, Codex prints the
    answer, and the key is charged the two searches."""
    url = gateway_for(CODEX_SEARCH_CONFIG)
    upstream.web_searches = 2
    master = {"Authorization": f"Bearer {MASTER_KEY}"}
    made = httpx.post(f"{url}/key/generate", headers=master, json={"max_budget": 1}, timeout=30)
    assert made.status_code == 200, made.text
    key = made.json()["key"]
    done = codex_exec(url, "Say hi", tmp_path, web_search=True, key=key)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    (sent,) = [r.body for r in upstream.requests if r.path == "/v1/responses"]
    assert any(str(tool.get("type")).startswith("web_search") for tool in sent["tools"])
    assert sent["stream"] is True
    assert upstream.reply in done.stdout
    assert "ERROR" not in done.stderr
    info = httpx.get(f"{url}/key/info", params={"key": key}, headers=master, timeout=30)
    assert float(info.json()["info"]["spend"]) == pytest.approx(2 * SEARCH_PRICE)
