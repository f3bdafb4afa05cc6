"""No call goes unmetered: with DynamoDB unavailable or throttled, every request is still
served, its usage item waits in the SQS dead-letter queue (moto), and the replay function
writes it once, with its rollup counted once, however often it is replayed."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi import FastAPI, Request, Response
from llm_proxy import aws as llm_aws
from llm_proxy.accounting.rollups import Rollup
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.store.rollups import RollupsTable
from llm_proxy.store.usage import UsageTable

from devstack.aws import LocalAWS
from devstack.gateway import gateway_env, gateway_process
from devstack.server import BackgroundServer
from tests.support.configs import one_deployment_config
from tests.support.functions import load_function
from tests.support.stack import MASTER_KEY, usage_item

M = 6
MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
CONFIG = one_deployment_config()
# As deployed: in Lambda the usage write is done before the response; elsewhere (uvicorn) it
# runs after it (`ApiSettings.outlives_response`).
IN_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "llm-proxy-api"}
OUTSIDE_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": ""}


@pytest.fixture
def queue(aws: dict[str, str]) -> Iterator[str]:
    """A dead-letter queue of this test's own, created like the template's."""
    sqs = boto3.client("sqs")
    url = str(sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"])
    yield url
    sqs.delete_queue(QueueUrl=url)


def queued(url: str, at_least: int = 0, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The queue's messages; waits until there are `at_least` of them (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        bodies = _received(url)
        if len(bodies) >= at_least or time.monotonic() > deadline:
            return bodies
        time.sleep(0.1)


def _received(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        new = [m for m in messages if m["MessageId"] not in {b["MessageId"] for b in bodies}]
        if not new:
            return bodies
        bodies += new


def serve(gateway_for: Callable[..., str], agent: str, count: int, **overrides: str) -> list[str]:
    """`count` completions through a gateway with these settings; every one must be answered.
    As in Lambda unless overridden: each usage write is done when its response comes."""
    return ask(gateway_for(CONFIG, **{**IN_LAMBDA, **overrides}), agent, count)


def ask(base: str, agent: str, count: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(count):
            response = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {MASTER_KEY}", "x-agent": agent},
                json={"model": "gpt-3.5-turbo", "messages": MESSAGES},
            )
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
    return ids


def replay(aws: dict[str, str], queue: str, **overrides: str) -> dict[str, int]:
    env = {
        "LLM_PROXY__USAGE_TABLE": aws["UsageTable"],
        "LLM_PROXY__ROLLUPS_TABLE": aws["RollupsTable"],
        "LLM_PROXY__USAGE_DLQ_URL": queue,
        "LLM_PROXY__USAGE_QUARANTINE_URL": "",
        **overrides,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        result: dict[str, int] = load_function("usage_replay").handler({}, None)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return result


def stored(aws: dict[str, str], request_ids: list[str]) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(aws["UsageTable"])
    items = [table.get_item(Key={"request_id": rid}).get("Item") for rid in request_ids]
    return [item for item in items if item]


def rollup_of(aws: dict[str, str], agent: str) -> Rollup:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    rows = [row for row in RollupsTable(aws["RollupsTable"]).day(today) if row.agent == agent]
    assert len(rows) == 1, rows
    return rows[0]


def test_unavailable_table_loses_no_record_and_replay_is_idempotent(
    gateway_for: Callable[..., str], aws: dict[str, str], queue: str
) -> None:
    agent = f"fault-{uuid.uuid4().hex[:8]}"
    # DynamoDB unavailable for these M requests: the table the gateway writes does not exist.
    request_ids = serve(
        gateway_for,
        agent,
        M,
        LLM_PROXY__USAGE_TABLE="usage-table-that-is-gone",
        LLM_PROXY__USAGE_DLQ_URL=queue,
    )
    assert stored(aws, request_ids) == []
    letters = queued(queue)
    assert sorted(json.loads(m["Body"])["request_id"] for m in letters) == sorted(request_ids)

    assert replay(aws, queue) == {"written": M, "duplicates": 0, "failed": 0, "quarantined": 0}
    items = stored(aws, request_ids)
    assert len(items) == M
    assert all(item["status"] == 200 and item["agent"] == agent for item in items)
    assert all(item["cost_usd"] == Decimal("0.0000105") for item in items)
    row = rollup_of(aws, agent)
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (M, 6 * M, 5 * M)
    assert row.cost_usd == Decimal("0.0000105") * M

    # SQS delivers at least once: the same records replayed again change nothing.
    sqs = boto3.client("sqs")
    for message in letters:
        sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])
    assert replay(aws, queue) == {"written": 0, "duplicates": M, "failed": 0, "quarantined": 0}
    assert len(stored(aws, request_ids)) == M
    assert rollup_of(aws, agent).requests == M
    assert queued(queue) == []


def test_replay_while_the_table_is_still_unavailable_keeps_every_letter(
    gateway_for: Callable[..., str], aws: dict[str, str], queue: str
) -> None:
    request_ids = serve(
        gateway_for,
        f"fault-{uuid.uuid4().hex[:8]}",
        M,
        LLM_PROXY__USAGE_TABLE="usage-table-that-is-gone",
        LLM_PROXY__USAGE_DLQ_URL=queue,
    )
    sqs = boto3.client("sqs")
    # Letters a run leaves come back after this long.
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "1"})
    quarantine = str(sqs.create_queue(QueueName=f"quarantine-{uuid.uuid4().hex[:8]}")["QueueUrl"])
    try:
        # A missing table is an outage, not an invalid record: nothing is quarantined, the run
        # ends after the batch DynamoDB refused, and every letter waits for the next run.
        result = replay(
            aws,
            queue,
            LLM_PROXY__USAGE_TABLE="usage-table-that-is-gone",
            LLM_PROXY__USAGE_QUARANTINE_URL=quarantine,
        )
        assert result == {"written": 0, "duplicates": 0, "failed": M, "quarantined": 0}
        assert queued(quarantine) == []
    finally:
        sqs.delete_queue(QueueUrl=quarantine)
    time.sleep(1.1)
    assert len(queued(queue, at_least=M)) == M

    assert replay(aws, queue) == {"written": M, "duplicates": 0, "failed": 0, "quarantined": 0}
    assert len(stored(aws, request_ids)) == M


def test_after_the_response_an_unavailable_table_still_loses_no_record(
    gateway_for: Callable[..., str], aws: dict[str, str], queue: str
) -> None:
    # Outside Lambda the usage write runs after the response: its dead letters come later.
    request_ids = serve(
        gateway_for,
        f"fault-{uuid.uuid4().hex[:8]}",
        M,
        LLM_PROXY__USAGE_TABLE="usage-table-that-is-gone",
        LLM_PROXY__USAGE_DLQ_URL=queue,
        **OUTSIDE_LAMBDA,
    )
    letters = queued(queue, at_least=M)
    assert sorted(json.loads(m["Body"])["request_id"] for m in letters) == sorted(request_ids)
    assert stored(aws, request_ids) == []


class ThrottlingDynamoDB:
    """DynamoDB on loopback that answers ThrottlingException to the next `throttle` writes
    and forwards everything else to the moto server, as a throttled table would behave."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.throttle = 0
        self.throttled = 0
        # How long each forwarded transaction waits first: a slow table.
        self.delay_s = 0.0
        self.transactions = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/")
        async def dynamodb(request: Request) -> Response:
            target = request.headers.get("x-amz-target", "")
            if target.endswith("TransactWriteItems"):
                self.transactions += 1
            if target.endswith("TransactWriteItems") and self.throttle > 0:
                self.throttle -= 1
                self.throttled += 1
                body = {
                    "__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                    "message": "Rate of requests exceeds the allowed throughput.",
                }
                return Response(json.dumps(body), 400, media_type="application/x-amz-json-1.0")
            if target.endswith("TransactWriteItems"):
                await asyncio.sleep(self.delay_s)
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    self.upstream, content=await request.body(), headers=headers
                )
            return Response(
                answer.content, answer.status_code, media_type=answer.headers.get("content-type")
            )

        return app


@pytest.fixture
def throttled(aws: dict[str, str]) -> Iterator[ThrottlingDynamoDB]:
    """Point every DynamoDB client of this process at the throttling endpoint (boto3's
    service-specific endpoint variable), and back afterwards."""
    double = ThrottlingDynamoDB(aws["endpoint"])
    server = BackgroundServer(double.app()).start()
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.url
    llm_aws.client.cache_clear()
    try:
        yield double
    finally:
        os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB")
        llm_aws.client.cache_clear()
        server.stop()


def test_throttled_writes_are_retried_with_backoff(
    gateway_for: Callable[..., str], aws: dict[str, str], throttled: ThrottlingDynamoDB, queue: str
) -> None:
    agent = f"throttled-{uuid.uuid4().hex[:8]}"
    throttled.throttle = 2  # fewer than the attempts one write makes
    request_ids = serve(gateway_for, agent, 1, LLM_PROXY__USAGE_DLQ_URL=queue)
    assert throttled.throttled == 2
    assert len(stored(aws, request_ids)) == 1
    assert queued(queue) == []


def test_throttled_for_m_requests_loses_none_after_replay(
    gateway_for: Callable[..., str], aws: dict[str, str], throttled: ThrottlingDynamoDB, queue: str
) -> None:
    agent = f"throttled-{uuid.uuid4().hex[:8]}"
    throttled.throttle = 10_000  # throttled throughout the M requests
    request_ids = serve(gateway_for, agent, M, LLM_PROXY__USAGE_DLQ_URL=queue)
    assert throttled.throttled >= 2 * M  # each write was retried before it was dead-lettered
    assert stored(aws, request_ids) == []
    assert len(queued(queue)) == M

    throttled.throttle = 0  # the table recovers
    assert replay(aws, queue) == {"written": M, "duplicates": 0, "failed": 0, "quarantined": 0}
    assert len(stored(aws, request_ids)) == M
    assert rollup_of(aws, agent).requests == M


def test_outside_lambda_the_answer_does_not_wait_for_the_usage_write(
    gateway_for: Callable[..., str], aws: dict[str, str], throttled: ThrottlingDynamoDB
) -> None:
    base = gateway_for(CONFIG, **OUTSIDE_LAMBDA)
    throttled.delay_s = 2.0
    started = time.monotonic()
    (request_id,) = ask(base, f"slow-{uuid.uuid4().hex[:8]}", 1)
    assert time.monotonic() - started < throttled.delay_s
    assert stored(aws, [request_id]) == []
    assert usage_item(aws["UsageTable"], request_id)["status"] == 200


def test_in_lambda_the_usage_item_is_written_before_the_answer(
    gateway_for: Callable[..., str], aws: dict[str, str], throttled: ThrottlingDynamoDB
) -> None:
    # Lambda freezes the environment once the response is out: nothing may be left to run.
    base = gateway_for(CONFIG, **IN_LAMBDA)
    throttled.delay_s = 1.0
    started = time.monotonic()
    request_ids = ask(base, f"slow-{uuid.uuid4().hex[:8]}", 1)
    assert time.monotonic() - started >= throttled.delay_s
    assert len(stored(aws, request_ids)) == 1


def test_a_busy_server_writes_its_requests_usage_together(
    gateway_for: Callable[..., str], aws: dict[str, str], throttled: ThrottlingDynamoDB
) -> None:
    # Outside Lambda, usage items wait up to the batch's wait to be written with others: one
    # transaction for all of them and one update of their rollup, counted exactly once.
    base = gateway_for(CONFIG, **OUTSIDE_LAMBDA, LLM_PROXY__USAGE_BATCH_WAIT_MS="1000")
    agent = f"busy-{uuid.uuid4().hex[:8]}"

    def one(client: httpx.Client) -> str:
        answer = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}", "x-agent": agent},
            json={"model": "gpt-3.5-turbo", "messages": MESSAGES},
        )
        assert answer.status_code == 200, answer.text
        return answer.headers["x-request-id"]

    with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(12) as pool:
        request_ids = list(pool.map(lambda _: one(client), range(12)))
    items = [usage_item(aws["UsageTable"], rid) for rid in request_ids]
    assert all(item["status"] == 200 and item["agent"] == agent for item in items)
    assert throttled.transactions < len(request_ids)
    rollup = rollup_of(aws, agent)
    assert rollup.requests == 12
    assert rollup.prompt_tokens == sum(int(item["prompt_tokens"]) for item in items)
    assert rollup.cost_usd == sum(Decimal(item["cost_usd"]) for item in items)
    assert rollup.latency_ms_max == max(Decimal(item["latency_ms"]) for item in items)


def test_a_batch_with_an_item_already_stored_counts_each_item_once(aws: dict[str, str]) -> None:
    # The transaction is refused as a whole (the stored item's condition), so each record is
    # written on its own: the stored one is a duplicate, the others are added once.
    agent = f"replayed-{uuid.uuid4().hex[:8]}"
    table = UsageTable(aws["UsageTable"], 90, rollups_table=aws["RollupsTable"])
    records = [
        UsageRecord(request_id=uuid.uuid4().hex, endpoint="/v1/chat/completions", agent=agent)
        for _ in range(3)
    ]
    assert table.write(records[0])
    table.write_many(records)
    assert len(stored(aws, [record.request_id for record in records])) == 3
    assert rollup_of(aws, agent).requests == 3


def test_usage_still_queued_is_written_when_the_server_stops(
    aws_stack: LocalAWS, aws: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    env = gateway_env(
        aws_stack,
        {
            **os.environ,
            **OUTSIDE_LAMBDA,
            "LLM_PROXY__CONFIG_PATH": str(config),
            # Longer than the test takes: only the stop can write them.
            "LLM_PROXY__USAGE_BATCH_WAIT_MS": "5000",
        },
    )
    with gateway_process(env) as gateway:
        request_ids = ask(gateway.url, f"stopped-{uuid.uuid4().hex[:8]}", 3)
        assert stored(aws, request_ids) == []
    assert len(stored(aws, request_ids)) == 3
