"""Streams fail over before their first byte and never after, on every streamed endpoint
(/v1/chat/completions, /v1/messages, /v1/responses), and every ending is metered once.

Each model group has two deployments on two doubles of one provider that share one fault
queue: the staged fault goes to whichever deployment the Router tries first, so the test
needs no control over the pick, and each double's request count tells how often each
deployment was tried. Every event is checked against its API's spec, and the openai and
anthropic SDKs and Claude Code (where `make clients` installed it) are served past a failing
deployment as well."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anthropic
import boto3
import httpx
import openai
import pytest
from anthropic.types import ErrorResponse, RawMessageStreamEvent
from boto3.dynamodb.conditions import Attr

from devstack.doubles import anthropic_upstream, openai_upstream
from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import serving
from tests.support.agent_clis import client, run_client
from tests.support.configs import deployment, gateway_config
from tests.support.specs import assert_conforms, assert_event_conforms, assert_strict, sse_events
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

STREAM_TIMEOUT_S = 1.0
NUM_RETRIES = 2
# A silent deployment would answer only after this long; a stalled one goes on after it.
SILENT_S = 8.0
# A deployment's own stream_timeout, which wins over router_settings'.
PATIENT_TIMEOUT_S = 4.0
# The model Claude Code asks for, served by a group on the Anthropic doubles.
CLAUDE_CODE_MODEL = "claude-sonnet-4-5"
PRICES = {"input_cost_per_token": 0.000003, "output_cost_per_token": 0.000015}
REPLY = "A long enough answer of several words for the stream to be cut halfway through."
PROMPT = "Write a haiku about gateways"


@dataclass(frozen=True)
class Endpoint:
    path: str
    group: str
    body: dict[str, Any]


CHAT = Endpoint(
    "/v1/chat/completions",
    "gpt",
    {"messages": [{"role": "user", "content": PROMPT}], "stream": True},
)
MESSAGES = Endpoint(
    "/v1/messages",
    "claude",
    {"max_tokens": 256, "messages": [{"role": "user", "content": PROMPT}], "stream": True},
)
RESPONSES = Endpoint("/v1/responses", "gpt", {"input": PROMPT, "stream": True})
ENDPOINTS = {
    "chat": CHAT,
    "messages": MESSAGES,
    "responses": RESPONSES,
    # The Responses API on Anthropic deployments, which litellm bridges through chat.
    "responses-claude": Endpoint("/v1/responses", "claude", RESPONSES.body),
}
API_OF = {"chat": "chat", "messages": "messages", "responses": "responses"}
API_OF["responses-claude"] = "responses"


@dataclass(kw_only=True)
class GptDouble(OpenAIUpstream):
    """The OpenAI double, counting the faults it took from the shared queue."""

    faults_taken: int = 0

    def next_fault(self) -> openai_upstream.Fault | None:
        fault = super().next_fault()
        self.faults_taken += fault is not None
        return fault

    def reset(self) -> None:
        super().reset()
        self.faults_taken = 0


@dataclass(kw_only=True)
class ClaudeDouble(AnthropicUpstream):
    """The Anthropic double, counting the faults it took from the shared queue."""

    faults_taken: int = 0

    def next_fault(self) -> anthropic_upstream.Fault | None:
        fault = super().next_fault()
        self.faults_taken += fault is not None
        return fault

    def reset(self) -> None:
        super().reset()
        self.faults_taken = 0


@pytest.fixture(scope="module")
def gpt() -> Iterator[tuple[GptDouble, GptDouble]]:
    faults: list[openai_upstream.Fault] = []
    key = PROVIDER_KEYS["OPENAI_API_KEY"]
    first = GptDouble(api_key=key, reply=REPLY, faults=faults)
    second = GptDouble(api_key=key, reply=REPLY, faults=faults)
    with serving(first), serving(second):
        yield first, second


@pytest.fixture(scope="module")
def claude() -> Iterator[tuple[ClaudeDouble, ClaudeDouble]]:
    faults: list[anthropic_upstream.Fault] = []
    key = PROVIDER_KEYS["ANTHROPIC_API_KEY"]
    first = ClaudeDouble(api_key=key, reply=REPLY, faults=faults)
    second = ClaudeDouble(api_key=key, reply=REPLY, faults=faults)
    with serving(first), serving(second):
        yield first, second


@pytest.fixture(autouse=True)
def _fresh_doubles(
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
) -> None:
    for double in (*gpt, *claude):
        double.reset()


@pytest.fixture(scope="module")
def gateway(
    gateway_for: Callable[..., str],
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
) -> str:
    openai_key = {"api_key": "os.environ/OPENAI_API_KEY"}
    anthropic_key = {"api_key": "os.environ/ANTHROPIC_API_KEY"}
    url = gateway_for(
        gateway_config(
            *(
                deployment(
                    "gpt",
                    "openai/gpt-4o",
                    api_base=f"{double.base_url}/v1",
                    model_info={"id": f"gpt-{name}"},
                    **openai_key,
                    **PRICES,
                )
                for name, double in zip("ab", gpt, strict=True)
            ),
            *(
                deployment(
                    "gpt-patient",
                    "openai/gpt-4o",
                    api_base=f"{double.base_url}/v1",
                    model_info={"id": f"gpt-patient-{name}"},
                    stream_timeout=PATIENT_TIMEOUT_S,
                    **openai_key,
                    **PRICES,
                )
                for name, double in zip("ab", gpt, strict=True)
            ),
            *(
                deployment(
                    CLAUDE_CODE_MODEL,
                    f"anthropic/{CLAUDE_CODE_MODEL}",
                    api_base=double.base_url,
                    model_info={"id": f"claude-code-{name}"},
                    **anthropic_key,
                )
                for name, double in zip("ab", claude, strict=True)
            ),
            *(
                deployment(
                    "claude",
                    "anthropic/claude-3-haiku-20240307",
                    api_base=double.base_url,
                    model_info={"id": f"claude-{name}"},
                    **anthropic_key,
                    **PRICES,
                )
                for name, double in zip("ab", claude, strict=True)
            ),
            router_settings={
                "num_retries": NUM_RETRIES,
                "enable_weighted_failover": True,
                "stream_timeout": STREAM_TIMEOUT_S,
                # Tests share this gateway: a failure must not steer the next test's pick.
                "disable_cooldowns": True,
                "fallbacks": [{"gpt": ["claude"]}, {"claude": ["gpt"]}],
            },
        )
    )
    # A first request builds the router: the timed requests find it built, as a warm Lambda
    # container does.
    for endpoint in ENDPOINTS.values():
        assert stream(url, endpoint).status == 200
    return url


def doubles_of(
    endpoint: Endpoint,
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
) -> tuple[Any, Any]:
    return claude if endpoint.group == "claude" else gpt


def assert_wire(kind: str, events: list[tuple[str | None, Any]]) -> None:
    """Each event as its API's spec has it; an error event in the endpoint's own shape."""
    for name, data in events:
        if data == "[DONE]":
            continue
        if kind == "chat":
            if set(data) != {"error"}:
                assert_conforms("CreateChatCompletionStreamResponse", data)
        elif kind == "messages":
            assert name == data["type"]
            assert_strict(ErrorResponse if name == "error" else RawMessageStreamEvent, data)
        else:
            assert_event_conforms(data, name)


@dataclass
class Streamed:
    status: int
    request_id: str
    events: list[tuple[str | None, Any]]
    elapsed_s: float

    def names(self) -> list[str]:
        """Each event's name: its `event:` line, else its data's `type`, else `chunk`."""
        named = []
        for name, data in self.events:
            kind = data.get("type") if isinstance(data, dict) else None
            named.append(name or (kind if isinstance(kind, str) else "chunk"))
        return named

    def text(self) -> str:
        pieces = []
        for _, data in self.events:
            if not isinstance(data, dict):
                continue
            for choice in data.get("choices") or []:
                pieces.append((choice.get("delta") or {}).get("content") or "")
            if data.get("type") == "content_block_delta":
                pieces.append(data["delta"].get("text") or "")
            if data.get("type") == "response.output_text.delta":
                pieces.append(data["delta"])
        return "".join(pieces)


def stream(gateway: str, endpoint: Endpoint, agent: str = "failover-test") -> Streamed:
    started = time.monotonic()
    response = httpx.post(
        f"{gateway}{endpoint.path}",
        json={"model": endpoint.group, **endpoint.body},
        headers={"Authorization": f"Bearer {MASTER_KEY}", "x-agent": agent},
        timeout=30,
    )
    return Streamed(
        response.status_code,
        response.headers["x-request-id"],
        list(sse_events(response.text)),
        time.monotonic() - started,
    )


# -- before the first byte ------------------------------------------------------------------------

BEFORE_FIRST_BYTE = {
    "silent": (
        openai_upstream.Fault(silent_s=SILENT_S),
        anthropic_upstream.Fault(silent_s=SILENT_S),
    ),
    "429": (
        openai_upstream.Fault(status=429, message="Rate limit reached"),
        anthropic_upstream.Fault(status=429, message="Rate limit reached"),
    ),
    "500": (openai_upstream.Fault(status=500), anthropic_upstream.Fault(status=500)),
    "503-529": (
        openai_upstream.Fault(status=503, message="overloaded"),
        anthropic_upstream.Fault(status=529, message="Overloaded"),
    ),
    "error-event-at-start": (
        openai_upstream.Fault(error_at_start=True, message="overloaded"),
        anthropic_upstream.Fault(error_at_start=True, message="Overloaded"),
    ),
}


@pytest.mark.parametrize("fault", list(BEFORE_FIRST_BYTE))
@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_a_stream_that_fails_before_its_first_byte_is_answered_by_the_other_deployment(
    gateway: str,
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
    aws: dict[str, str],
    kind: str,
    fault: str,
) -> None:
    endpoint, kind = ENDPOINTS[kind], API_OF[kind]
    doubles = doubles_of(endpoint, gpt, claude)
    staged = replace(BEFORE_FIRST_BYTE[fault][1 if endpoint.group == "claude" else 0])
    doubles[0].fail_next(staged)

    streamed = stream(gateway, endpoint)

    assert streamed.status == 200
    assert [len(double.requests) for double in doubles] == [1, 1], "each deployment tried once"
    assert_wire(kind, streamed.events)
    assert streamed.text() == REPLY
    names = streamed.names()
    opening = {"chat": "chunk", "messages": "message_start", "responses": "response.created"}
    if kind == "chat":
        roles = [
            data
            for _, data in streamed.events
            if isinstance(data, dict)
            and any((c.get("delta") or {}).get("role") for c in data.get("choices") or [])
        ]
        assert len(roles) == 1
        assert streamed.events[-1][1] == "[DONE]"
    else:
        assert names.count(opening[kind]) == 1
    assert "error" not in names
    if fault == "silent":
        assert streamed.elapsed_s < STREAM_TIMEOUT_S + 2
        assert staged.hung_up, "the silent deployment's connection was closed"
    answered = next(i for i, double in enumerate(doubles) if not double.faults_taken)
    item = usage_item(aws["UsageTable"], streamed.request_id)
    assert item["status"] == 200
    assert item["deployment_id"] == f"{endpoint.group}-{'ab'[answered]}"
    assert item["agent"] == "failover-test"
    assert item["prompt_tokens"] > 0 and item["completion_tokens"] > 0
    assert Decimal(str(item["cost_usd"])) > 0
    assert (item["retries"], item["fallbacks"]) == (1, 0)


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_when_every_deployment_of_the_group_is_silent_the_fallback_group_answers(
    gateway: str,
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
    aws: dict[str, str],
    kind: str,
) -> None:
    endpoint, kind = ENDPOINTS[kind], API_OF[kind]
    group, other = (claude, gpt) if endpoint.group == "claude" else (gpt, claude)
    fault = BEFORE_FIRST_BYTE["silent"][1 if endpoint.group == "claude" else 0]
    group[0].fail_next(fault, times=10)

    streamed = stream(gateway, endpoint)

    assert streamed.status == 200
    assert streamed.text() == REPLY
    # Each deployment of the group is tried once, then the fallback.
    assert [len(double.requests) for double in group] == [1, 1]
    assert sum(len(double.requests) for double in other) == 1
    assert streamed.elapsed_s < 2 * STREAM_TIMEOUT_S + 2
    item = usage_item(aws["UsageTable"], streamed.request_id)
    fallback = "gpt" if endpoint.group == "claude" else "claude"
    answered = next(i for i, double in enumerate(other) if double.requests)
    assert item["status"] == 200
    assert item["deployment_id"] == f"{fallback}-{'ab'[answered]}"
    assert item["fallbacks"] == 1


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "json"])
def test_when_every_deployment_fails_without_a_fallback_the_client_gets_the_providers_error(
    gateway: str, gpt: tuple[GptDouble, GptDouble], aws: dict[str, str], streamed: bool
) -> None:
    gpt[0].fail_next(openai_upstream.Fault(status=500), times=10)

    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        json={"model": "gpt-patient", **CHAT.body, "stream": streamed},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_error"
    assert [len(double.requests) for double in gpt] == [1, 1]
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    assert (item["status"], item["error_code"]) == (502, "provider_error")


def test_a_deployments_own_stream_timeout_wins(
    gateway: str, gpt: tuple[GptDouble, GptDouble], aws: dict[str, str]
) -> None:
    gpt[0].fail_next(openai_upstream.Fault(silent_s=STREAM_TIMEOUT_S + 1))

    streamed = stream(gateway, Endpoint(CHAT.path, "gpt-patient", CHAT.body))

    assert streamed.status == 200
    assert streamed.text() == REPLY
    assert sum(len(double.requests) for double in gpt) == 1, "waited, not abandoned"
    assert streamed.elapsed_s >= STREAM_TIMEOUT_S + 1
    item = usage_item(aws["UsageTable"], streamed.request_id)
    assert (item["status"], item["retries"], item["fallbacks"]) == (200, 0, 0)


# -- after the first byte -------------------------------------------------------------------------

AFTER_FIRST_BYTE = {
    "stall": (
        openai_upstream.Fault(stall_s=SILENT_S),
        anthropic_upstream.Fault(stall_s=SILENT_S),
    ),
    "cut": (openai_upstream.Fault(cut_stream=True), anthropic_upstream.Fault(cut_stream=True)),
    "error-event": (
        openai_upstream.Fault(error_event=True, message="overloaded"),
        anthropic_upstream.Fault(error_event=True, status=529, message="Overloaded"),
    ),
}
FAILURE_EVENTS = ("error", "response.failed")
# What ends each endpoint's stream normally.
NORMAL_ENDS = {
    "chat": "finish_reason",
    "messages": "message_stop",
    "responses": "response.completed",
}


@pytest.mark.parametrize("fault", list(AFTER_FIRST_BYTE))
@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_a_stream_that_fails_after_content_ends_with_an_error_event_and_is_metered_once(
    gateway: str,
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
    aws: dict[str, str],
    kind: str,
    fault: str,
) -> None:
    endpoint, kind = ENDPOINTS[kind], API_OF[kind]
    doubles = doubles_of(endpoint, gpt, claude)
    doubles[0].fail_next(AFTER_FIRST_BYTE[fault][1 if endpoint.group == "claude" else 0])

    streamed = stream(gateway, endpoint)

    assert streamed.status == 200
    assert sum(len(double.requests) for double in doubles) == 1, "never retried"
    assert_wire(kind, streamed.events)
    text = streamed.text()
    assert text and REPLY.startswith(text) and text != REPLY
    events = [data for _, data in streamed.events if data != "[DONE]"]
    names = streamed.names()
    if kind == "chat":
        last = events[-1]
        assert set(last) == {"error"}
        assert {"message", "type", "code"} <= set(last["error"])
        finishes = [c.get("finish_reason") for e in events[:-1] for c in e.get("choices") or []]
        assert not {"stop", "length"} & set(finishes)
    else:
        assert names[-1] in FAILURE_EVENTS
        assert NORMAL_ENDS[kind] not in names
        if kind == "messages":
            assert events[-1]["type"] == "error" and set(events[-1]["error"]) == {"type", "message"}
        elif names[-1] == "error":
            assert {"code", "message", "sequence_number"} <= set(events[-1])
    errors = [e for e in events if set(e) == {"error"} or e.get("type") in FAILURE_EVENTS]
    assert len(errors) == 1
    if fault == "stall":
        assert streamed.elapsed_s < STREAM_TIMEOUT_S + 2
    answered = next(i for i, double in enumerate(doubles) if double.requests)
    item = usage_item(aws["UsageTable"], streamed.request_id)
    if fault == "stall":
        assert (item["status"], item["error_code"]) == (504, "provider_timeout")
    else:
        assert (item["status"], item["error_code"]) in {
            (502, "provider_error"),
            (502, "provider_unreachable"),
        }
    if kind == "chat":
        # OpenAI reports usage in its last chunk only: the gateway counted.
        assert item["usage_estimated"] is True
    assert item["deployment_id"] == f"{endpoint.group}-{'ab'[answered]}"
    assert item["prompt_tokens"] > 0 and item["completion_tokens"] > 0
    assert Decimal(str(item["cost_usd"])) > 0
    assert item["agent"] == "failover-test"


def test_one_usage_item_per_request_and_the_spend_report_agrees(
    gateway: str,
    gpt: tuple[GptDouble, GptDouble],
    claude: tuple[ClaudeDouble, ClaudeDouble],
    aws: dict[str, str],
) -> None:
    """A request failed over before its first byte and one cut after content: one usage item
    each, and the agent's line in /spend/report sums them."""
    agent = f"failover-{uuid.uuid4().hex[:8]}"
    claude[0].fail_next(anthropic_upstream.Fault(silent_s=SILENT_S))
    failed_over = stream(gateway, MESSAGES, agent)
    gpt[0].fail_next(openai_upstream.Fault(cut_stream=True))
    cut = stream(gateway, RESPONSES, agent)

    table = boto3.resource("dynamodb").Table(aws["UsageTable"])
    items = [usage_item(aws["UsageTable"], s.request_id) for s in (failed_over, cut)]
    scanned = table.scan(FilterExpression=Attr("agent").eq(agent))["Items"]
    assert sorted(item["request_id"] for item in scanned) == sorted(
        s.request_id for s in (failed_over, cut)
    )
    assert [item["status"] for item in items] == [200, 502]

    today = datetime.now(UTC).date().isoformat()
    report = httpx.get(
        f"{gateway}/spend/report",
        params={"start": today, "end": today},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    ).json()
    line = report["by_agent"][agent]
    assert line["requests"] == 2 and line["errors"] == 1
    assert line["prompt_tokens"] == sum(int(item["prompt_tokens"]) for item in items)
    cost = sum(Decimal(str(item["cost_usd"])) for item in items)
    assert Decimal(str(line["cost_usd"])) == pytest.approx(cost)


# -- as clients see it ----------------------------------------------------------------------------


def test_the_openai_sdk_streams_past_a_silent_deployment(
    gateway: str, gpt: tuple[GptDouble, GptDouble]
) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway}/v1", api_key=MASTER_KEY, max_retries=0)
    silent = openai_upstream.Fault(silent_s=SILENT_S)

    started = time.monotonic()
    gpt[0].fail_next(silent)
    chunks = list(
        sdk.chat.completions.create(model="gpt", messages=CHAT.body["messages"], stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    gpt[0].fail_next(silent)
    events = list(sdk.responses.create(model="gpt", input=PROMPT, stream=True))

    assert text == REPLY
    assert [event.type for event in events].count("response.created") == 1
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == REPLY
    assert time.monotonic() - started < 2 * (STREAM_TIMEOUT_S + 2)
    assert [len(double.requests) for double in gpt] == [2, 2]


def test_the_anthropic_sdk_streams_past_an_overloaded_deployment(
    gateway: str, claude: tuple[ClaudeDouble, ClaudeDouble]
) -> None:
    sdk = anthropic.Anthropic(base_url=gateway, api_key=MASTER_KEY, max_retries=0)
    claude[0].fail_next(anthropic_upstream.Fault(error_at_start=True, message="Overloaded"))

    with sdk.messages.stream(
        model="claude", max_tokens=256, messages=MESSAGES.body["messages"]
    ) as streamed:
        kinds = [event.type for event in streamed]
        message = streamed.get_final_message()

    assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop"
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert [len(double.requests) for double in claude] == [1, 1]


def test_claude_code_answers_past_a_silent_deployment(
    gateway: str, claude: tuple[ClaudeDouble, ClaudeDouble], tmp_path: Any
) -> None:
    claude_code = client("claude")
    claude[0].fail_next(anthropic_upstream.Fault(silent_s=SILENT_S))

    done = run_client(
        [claude_code, "-p", "Say hi", "--model", CLAUDE_CODE_MODEL],
        {
            "ANTHROPIC_BASE_URL": gateway,
            "ANTHROPIC_AUTH_TOKEN": MASTER_KEY,
            "HOME": str(tmp_path),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
        tmp_path,
    )

    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert REPLY in done.stdout
    assert sum(double.faults_taken for double in claude) == 1
    assert all(double.requests for double in claude), "the silent one was left for the other"
