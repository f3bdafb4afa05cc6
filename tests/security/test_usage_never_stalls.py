"""A caller cannot make its usage go unmetered, nor stall the replay for everyone else.

Oversized names (a 2 KB agent, a 300 KB model) are cut to their bounds and metered, the rollup
key fits whatever the item holds, and a dead-letter queue with invalid and unreadable letters in
front of good ones is drained in one replay run: the good ones written, the bad ones moved to
the quarantine queue with their reasons. AWS is the moto server on loopback."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
from llm_proxy.accounting.dead_letters import encode
from llm_proxy.accounting.rollups import LABEL_BYTES, UNROUTED, Rollup, cut, key_of
from llm_proxy.accounting.usage import FIELD_BYTES, LABEL_FIELDS
from llm_proxy.store.rollups import RollupsTable
from llm_proxy.store.usage import Backoff, UsageTable

from tests.support.configs import one_deployment_config
from tests.support.functions import load_function
from tests.support.records import usage_record
from tests.support.stack import MASTER_KEY, usage_item

IN_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "llm-proxy-api"}


def new_queue(prefix: str) -> str:
    return str(
        boto3.client("sqs").create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    )


@pytest.fixture
def dlq(aws: dict[str, str]) -> Iterator[str]:
    url = new_queue("dlq")
    yield url
    boto3.client("sqs").delete_queue(QueueUrl=url)


@pytest.fixture
def quarantine(aws: dict[str, str]) -> Iterator[str]:
    url = new_queue("quarantine")
    yield url
    boto3.client("sqs").delete_queue(QueueUrl=url)


def messages(url: str) -> list[dict[str, Any]]:
    """Every message in the queue, with its attributes, left in place."""
    sqs = boto3.client("sqs")
    found: dict[str, dict[str, Any]] = {}
    while True:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        new = [m for m in batch if m["MessageId"] not in found]
        if not new:
            return list(found.values())
        found.update((m["MessageId"], m) for m in new)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def rollup(aws: dict[str, str], **labels: str) -> Rollup:
    rows = [
        row
        for row in RollupsTable(aws["RollupsTable"]).day(today())
        if all(getattr(row, name) == value for name, value in labels.items())
    ]
    assert len(rows) == 1, rows
    return rows[0]


def counts(aws: dict[str, str]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Today's rollups: (model, key, agent) -> (requests, errors)."""
    rows = RollupsTable(aws["RollupsTable"]).day(today())
    return {(row.model, row.key_id, row.agent): (row.requests, row.errors) for row in rows}


def letter(**fields: Any) -> dict[str, Any]:
    """A usage item as the gateway dead-letters it."""
    record = usage_record(
        key_id="master",
        model_group="gpt-3.5-turbo",
        prompt_tokens=6,
        completion_tokens=5,
        cost_usd=0.0000105,
        latency_ms=12.5,
    )
    return {**record.to_item(90), **fields}


def send(url: str, *bodies: str) -> None:
    for body in bodies:
        boto3.client("sqs").send_message(QueueUrl=url, MessageBody=body)


def run_replay(aws: dict[str, str], dlq: str, quarantine: str | None) -> dict[str, int]:
    """The replay function as deployed, with this test's queues."""
    env = {
        "LLM_PROXY__USAGE_TABLE": aws["UsageTable"],
        "LLM_PROXY__ROLLUPS_TABLE": aws["RollupsTable"],
        "LLM_PROXY__USAGE_DLQ_URL": dlq,
        "LLM_PROXY__USAGE_QUARANTINE_URL": quarantine or "",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        module = load_function("usage_replay", "usage_replay_never_stalls")
        result: dict[str, int] = module.handler({}, None)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return result


def stored(aws: dict[str, str], request_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb").Table(aws["UsageTable"])
    item = table.get_item(Key={"request_id": request_id}).get("Item")
    return dict(item) if item else None


# -- through the gateway -------------------------------------------------------------------

LONG_AGENT = "a" * 2048
WIDE_AGENT = "é" * 1024  # 2 KB of two-byte characters
HUGE_MODEL = "x" * 300_000


def within_bounds(item: dict[str, Any]) -> None:
    for name, value in item.items():
        if isinstance(value, str):
            limit = LABEL_BYTES if name in LABEL_FIELDS else FIELD_BYTES
            assert len(value.encode()) <= limit, name


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-agent": LONG_AGENT}, {}),
        ({}, {"metadata": {"agent": LONG_AGENT}}),
        ({}, {"metadata": {"agent": WIDE_AGENT}}),
        ({}, {"model": HUGE_MODEL}),
    ],
    ids=["x-agent", "metadata.agent", "multibyte-agent", "300kb-model"],
)
def test_oversized_names_are_metered_and_counted(
    gateway_for: Callable[..., str],
    aws: dict[str, str],
    dlq: str,
    headers: dict[str, str],
    body: dict[str, Any],
) -> None:
    # A model group of this test's own, so its rollup row counts this request alone.
    group = f"group-{uuid.uuid4().hex[:12]}"
    config = one_deployment_config(group)
    base = gateway_for(config, LLM_PROXY__USAGE_DLQ_URL=dlq, **IN_LAMBDA)
    model = f"{group}-{body['model']}" if "model" in body else group
    before = counts(aws)
    response = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
        json={**body, "model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    # Served, or refused for the name: metered either way.
    assert response.status_code in (200, 400, 404), response.text
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    assert item["status"] == response.status_code
    within_bounds(item)
    print(
        "PROBE",
        response.status_code,
        {
            k: (v[:30] if isinstance(v, str) else v)
            for k, v in item.items()
            if k in ("agent", "model_requested", "truncated", "error_code")
        },
    )
    for name, sent in (("agent", LONG_AGENT), ("agent", WIDE_AGENT), ("model_requested", model)):
        # Kept, where the gateway keeps the name at all: cut and marked.
        if sent in (*headers.values(), *_strings(body), model) and name in item:
            if len(sent.encode()) > LABEL_BYTES:
                assert item[name] == cut(sent, LABEL_BYTES)
                assert f"{len(sent.encode())} bytes, sha256:" in item[name]
                assert name in item["truncated"]
            else:
                assert item[name] == sent
    key = key_of(item)
    # A request refused before routing adds to the one `unrouted` row, whatever it named.
    assert key.model == (group if response.status_code == 200 else UNROUTED)
    labels = (key.model, key.key_id, key.agent)
    (requests, errors), (earlier, earlier_errors) = counts(aws)[labels], before.get(labels, (0, 0))
    assert (requests - earlier, errors - earlier_errors) == (
        1,
        0 if response.status_code == 200 else 1,
    )
    assert messages(dlq) == []


def _strings(body: dict[str, Any]) -> list[str]:
    metadata = body.get("metadata") or {}
    return [str(v) for v in metadata.values()]


# -- the replay ------------------------------------------------------------------------------


def invalid_letters() -> list[dict[str, Any]]:
    """Ten usage items no repair can make DynamoDB take, each for a different reason."""
    return [
        letter(request_id="r" * 3000),  # over the 2,048-byte partition key
        letter(request_id="r" * 2100),
        letter(request_id=""),  # an empty key
        letter(day="d" * 3000),  # the rollup's partition key
        letter(day=""),
        {k: v for k, v in letter().items() if k != "day"},  # no day at all
        {k: v for k, v in letter().items() if k != "request_id"},
        letter(prompt_tokens="many"),  # not a number
        letter(cost_usd="NaN"),
        letter(latency_ms=[1, 2]),
    ]


def test_ten_invalid_letters_do_not_hold_back_the_good_ones(
    aws: dict[str, str], dlq: str, quarantine: str
) -> None:
    agent = f"replay-{uuid.uuid4().hex[:8]}"
    bad = invalid_letters()
    good = [letter(agent=agent) for _ in range(5)]
    # A letter from before the bounds: a 2 KB agent, whose rollup key is now cut to fit.
    long_agent = f"old-{uuid.uuid4().hex}-" + "a" * 2048
    good.append(letter(agent=long_agent))
    # Over DynamoDB's 400 KB item size: repaired (cut) and written.
    huge = letter(agent=agent, deployment_model="openai/" + "z" * 500_000)
    send(dlq, *(encode(item) for item in bad), *(encode(item) for item in [*good, huge]))

    result = run_replay(aws, dlq, quarantine)

    assert result == {"written": 7, "duplicates": 0, "failed": 0, "quarantined": 10}
    for item in good:
        assert stored(aws, item["request_id"]) is not None
    repaired = stored(aws, huge["request_id"])
    assert repaired is not None
    assert repaired["truncated"] == ["deployment_model"]
    assert len(repaired["deployment_model"]) <= 1024
    assert rollup(aws, agent=agent).requests == 6
    assert rollup(aws, agent=cut(long_agent, LABEL_BYTES)).requests == 1
    assert messages(dlq) == []

    parked = messages(quarantine)
    assert len(parked) == 10
    bodies = [json.loads(m["Body"]) for m in parked]
    for message, body in zip(parked, bodies, strict=True):
        reason = message["MessageAttributes"]["reason"]["StringValue"]
        assert reason == body["reason"]
        assert reason.startswith(("ValidationException", "ValidationError", "malformed"))
    # Each record as it came, to fix and move back.
    assert sorted(json.dumps(b["item"], sort_keys=True) for b in bodies) == sorted(
        json.dumps(json.loads(encode(item)), sort_keys=True) for item in bad
    )


def test_unreadable_letters_are_quarantined(aws: dict[str, str], dlq: str, quarantine: str) -> None:
    good = letter(agent=f"after-junk-{uuid.uuid4().hex[:8]}")
    send(dlq, "not json at all", "[1, 2, 3]", '"a string"', encode(good))

    assert run_replay(aws, dlq, quarantine) == {
        "written": 1,
        "duplicates": 0,
        "failed": 0,
        "quarantined": 3,
    }
    assert stored(aws, good["request_id"]) is not None
    assert messages(dlq) == []
    parked = {
        json.loads(m["Body"])["body"]: m["MessageAttributes"]["reason"]["StringValue"]
        for m in messages(quarantine)
    }
    assert parked.keys() == {"not json at all", "[1, 2, 3]", '"a string"'}
    assert parked["not json at all"].startswith("unreadable: not JSON")
    assert parked["[1, 2, 3]"] == "unreadable: not a JSON object"


def test_a_quarantined_record_moved_back_is_written_once_its_cause_is_fixed(
    aws: dict[str, str], dlq: str, quarantine: str
) -> None:
    # The quarantine's body is the record with its reason: moved back to the dead-letter
    # queue (SQS's redrive), the replay writes the record itself.
    item = letter(agent=f"moved-back-{uuid.uuid4().hex[:8]}")
    envelope = {"reason": "ValidationException: the table was being rebuilt", "item": item}
    send(dlq, encode(envelope))
    assert run_replay(aws, dlq, quarantine)["written"] == 1
    written = stored(aws, item["request_id"])
    assert written is not None and "reason" not in written
    assert messages(quarantine) == []


def test_without_a_quarantine_queue_invalid_letters_stay_and_good_ones_are_written(
    aws: dict[str, str], dlq: str
) -> None:
    bad = invalid_letters()
    good = [letter(agent=f"no-quarantine-{uuid.uuid4().hex[:8]}") for _ in range(3)]
    send(dlq, *(encode(item) for item in [*bad, *good]))
    result = run_replay(aws, dlq, None)
    # Left for the queue's redrive policy (maxReceiveCount) to move on.
    assert result == {"written": 3, "duplicates": 0, "failed": 10, "quarantined": 0}
    assert all(stored(aws, item["request_id"]) for item in good)


# -- the live write ---------------------------------------------------------------------------


def test_a_record_with_oversized_names_is_written_cut_and_counted(
    aws: dict[str, str], dlq: str
) -> None:
    # Whatever the request path lets through, the store bounds what it writes.
    store = UsageTable(
        aws["UsageTable"], 90, rollups_table=aws["RollupsTable"], dead_letter_queue=dlq
    )
    agent = f"store-{uuid.uuid4().hex}-" + "a" * 2048
    model = f"store-{uuid.uuid4().hex}-" + "m" * 300_000
    record = usage_record(
        key_id="master",
        agent=agent,
        model_requested=model,
        prompt_tokens=3,
    )
    assert store.write(record) is True
    item = usage_item(aws["UsageTable"], record.request_id)
    assert (item["agent"], item["model_requested"]) == (
        cut(agent, LABEL_BYTES),
        cut(model, LABEL_BYTES),
    )
    assert item["truncated"] == ["agent", "model_requested"]
    row = rollup(aws, agent=item["agent"])
    assert (row.model, row.requests, row.prompt_tokens) == (item["model_requested"], 1, 3)
    assert messages(dlq) == []


def test_a_record_dynamodb_refuses_is_quarantined_with_its_reason(
    aws: dict[str, str], dlq: str, quarantine: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = UsageTable(
        aws["UsageTable"],
        90,
        rollups_table=aws["RollupsTable"],
        dead_letter_queue=dlq,
        quarantine_queue=quarantine,
    )
    record = usage_record(request_id="q" * 3000)
    assert store.write(record) is False

    (message,) = messages(quarantine)
    body = json.loads(message["Body"])
    assert body["item"]["request_id"] == record.request_id
    assert body["reason"].startswith("ValidationException")
    assert message["MessageAttributes"]["reason"]["StringValue"] == body["reason"]
    assert messages(dlq) == []
    assert "usage record quarantined" in [r.getMessage() for r in caplog.records]


class CountingBackoff(Backoff):
    """The store's backoff, with every wait noted (and none taken)."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "waits", [])

    def delay(self, attempt: int) -> float:
        self.waits.append(attempt)  # type: ignore[attr-defined]
        return 0.0


def test_without_a_quarantine_queue_a_refused_record_waits_in_the_dead_letter_queue(
    aws: dict[str, str], dlq: str
) -> None:
    backoff = CountingBackoff()
    store = UsageTable(
        aws["UsageTable"],
        90,
        rollups_table=aws["RollupsTable"],
        dead_letter_queue=dlq,
        backoff=backoff,
    )
    record = usage_record(request_id="w" * 3000)
    assert store.write(record) is False
    assert backoff.waits == []  # refused as invalid: not retried
    (message,) = messages(dlq)
    assert json.loads(message["Body"])["request_id"] == record.request_id
