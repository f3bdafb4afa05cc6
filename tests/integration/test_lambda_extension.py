"""The api function under the Lambda runtime's own client (`awslambdaric`), against a loopback
Runtime and Extensions API: its internal extension writes the usage after the response, and
before the environment would be frozen. DynamoDB sits behind a proxy that adds 150 ms to every
call, and notes when each call was made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from devstack.aws import LocalAWS
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.runtime_api import Invocation, RuntimeApi
from devstack.server import BackgroundServer
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

DYNAMODB_DELAY_S = 0.15


@dataclass
class Call:
    operation: str
    started: float
    ended: float


class SlowDynamoDB:
    """Forwards AWS calls to moto; DynamoDB's take 150 ms longer and are noted."""

    def __init__(self, moto: str) -> None:
        self.moto = moto
        self.calls: list[Call] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        body = await request.body()
        target = request.headers.get("x-amz-target", "")
        started = time.monotonic()
        if target.startswith("DynamoDB_"):
            await _sleep(DYNAMODB_DELAY_S)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient() as client:
            upstream = await client.request(
                request.method, f"{self.moto}{request.url.path}", content=body, headers=headers
            )
        if target.startswith("DynamoDB_"):
            self.calls.append(Call(target.split(".")[-1], started, time.monotonic()))
        response = Response(upstream.content, upstream.status_code, dict(upstream.headers))
        await response(scope, receive, send)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@pytest.fixture
def slow_aws(aws_stack: LocalAWS) -> Iterator[tuple[str, SlowDynamoDB]]:
    proxy = SlowDynamoDB(aws_stack.endpoint)
    server = BackgroundServer(proxy).start()
    yield server.url, proxy
    server.stop()


def start_function(runtime: RuntimeApi, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "app.handler"],
        cwd=REPO / "functions" / "api",
        env={
            **os.environ,
            **env,
            "AWS_LAMBDA_RUNTIME_API": runtime.address,
            "AWS_LAMBDA_FUNCTION_NAME": "api",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            # As Lambda's Python 3.12 runtime sets it: the runtime client then polls for
            # invocations on a thread of its own, and the main thread takes signals.
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "PYTHONPATH": os.pathsep.join([str(REPO / "layers" / "core"), str(REPO)]),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def chat_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(
        (REPO / "events" / "chat_completion.json").read_text().replace("sk-1234", MASTER_KEY)
    )
    event["requestContext"]["requestId"] = f"extension-{uuid.uuid4().hex}"
    return event


def wait(invocation: Invocation, what: str) -> None:
    event = invocation.answered if what == "answered" else invocation.frozen
    assert event.wait(120), f"invocation not {what}"


def test_usage_is_written_after_the_response_and_before_the_freeze(
    aws_stack: LocalAWS,
    aws: dict[str, str],
    slow_aws: tuple[str, SlowDynamoDB],
    upstream: OpenAIUpstream,
) -> None:
    endpoint, dynamodb = slow_aws
    runtime = RuntimeApi().start()
    function = start_function(
        runtime,
        {
            **aws_stack.env,
            **aws_stack.function_env("ApiFunction"),
            "AWS_ENDPOINT_URL": endpoint,
            "LLM_PROXY__ENV": "aws",
            "LLM_PROXY__CONFIG_PATH": str(REPO / "tests" / "fixtures" / "gateway.yaml"),
            "TEST_OPENAI_BASE": f"{upstream.base_url}/v1",
        },
    )
    try:
        first_event = chat_event()
        first = runtime.invoke(first_event)
        wait(first, "answered")
        assert runtime.extensions, "the function registered no extension"
        second_event = chat_event()
        second = runtime.invoke(second_event)
        wait(first, "frozen")
        wait(second, "answered")
        response = json.loads(first.response or b"{}")
        assert response["statusCode"] == 200, response
        writes = [call for call in dynamodb.calls if call.operation == "TransactWriteItems"]
        assert writes, "no usage item was written"
        first_write = min(writes, key=lambda call: call.started)
        # The client had its answer before the usage write began, and the write was done before
        # the environment could be frozen; no DynamoDB call at all was awaited before the
        # response (150 ms each here).
        assert first.responded_at <= first_write.started
        assert first_write.ended <= first.frozen_at
        during = [c for c in dynamodb.calls if first.handed_at <= c.started <= first.frozen_at]
        assert during and all(call.started >= first.responded_at for call in during)
        item = (
            boto3.resource("dynamodb")
            .Table(aws["UsageTable"])
            .get_item(Key={"request_id": first_event["requestContext"]["requestId"]})
            .get("Item")
        )
        assert item is not None and item["status"] == 200
        # The Shutdown phase: the process finishes within the grace period, nothing is left
        # unwritten.
        wait(second, "frozen")
        assert runtime.shutdown(function), "the function outlived the shutdown's grace period"
        usage = boto3.resource("dynamodb").Table(aws["UsageTable"])
        for invocation in (first_event, second_event):
            request_id = invocation["requestContext"]["requestId"]
            assert usage.get_item(Key={"request_id": request_id}).get("Item") is not None
    finally:
        function.kill()
        output, _ = function.communicate(timeout=30)
        runtime.stop()
    assert runtime.errors == [], output[-3000:]
    assert runtime.refused == [], output[-3000:]


def test_without_the_extension_the_usage_write_precedes_the_response(
    aws_stack: LocalAWS, slow_aws: tuple[str, SlowDynamoDB], upstream: OpenAIUpstream
) -> None:
    endpoint, dynamodb = slow_aws
    runtime = RuntimeApi().start()
    function = start_function(
        runtime,
        {
            **aws_stack.env,
            **aws_stack.function_env("ApiFunction"),
            "AWS_ENDPOINT_URL": endpoint,
            "LLM_PROXY__ENV": "aws",
            "LLM_PROXY__CONFIG_PATH": str(REPO / "tests" / "fixtures" / "gateway.yaml"),
            "TEST_OPENAI_BASE": f"{upstream.base_url}/v1",
            "LLM_PROXY__AFTER_RESPONSE_EXTENSION": "false",
        },
    )
    try:
        invocation = runtime.invoke(chat_event())
        wait(invocation, "answered")
        assert runtime.extensions == []
        writes = [call for call in dynamodb.calls if call.operation == "TransactWriteItems"]
        assert writes and max(call.ended for call in writes) <= invocation.responded_at
    finally:
        function.terminate()
        function.communicate(timeout=30)
        runtime.stop()


def test_the_emulator_refuses_what_aws_refuses_internal_extensions() -> None:
    """The registrations the old extension made (SHUTDOWN), and any after init, are refused as
    AWS refuses them; INVOKE during init is taken."""
    runtime = RuntimeApi().start()
    register = f"http://{runtime.address}/2020-01-01/extension/register"
    try:
        for events in (["INVOKE", "SHUTDOWN"], ["SHUTDOWN"], []):
            refused = httpx.post(
                register, json={"events": events}, headers={"Lambda-Extension-Name": "x"}
            )
            assert refused.status_code == 403, events
        taken = httpx.post(
            register, json={"events": ["INVOKE"]}, headers={"Lambda-Extension-Name": "x"}
        )
        assert taken.status_code == 200
        runtime.init_done = True
        late = httpx.post(
            register, json={"events": ["INVOKE"]}, headers={"Lambda-Extension-Name": "y"}
        )
        assert late.status_code == 403
    finally:
        runtime.stop()
