"""A stored response over DynamoDB's 400 KB item limit is never lost silently: its
conversation is kept in S3 (the report bucket's `responses/` prefix) and followed by `GET`,
`previous_response_id`, the input items and `DELETE`; where no bucket is configured, it is
refused with a 400 before it is answered (before the provider is called where its input alone
is too large), never answered with an id that was not stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from devstack.aws import load_template
from devstack.doubles.openai_upstream import OpenAIUpstream
from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, gateway_config, openai_double
from tests.support.stack import MASTER_KEY, usage_item

INPUT_PRICE, OUTPUT_PRICE = Decimal("1e-6"), Decimal("2e-6")
CONFIG = gateway_config(
    openai_double(
        "gpt",
        "openai/gpt-5-mini",
        input_cost_per_token=INPUT_PRICE,
        output_cost_per_token=OUTPUT_PRICE,
    ),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)
# About 1 MB of text, in words (the double counts tokens by words).
BIG_TEXT = "spill " * 175_000
# About 1 MB in a thousand words: a thousand stream events (the double streams word by word).
LONG_WORDS = " ".join(["w" * 1000] * 1000)
HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def with_bucket(gateway_for: Callable[..., str]) -> Iterator[httpx.Client]:
    """The gateway as the template deploys it: the report bucket is the responses bucket."""
    with httpx.Client(base_url=gateway_for(CONFIG), headers=HEADERS, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def without_bucket(gateway_for: Callable[..., str]) -> Iterator[httpx.Client]:
    url = gateway_for(CONFIG, LLM_PROXY__RESPONSES_BUCKET="")
    with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
        yield client


def responses_sent(upstream: OpenAIUpstream) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.path == "/v1/responses"]


def stored_item(aws: dict[str, str], response_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb").Table(aws["ResponsesTable"])
    item: dict[str, Any] | None = table.get_item(Key={"response_id": response_id}).get("Item")
    return item


def object_exists(bucket: str, key: str) -> bool:
    try:
        boto3.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchKey")
        return False
    return True


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item.get("type") == "message"
        for part in item["content"]
        if part.get("type") == "output_text"
    )


def test_a_1mb_response_is_kept_in_s3_and_followed_by_get_and_a_follow_up(
    with_bucket: httpx.Client, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.reply = BIG_TEXT
    created = with_bucket.post("/v1/responses", json={"model": "gpt", "input": "Write a lot"})
    assert created.status_code == 200, created.text
    response_id = created.json()["id"]

    item = stored_item(aws, response_id)
    assert item is not None and "input" not in item and "response" not in item
    key = str(item["object_key"])
    assert key.startswith("responses/") and key.endswith(f"/{response_id}.json")
    assert MASTER_KEY not in key and "master" not in key
    assert int(item["expires_at"]) > 0 and item["key_id"] == "master"
    assert object_exists(aws["ReportBucket"], key)

    got = with_bucket.get(f"/v1/responses/{response_id}")
    assert got.status_code == 200, got.text
    assert got.json()["id"] == response_id and output_text(got.json()) == BIG_TEXT
    items = with_bucket.get(f"/v1/responses/{response_id}/input_items")
    assert items.status_code == 200 and items.json()["data"][0]["content"][0]["text"] == (
        "Write a lot"
    )

    upstream.reply = "Done."
    follow_up = with_bucket.post(
        "/v1/responses",
        json={"model": "gpt", "input": "Now summarise", "previous_response_id": response_id},
    )
    assert follow_up.status_code == 200, follow_up.text
    sent = responses_sent(upstream)[-1]["input"]
    # The whole conversation: the first input, the 1 MB answer, then the new input.
    assert json.dumps(sent[0]).count("Write a lot") == 1
    assert BIG_TEXT in json.dumps(sent)
    assert json.dumps(sent[-1]).count("Now summarise") == 1
    # The follow-up's conversation is over the limit too: it is spilled, and followed.
    assert "object_key" in (stored_item(aws, follow_up.json()["id"]) or {})


def test_delete_removes_the_item_and_its_object(
    with_bucket: httpx.Client, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.reply = BIG_TEXT
    response_id = with_bucket.post("/v1/responses", json={"model": "gpt", "input": "x"}).json()[
        "id"
    ]
    key = str((stored_item(aws, response_id) or {})["object_key"])

    deleted = with_bucket.delete(f"/v1/responses/{response_id}")
    assert deleted.status_code == 200, deleted.text
    assert not object_exists(aws["ReportBucket"], key)
    assert stored_item(aws, response_id) is None
    gone = with_bucket.get(f"/v1/responses/{response_id}")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "response_not_found")


def test_a_streamed_1mb_response_is_stored_when_the_stream_ends(
    with_bucket: httpx.Client, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.reply = LONG_WORDS
    body = {"model": "gpt", "input": "Stream a lot", "stream": True}
    with with_bucket.stream("POST", "/v1/responses", json=body) as streamed:
        assert streamed.status_code == 200
        events = [
            json.loads(line[len("data: ") :])
            for line in streamed.iter_lines()
            if line.startswith("data: ")
        ]
    assert events[-1]["type"] == "response.completed"
    response_id = events[-1]["response"]["id"]
    got = with_bucket.get(f"/v1/responses/{response_id}")
    assert got.status_code == 200, got.text
    assert output_text(got.json()) == LONG_WORDS
    assert "object_key" in (stored_item(aws, response_id) or {})


@pytest.mark.parametrize("stream", [False, True])
def test_without_a_bucket_a_large_input_is_refused_before_the_provider_and_not_charged(
    without_bucket: httpx.Client, upstream: OpenAIUpstream, aws: dict[str, str], stream: bool
) -> None:
    body = {"model": "gpt", "input": BIG_TEXT, "stream": stream}
    refused = without_bucket.post("/v1/responses", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "response_too_large_to_store",
        "invalid_request_error",
        "store",
    )
    assert "400 KB" in error["message"] and "`store: false`" in error["message"]
    assert responses_sent(upstream) == []
    usage = usage_item(aws["UsageTable"], refused.headers["x-request-id"])
    assert (usage["status"], usage["error_code"]) == (400, "response_too_large_to_store")
    assert Decimal(usage.get("cost_usd", 0)) == 0
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (0, 0)


def test_without_a_bucket_store_false_is_answered(
    without_bucket: httpx.Client, upstream: OpenAIUpstream
) -> None:
    answered = without_bucket.post(
        "/v1/responses", json={"model": "gpt", "input": BIG_TEXT, "store": False}
    )
    assert answered.status_code == 200, answered.text
    assert len(responses_sent(upstream)) == 1


def test_without_a_bucket_a_large_answer_is_refused_not_announced(
    without_bucket: httpx.Client, upstream: OpenAIUpstream, aws: dict[str, str]
) -> None:
    upstream.reply = BIG_TEXT
    refused = without_bucket.post("/v1/responses", json={"model": "gpt", "input": "Write a lot"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "response_too_large_to_store"
    assert "resp_" not in refused.text
    # The provider answered and was paid: the usage is charged, as the failure it became.
    usage = usage_item(aws["UsageTable"], refused.headers["x-request-id"])
    assert usage["status"] == 400 and usage["completion_tokens"] == 175_000
    assert Decimal(usage["cost_usd"]) > 0


def test_without_a_bucket_a_stream_too_large_to_store_is_logged_and_its_id_unknown(
    without_bucket: httpx.Client,
    upstream: OpenAIUpstream,
    aws: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream's id is out before its size is known: the stream completes, the failure to
    store it is logged as an error, and the id is unknown, never half-stored."""
    upstream.reply = LONG_WORDS
    body = {"model": "gpt", "input": "Stream a lot", "stream": True}
    with without_bucket.stream("POST", "/v1/responses", json=body) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    completed = json.loads(lines[-1][len("data: ") :])
    assert completed["type"] == "response.completed"
    response_id = completed["response"]["id"]
    assert stored_item(aws, response_id) is None
    unknown = without_bucket.get(f"/v1/responses/{response_id}")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "response_not_found")
    [logged] = [r for r in caplog.records if r.getMessage() == "response not stored"]
    assert logged.levelname == "ERROR"
    assert (logged.__dict__["response_id"], logged.__dict__["error"]) == (
        response_id,
        "response_too_large_to_store",
    )


# --- the template -------------------------------------------------------------------------


def test_the_api_functions_may_only_put_get_and_delete_response_objects() -> None:
    template = load_template()
    resources = template["Resources"]
    for function in ("ApiFunction", "ApiStreamFunction"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["LLM_PROXY__RESPONSES_BUCKET"] == {"Ref": "ReportBucket"}
    policy = resources["ApiDataAccessPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    on_s3 = [s for s in policy if any(str(a).startswith("s3:") for a in s["Action"])]
    assert on_s3 == [
        {
            "Sid": "StoredResponseObjects",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
            "Resource": {"Fn::Sub": "${ReportBucket.Arn}/responses/*"},
        }
    ]


def test_response_objects_expire_with_the_items_retention() -> None:
    from llm_proxy.settings import ApiSettings

    bucket = load_template()["Resources"]["ReportBucket"]["Properties"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    [expiring] = [r for r in rules if r.get("Prefix") == "responses/" and "ExpirationInDays" in r]
    retention = ApiSettings.model_fields["responses_retention_days"].default
    assert expiring["ExpirationInDays"] == retention
    # Versioned bucket: a deleted or expired conversation's data does not outlive a day.
    assert expiring["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    reports = [r for r in rules if r["Id"] == "ExpireReplacedReports"]
    assert reports[0]["Prefix"] == "reports/"


def test_the_local_bucket_has_the_templates_versioning_and_lifecycle(aws: dict[str, str]) -> None:
    s3 = boto3.client("s3")
    assert s3.get_bucket_versioning(Bucket=aws["ReportBucket"])["Status"] == "Enabled"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=aws["ReportBucket"])["Rules"]
    [expiring] = [r for r in rules if r["ID"] == "ExpireStoredResponses"]
    assert expiring["Filter"] == {"Prefix": "responses/"}
    assert expiring["Expiration"] == {"Days": 30}
