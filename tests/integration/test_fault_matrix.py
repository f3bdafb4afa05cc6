"""The fault matrix: every upstream failure the OpenAI-format double can stage, streamed and not,
with a fallback deployment configured (the client gets an answer) and without (the client gets
the right status in OpenAI's error shape); each request's usage item is read back. The observed
outcomes are written as a table to FAULT_TABLE (and printed under `pytest -s`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from devstack.doubles.openai_upstream import Fault, OpenAIUpstream
from devstack.server import free_port, serving
from tests.support.configs import deployment, gateway_config
from tests.support.stack import (
    MASTER_KEY,
    PROVIDER_KEYS,
    UPSTREAM_KEY,
    WRONG_UPSTREAM_KEY,
    usage_item,
)

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
BACKUP_REPLY = "Backup answers here."
FAULT_TABLE = Path("/tmp/llm-proxy-fault-matrix.md")
# The primary deployments give up after this long; the slow fault answers only after SLOW_S.
TIMEOUT_S = 1.5
SLOW_S = 4.0
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}
# Deployment ids are "<model_name>#<index in model_list>".
SOLO, BACKUP, SOLO_REFUSED = "solo#0", "backup#2", "solo-refused#3"


@dataclass(frozen=True)
class Case:
    fault: str
    staged: Fault | None  # None: the deployment's api_base is a closed port
    status: int  # what the client gets without a fallback
    error_type: str
    code: str
    retry_after: str | None = None


CASES = [
    Case("500", Fault(status=500), 502, "upstream_error", "provider_error"),
    Case(
        "503",
        Fault(status=503, message="overloaded"),
        502,
        "upstream_error",
        "provider_unavailable",
    ),
    Case(
        "429 + Retry-After",
        Fault(status=429, message="Rate limit exceeded", retry_after="7"),
        429,
        "rate_limit_error",
        "provider_rate_limited",
        retry_after="7",
    ),
    Case("timeout", Fault(delay_s=SLOW_S), 504, "timeout_error", "provider_timeout"),
    Case("connection refused", None, 502, "upstream_error", "provider_unreachable"),
    Case("malformed JSON", Fault(malformed=True), 502, "upstream_error", "provider_bad_response"),
    # Cut after half its words; the double cuts streams only.
    Case("stream cut halfway", Fault(cut_stream=True), 502, "upstream_error", "provider_error"),
]
MALFORMED, CUT = CASES[-2:]


def slug(text: str) -> str:
    return "-".join(text.replace("+", " ").split()).lower()


def _matrix() -> list[Any]:
    return [
        pytest.param(case, stream, id=f"{slug(case.fault)}-{'stream' if stream else 'json'}")
        for case in CASES
        for stream in (False, True)
        if stream or case is not CUT
    ]


# -- the observed outcomes, as a table ------------------------------------------------------------

OUTCOMES: list[tuple[str, ...]] = []


def observed(stream: bool, fault: str, fallback: str, reply: Reply, item: dict[str, Any]) -> None:
    metered = (
        f"{item['status']} {item.get('error_code') or ''} retries={item['retries']} "
        f"fallbacks={item['fallbacks']} deployment={item.get('deployment_id')}"
    )
    mode = "stream" if stream else "json"
    OUTCOMES.append(("openai", mode, fault, fallback, reply.outcome(), metered.replace("  ", " ")))


@pytest.fixture(scope="module", autouse=True)
def _fault_table() -> Iterator[None]:
    OUTCOMES.clear()
    yield
    header = ("provider", "mode", "fault", "fallback", "client got", "usage item")
    lines = [header, ("---",) * len(header), *OUTCOMES]
    table = "\n".join("| " + " | ".join(row) + " |" for row in lines)
    FAULT_TABLE.write_text(table + "\n")
    print(f"\n{table}")


# -- the gateway under test -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def backup() -> Iterator[OpenAIUpstream]:
    double = OpenAIUpstream(api_key=PROVIDER_KEYS["DEEPSEEK_API_KEY"], reply=BACKUP_REPLY)
    with serving(double):
        yield double


@pytest.fixture(autouse=True)
def _fresh_backup(backup: OpenAIUpstream) -> None:
    backup.reset()


@pytest.fixture(scope="module")
def gateway(
    gateway_for: Callable[..., str], upstream: OpenAIUpstream, backup: OpenAIUpstream
) -> str:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    primary = {"api_key": "os.environ/OPENAI_API_KEY", "timeout": TIMEOUT_S}
    base = f"{upstream.base_url}/v1"
    # The backup accepts an assistant prefill, so a stream cut after content can be continued
    # there (enable_mid_stream_fallback_continuation).
    return gateway_for(
        gateway_config(
            deployment("solo", "openai/gpt-4o", api_base=base, **primary),
            deployment("guarded", "openai/gpt-4o", api_base=base, **primary),
            deployment(
                "backup",
                "openai/gpt-4o-mini",
                api_base=f"{backup.base_url}/v1",
                api_key="os.environ/DEEPSEEK_API_KEY",
                model_info={"supports_assistant_prefill": True},
            ),
            deployment("solo-refused", "openai/gpt-4o", api_base=closed, **primary),
            deployment("guarded-refused", "openai/gpt-4o", api_base=closed, **primary),
            deployment(
                "wrong-key",
                "openai/gpt-4o",
                api_base=base,
                api_key="os.environ/WRONG_OPENAI_KEY",
            ),
            router_settings={
                "num_retries": 0,
                # Tests share this gateway; litellm reads `cooldown_time: 0` as its 5 s default.
                "disable_cooldowns": True,
                "enable_mid_stream_fallback_continuation": True,
                "fallbacks": [{"guarded": ["backup"]}, {"guarded-refused": ["backup"]}],
            },
        )
    )


@pytest.fixture(scope="module")
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


@dataclass
class Reply:
    """What the client got: an answer's text, or an error (status, headers, OpenAI error body)."""

    request_id: str
    text: str = ""
    status: int = 200
    headers: dict[str, str] | None = None
    error: dict[str, Any] | None = None
    raw: str = ""
    mid_stream: bool = False  # the error came as an SSE event in a 200 stream

    def outcome(self) -> str:
        if self.error is None:
            return f"200, {self.text!r}"
        code = self.error.get("code")
        if self.mid_stream:
            return f"200, {self.text!r}, then SSE error event {code}"
        retry_after = (self.headers or {}).get("retry-after")
        return f"{self.status} {code}" + (f", Retry-After: {retry_after}" if retry_after else "")


def call(client: openai.OpenAI, model: str, stream: bool) -> Reply:
    """One request through the openai SDK, errors caught and kept."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=stream,
        )
    except openai.APIStatusError as exc:
        return Reply(
            request_id=exc.response.headers["x-request-id"],
            status=exc.status_code,
            headers=dict(exc.response.headers),
            error=exc.body if isinstance(exc.body, dict) else {},
            raw=exc.response.text,
        )
    reply = Reply(request_id=raw.headers["x-request-id"])
    if not stream:
        completion = raw.parse()
        reply.text = completion.choices[0].message.content or ""  # type: ignore[union-attr]
        return reply
    pieces: list[str] = []
    try:
        for chunk in raw.parse():  # type: ignore[union-attr]
            pieces.extend(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as exc:
        reply.mid_stream = True
        reply.error = exc.body if isinstance(exc.body, dict) else {"message": exc.message}
    reply.text = "".join(pieces)
    return reply


def stage(upstream: OpenAIUpstream, case: Case, guarded: bool) -> str:
    """Queue the case's fault; the model to ask for."""
    if case.staged is None:
        return "guarded-refused" if guarded else "solo-refused"
    upstream.fail_next(case.staged)
    return "guarded" if guarded else "solo"


# -- (a) a fallback deployment is configured: the client gets an answer ---------------------------


@pytest.mark.parametrize(
    ("case", "stream"),
    _matrix(),
)
def test_with_a_fallback_the_client_gets_an_answer(
    client: openai.OpenAI,
    upstream: OpenAIUpstream,
    backup: OpenAIUpstream,
    aws: dict[str, str],
    case: Case,
    stream: bool,
) -> None:
    model = stage(upstream, case, guarded=True)
    started = time.monotonic()
    reply = call(client, model, stream)
    elapsed = time.monotonic() - started
    item = usage_item(aws["UsageTable"], reply.request_id)
    observed(stream, case.fault, "backup", reply, item)

    assert reply.error is None, reply.raw or reply.error
    assert len(backup.requests) == 1
    assert len(upstream.requests) == (0 if case.staged is None else 1)
    assert elapsed < SLOW_S - 0.5
    assert item["status"] == 200
    assert "error_type" not in item
    assert item["model_requested"] == model
    assert item["stream"] is stream
    if case is CUT:
        # The backup continues from the words the client already has, given as a prefill.
        assert reply.text.startswith("Hello from")
        assert reply.text.endswith(BACKUP_REPLY)
        assert backup.requests[0].body["messages"][-1]["role"] == "assistant"
        return  # its metering: test_a_stream_continued_by_the_fallback_is_metered_as_the_fallback
    assert reply.text == BACKUP_REPLY
    assert (item["retries"], item["fallbacks"]) == (0, 1)
    assert item["deployment_id"] == BACKUP
    assert item["model_group"] == "backup"


def test_a_stream_continued_by_the_fallback_is_metered_as_the_fallback(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.fail_next(CUT.staged)  # type: ignore[arg-type]
    reply = call(client, "guarded", stream=True)
    assert reply.error is None
    item = usage_item(aws["UsageTable"], reply.request_id)
    assert item["status"] == 200
    assert item["fallbacks"] == 1
    assert (item["deployment_id"], item["model_group"]) == (BACKUP, "backup")


# -- (b) no fallback: the right status, in OpenAI's error shape -----------------------------------


@pytest.mark.parametrize(
    ("case", "stream"),
    _matrix(),
)
def test_without_a_fallback_the_client_gets_an_openai_error(
    client: openai.OpenAI,
    upstream: OpenAIUpstream,
    backup: OpenAIUpstream,
    aws: dict[str, str],
    case: Case,
    stream: bool,
) -> None:
    model = stage(upstream, case, guarded=False)
    started = time.monotonic()
    reply = call(client, model, stream)
    elapsed = time.monotonic() - started
    item = usage_item(aws["UsageTable"], reply.request_id)
    observed(stream, case.fault, "none", reply, item)

    assert reply.error is not None, f"answered {reply.text!r}"
    assert set(reply.error) == OPENAI_ERROR_FIELDS
    assert reply.error["type"] == case.error_type
    assert model in reply.error["message"]
    if case is CUT:
        # The stream had started: the failure arrives as an SSE error event after the words
        # before the cut. litellm reports the dropped connection as a connection error.
        assert reply.mid_stream
        assert reply.text.startswith("Hello from")
        assert reply.error["code"] in {"provider_error", "provider_unreachable"}
    else:
        # Before the first byte: a stream is answered only once its first chunk has come.
        assert not reply.mid_stream
        assert reply.status == case.status
        assert reply.error["code"] == case.code
    if case.retry_after:
        assert reply.headers and reply.headers["retry-after"] == case.retry_after
    assert elapsed < SLOW_S - 0.5
    assert backup.requests == []
    assert item["status"] == case.status
    assert item["error_type"] == case.error_type
    assert item["error_code"] == reply.error["code"]
    assert item["model_requested"] == model
    assert (item["retries"], item["fallbacks"]) == (0, 0)
    assert item["deployment_id"] == (SOLO_REFUSED if case.staged is None else SOLO)
    assert item["stream"] is stream


# -- the seed's troubleshooting cases -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_invalid_provider_key_is_502_naming_the_model_never_the_key(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str], stream: bool
) -> None:
    reply = call(client, "wrong-key", stream)
    item = usage_item(aws["UsageTable"], reply.request_id)
    observed(stream, 'invalid provider key ("Invalid API key")', "none", reply, item)
    assert reply.error is not None and not reply.mid_stream
    assert reply.status == 502
    assert reply.error["code"] == "provider_authentication_failed"
    assert "wrong-key" in reply.error["message"]
    assert WRONG_UPSTREAM_KEY not in reply.raw and UPSTREAM_KEY not in reply.raw
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {WRONG_UPSTREAM_KEY}"
    assert (item["status"], item["error_code"]) == (502, "provider_authentication_failed")
    assert item["deployment_id"] == "wrong-key#5"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_rate_limit_exceeded_is_429_with_retry_after_even_when_the_provider_gives_none(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str], stream: bool
) -> None:
    upstream.fail_next(Fault(status=429, message="Rate limit exceeded"))
    reply = call(client, "solo", stream)
    item = usage_item(aws["UsageTable"], reply.request_id)
    observed(stream, '429 "Rate limit exceeded", no Retry-After', "none", reply, item)
    assert reply.error is not None and reply.status == 429
    assert reply.error["type"] == "rate_limit_error"
    assert "Rate limit exceeded" in reply.error["message"]
    assert reply.headers and int(reply.headers["retry-after"]) > 0
    assert (item["status"], item["error_code"]) == (429, "provider_rate_limited")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_model_not_found_is_404_listing_the_models(
    client: openai.OpenAI, upstream: OpenAIUpstream, aws: dict[str, str], stream: bool
) -> None:
    reply = call(client, "gpt-5", stream)
    item = usage_item(aws["UsageTable"], reply.request_id)
    observed(stream, 'unknown model ("Model not found")', "none", reply, item)
    assert reply.error is not None and reply.status == 404
    assert reply.error["code"] == "model_not_found"
    message = reply.error["message"]
    assert "gpt-5" in message
    assert all(name in message for name in ("solo", "guarded", "backup", "wrong-key"))
    assert upstream.requests == []
    assert (item["status"], item["error_code"]) == (404, "model_not_found")
