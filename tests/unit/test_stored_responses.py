"""Stored responses on the moto stack: a conversation within DynamoDB's item limit stays in
the item; one over it is an S3 object the item names, followed by reads and removed by
`delete`; with no bucket one over the limit is refused by `check_fits` and, where it reaches
`put` (a stream, already answered), logged and not stored."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from llm_proxy.errors import ProxyError
from llm_proxy.store.stored_responses import (
    INLINE_LIMIT_BYTES,
    StoredResponse,
    StoredResponses,
)

from devstack.aws import LocalAWS

BIG = "x" * (INLINE_LIMIT_BYTES + 1)


def stored(key_id: str = "k1", text: str = "hi") -> StoredResponse:
    return StoredResponse(
        response_id=f"resp_{uuid.uuid4().hex}",
        key_id=key_id,
        input=[{"type": "message", "role": "user", "content": "question"}],
        response={"output": [{"type": "message", "content": [{"text": text}]}]},
    )


@pytest.fixture
def names(aws_stack: LocalAWS) -> dict[str, str]:
    return aws_stack.resources


def item_of(names: dict[str, str], response_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb").Table(names["ResponsesTable"])
    found: dict[str, Any] | None = table.get_item(Key={"response_id": response_id}).get("Item")
    return found


def test_a_small_conversation_stays_in_the_item(names: dict[str, str]) -> None:
    store = StoredResponses(names["ResponsesTable"], 30, bucket=names["ReportBucket"])
    small = stored()
    store.put(small)
    item = item_of(names, small.response_id)
    assert item is not None and "object_key" not in item
    assert store.get(small.response_id, "k1") == small


def test_a_large_conversation_is_an_object_the_item_names(names: dict[str, str]) -> None:
    store = StoredResponses(names["ResponsesTable"], 30, bucket=names["ReportBucket"])
    large = stored(text=BIG)
    store.check_fits(large)
    store.put(large)
    item = item_of(names, large.response_id) or {}
    assert set(item) == {"response_id", "key_id", "expires_at", "object_key"}
    key = str(item["object_key"])
    assert key.startswith("responses/") and "k1" not in key
    assert store.get(large.response_id, "k1") == large
    with pytest.raises(ProxyError) as other_key:
        store.get(large.response_id, "k2")
    assert other_key.value.code == "response_not_found"

    store.delete(large.response_id, "k1")
    listed = boto3.client("s3").list_objects_v2(Bucket=names["ReportBucket"], Prefix=key)
    assert listed.get("KeyCount", 0) == 0
    assert item_of(names, large.response_id) is None


def test_an_object_gone_before_its_item_is_not_found(names: dict[str, str]) -> None:
    store = StoredResponses(names["ResponsesTable"], 30, bucket=names["ReportBucket"])
    large = stored(text=BIG)
    store.put(large)
    key = str((item_of(names, large.response_id) or {})["object_key"])
    boto3.client("s3").delete_object(Bucket=names["ReportBucket"], Key=key)
    with pytest.raises(ProxyError) as caught:
        store.get(large.response_id, "k1", param="previous_response_id")
    assert (caught.value.status, caught.value.param) == (404, "previous_response_id")


def test_a_spilled_response_read_without_a_bucket_is_a_503(names: dict[str, str]) -> None:
    large = stored(text=BIG)
    StoredResponses(names["ResponsesTable"], 30, bucket=names["ReportBucket"]).put(large)
    with pytest.raises(ProxyError) as caught:
        StoredResponses(names["ResponsesTable"], 30).get(large.response_id, "k1")
    assert (caught.value.status, caught.value.code) == (503, "dependency_unavailable")
    assert "LLM_PROXY__RESPONSES_BUCKET" in caught.value.message


def test_without_a_bucket_a_large_conversation_is_refused_or_logged_never_half_stored(
    names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    store = StoredResponses(names["ResponsesTable"], 30)
    large = stored(text=BIG)
    with pytest.raises(ProxyError) as caught:
        store.check_fits(large)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "response_too_large_to_store", "store")
    assert "400 KB" in error.message and "`store: false`" in error.message

    store.put(large)
    assert item_of(names, large.response_id) is None
    [logged] = [r for r in caplog.records if r.getMessage() == "response not stored"]
    assert logged.levelname == "ERROR"
    assert logged.__dict__["error"] == "response_too_large_to_store"
    assert logged.__dict__["response_id"] == large.response_id


def test_without_a_table_nothing_is_refused() -> None:
    StoredResponses(None, 30).check_fits(stored(text=BIG))
