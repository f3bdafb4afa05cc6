"""Session affinity against a served gateway with two deployments per model group, each on a
double with its own prompt cache (as two Anthropic accounts or two OpenAI projects have):
an agent's session stays on one deployment, so its growing prompt keeps being read from that
deployment's cache; sessions spread over both; two keys pin apart; a failing deployment is left
for the other within the request; and two gateway processes (two Lambda containers) send one
session to the same deployment."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import pytest
from llm_proxy.access.auth import MASTER
from llm_proxy.pipeline.session_affinity import AffinitySettings, Session, deployment_id

from devstack.aws import LocalAWS
from devstack.doubles.anthropic_upstream import Fault as AnthropicFault
from devstack.gateway import gateway_env, gateway_process
from tests.support.agent_clis import client, run_client
from tests.support.agent_sessions import (
    AFFINITY,
    TURNS,
    ClaudeCodeSession,
    CodexSession,
    Doubles,
    config_for,
    read_share,
    served_by,
    served_doubles,
)
from tests.support.gateway_http import new_key
from tests.support.stack import MASTER_KEY, usage_item


@pytest.fixture(scope="module")
def doubles() -> Iterator[Doubles]:
    with served_doubles() as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh(doubles: Doubles) -> None:
    doubles.reset()


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], doubles: Doubles) -> str:
    return gateway_for(config_for(doubles))


# -- the tests ---------------------------------------------------------------------------------


def test_a_claude_code_session_stays_on_one_deployment_and_reads_its_prompt_from_the_cache(
    url: str, doubles: Doubles, aws: dict[str, str]
) -> None:
    session = ClaudeCodeSession()
    turns = [session.turn(url, number) for number in range(TURNS)]
    [(home, count)] = [(name, n) for name, n in doubles.served().items() if n]
    assert count == TURNS
    assert turns[0].read == 0 and turns[0].written > 1024
    assert read_share(turns[1:]) >= 0.9
    assert served_by(aws, turns) == {home}
    # The prompt reached the provider as sent: the moved mark, on the newest message only.
    sent = doubles.claude[home].requests[-1].body
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert [
        "cache_control" in block for message in sent["messages"] for block in message["content"]
    ].count(True) == 1
    item = usage_item(aws["UsageTable"], turns[-1].request_id)
    last = turns[-1]
    assert (item["cached_tokens"], item["cache_write_tokens"]) == (last.read, last.written)
    assert item["prompt_tokens"] == last.read + last.written + last.uncached


def test_a_codex_session_keyed_by_prompt_cache_key_stays_on_one_deployment(
    url: str, doubles: Doubles, aws: dict[str, str]
) -> None:
    session = CodexSession()
    turns = [session.turn(url, number) for number in range(TURNS)]
    [(home, count)] = [(name, n) for name, n in doubles.served().items() if n]
    assert count == TURNS
    assert read_share(turns[1:]) >= 0.9
    assert served_by(aws, turns) == {home}
    # Still OpenAI's own cache-routing key at the provider.
    assert {r.body["prompt_cache_key"] for r in doubles.codex[home].requests} == {
        session.conversation
    }


def ask(url: str, aws: dict[str, str], session: str, key: str = MASTER_KEY) -> str:
    """One short request of a session (Claude Code's header); the deployment that served it."""
    client = anthropic.Anthropic(
        base_url=url,
        api_key=key,
        max_retries=0,
        default_headers={"X-Claude-Code-Session-Id": session},
    )
    raw = client.messages.with_raw_response.create(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    return str(usage_item(aws["UsageTable"], raw.headers["x-request-id"])["deployment_id"])


def test_sessions_spread_over_both_deployments_and_each_keeps_its_own(
    url: str, aws: dict[str, str]
) -> None:
    sessions = [f"spread-{n}" for n in range(24)]
    first = {session: ask(url, aws, session) for session in sessions}
    assert set(Counter(first.values())) == {"claude-a", "claude-b"}
    assert {session: ask(url, aws, session) for session in sessions} == first


def test_two_keys_with_one_session_id_are_pinned_independently(
    url: str, aws: dict[str, str]
) -> None:
    keys = [new_key(url, models=["claude"]) for _ in range(2)]
    sessions = [f"shared-{n}" for n in range(16)]
    placed = [{session: ask(url, aws, session, key) for session in sessions} for key in keys]
    # Each key's sessions keep their deployment; the same id under another key is its own.
    assert [
        {session: ask(url, aws, session, key) for session in sessions} for key in keys
    ] == placed
    assert placed[0] != placed[1]


@pytest.mark.parametrize("status", [429, 500])
def test_a_failing_session_deployment_is_tried_once_and_the_other_serves(
    url: str, doubles: Doubles, aws: dict[str, str], status: int
) -> None:
    session = f"failing-{status}"
    home = ask(url, aws, session)
    [other] = set(doubles.claude) - {home}
    doubles.reset()
    doubles.claude[home].fail_next(AnthropicFault(status=status), times=3)
    assert [ask(url, aws, session) for _ in range(3)] == [other] * 3
    # One try of the failed deployment per request, never a second.
    assert len(doubles.claude[home].requests) == 3
    assert len(doubles.claude[other].requests) == 3
    # Well again: the session is back on its deployment.
    assert ask(url, aws, session) == home


def test_two_gateway_processes_serve_one_session_from_the_same_deployment(
    aws_stack: LocalAWS, doubles: Doubles, tmp_path: Path, aws: dict[str, str]
) -> None:
    path = tmp_path / "affinity.yaml"
    path.write_text(config_for(doubles))
    env = gateway_env(aws_stack, {**os.environ, "LLM_PROXY__CONFIG_PATH": str(path)})
    with gateway_process(env) as one, gateway_process(env) as two:
        session = ClaudeCodeSession()
        # Turns alternate between the two containers, as a load balancer would send them.
        turns = [session.turn((one, two)[n % 2].url, n) for n in range(6)]
    [(home, count)] = [(name, n) for name, n in doubles.served().items() if n]
    assert count == 6
    assert served_by(aws, turns) == {home}
    assert read_share(turns[1:]) >= 0.9


def test_while_its_deployment_cools_down_a_session_is_served_by_the_other(
    gateway_for: Callable[..., str], doubles: Doubles, aws: dict[str, str]
) -> None:
    url = gateway_for(
        config_for(doubles, {**AFFINITY, "disable_cooldowns": False, "cooldown_time": 60})
    )
    session = "cooling"
    home = ask(url, aws, session)
    [other] = set(doubles.claude) - {home}
    doubles.reset()
    doubles.claude[home].fail_next(AnthropicFault(status=429))
    assert [ask(url, aws, session) for _ in range(3)] == [other] * 3
    # Cooling down, it is not offered again: tried once, by the first of those requests.
    assert len(doubles.claude[home].requests) == 1


def test_without_affinity_a_session_scatters_over_the_deployments(
    gateway_for: Callable[..., str], doubles: Doubles, aws: dict[str, str]
) -> None:
    url = gateway_for(config_for(doubles, {"num_retries": 2, "disable_cooldowns": True}))
    session = ClaudeCodeSession()
    turns = [session.turn(url, number) for number in range(TURNS)]
    assert all(doubles.served()[name] for name in doubles.claude)
    assert len(served_by(aws, turns)) == 2


def test_claude_code_turns_of_one_session_stay_on_one_deployment(
    gateway_for: Callable[..., str], doubles: Doubles, tmp_path: Path
) -> None:
    """`claude -p`, then `claude -p --resume` for the next turns: one session, whose
    requests (Claude Code's session header on each) all reach one deployment."""
    claude = client("claude")
    url = gateway_for(config_for(doubles, claude="claude-sonnet-4-5"))
    session = str(uuid.uuid4())
    env = {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_AUTH_TOKEN": MASTER_KEY,
        "HOME": str(tmp_path),
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    for turn in range(3):
        resume = ["--session-id", session] if turn == 0 else ["--resume", session]
        prompt = f"Turn {turn}: say hi"
        done = run_client(
            [claude, "-p", prompt, "--model", "claude-sonnet-4-5", *resume], env, tmp_path
        )
        assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    [(home, requests)] = [(n, d.requests) for n, d in doubles.claude.items() if d.requests]
    # The turns of one conversation, each naming the session (in `metadata.user_id` too).
    assert [len(r.body["messages"]) for r in requests] == [1, 3, 5]
    assert {json.loads(r.body["metadata"]["user_id"])["session_id"] for r in requests} == {session}
    # Where every container places this session.
    offered = [{"model_info": {"id": name}} for name in doubles.claude]
    placed = Session(MASTER, session, AffinitySettings(every_group=True))
    assert home == deployment_id(placed.pick("claude-sonnet-4-5", offered) or {})
