"""The local stack is built from template.yaml, the template lints clean, and the sample
events in events/ have the shape API Gateway (and Mangum) expect."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from mangum import Mangum
from mangum.types import LambdaContext, Receive, Scope, Send

from devstack.aws import (
    LOCAL_NAMES,
    TEMPLATE_PATH,
    create_resources,
    function_environment,
    load_template,
    provider_keys_from_env,
    start_moto,
)
from devstack.processes import is_running
from devstack.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "events"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    server = start_moto(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _client(service: str, endpoint: str) -> Any:
    return boto3.session.Session().client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def _by_name(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: item["AttributeName"])


# --- template loading ---------------------------------------------------------------------


def test_load_template_turns_short_forms_into_intrinsics(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "AWSTemplateFormatVersion: 2010-09-09\n"
        "Resources:\n"
        "  R:\n"
        "    Properties:\n"
        "      A: !Ref Thing\n"
        "      B: !Sub ${AWS::StackName}/x\n"
        "      C: !GetAtt Table.StreamArn\n"
        "      D: !Join [',', [!Ref X, !Select [0, !Split ['/', !Ref Y]]]]\n"
        "      E: !If [IsProd, !Equals [a, b], !Not [!Condition C]]\n"
        "      F: !Sub ['${x}', {x: !GetAtt [T, Arn]}]\n"
    )
    doc = load_template(path)
    assert doc["AWSTemplateFormatVersion"] == "2010-09-09"
    props = doc["Resources"]["R"]["Properties"]
    assert props["A"] == {"Ref": "Thing"}
    assert props["B"] == {"Fn::Sub": "${AWS::StackName}/x"}
    assert props["C"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert props["D"] == {
        "Fn::Join": [",", [{"Ref": "X"}, {"Fn::Select": [0, {"Fn::Split": ["/", {"Ref": "Y"}]}]}]]
    }
    assert props["E"] == {
        "Fn::If": ["IsProd", {"Fn::Equals": ["a", "b"]}, {"Fn::Not": [{"Condition": "C"}]}]
    }
    assert props["F"] == {"Fn::Sub": ["${x}", {"x": {"Fn::GetAtt": ["T", "Arn"]}}]}


def test_template_declares_the_resources_the_local_stack_names(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["UsageTable"]["Type"] == "AWS::DynamoDB::Table"
    assert resources["ProviderKeysSecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert set(LOCAL_NAMES) <= set(resources)


def test_template_lints_clean() -> None:
    # cfn-lint has no `python -m` entry point; run its console-script function.
    result = subprocess.run(
        [sys.executable, "-c", "from cfnlint.runner import main; main()", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


# --- resources created from the template --------------------------------------------------


def test_tables_match_template(endpoint: str, template: dict[str, Any]) -> None:
    names = create_resources(endpoint, {}, template=template)
    dynamodb = _client("dynamodb", endpoint)
    tables = _resources(template, "AWS::DynamoDB::Table")
    assert tables, "template.yaml declares no table"

    for logical_id, props in tables.items():
        table_name = names[logical_id]
        table = dynamodb.describe_table(TableName=table_name)["Table"]
        assert table["KeySchema"] == props["KeySchema"]
        assert _by_name(table["AttributeDefinitions"]) == _by_name(props["AttributeDefinitions"])
        assert table["BillingModeSummary"]["BillingMode"] == props["BillingMode"]

        ttl = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
        if props.get("TimeToLiveSpecification", {}).get("Enabled"):
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"]
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"

        if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
            backups = dynamodb.describe_continuous_backups(TableName=table_name)
            pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
            assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"

    assert names["UsageTable"] == LOCAL_NAMES["UsageTable"]


def test_secret_holds_provider_keys_and_is_updated_on_rerun(
    endpoint: str, template: dict[str, Any]
) -> None:
    secretsmanager = _client("secretsmanager", endpoint)
    first = {"OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "sk-ant-test"}
    names = create_resources(endpoint, first, template=template)
    secret_id = names["ProviderKeysSecret"]
    assert secret_id == LOCAL_NAMES["ProviderKeysSecret"]
    value = secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"]
    assert json.loads(value) == first

    second = {"OPENAI_API_KEY": "sk-test-rotated"}
    assert create_resources(endpoint, second, template=template) == names
    value = secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"]
    assert json.loads(value) == second


def test_create_resources_keeps_existing_table_items(
    endpoint: str, template: dict[str, Any]
) -> None:
    names = create_resources(endpoint, {}, template=template)
    dynamodb = _client("dynamodb", endpoint)
    key = {"request_id": {"S": "req-kept"}}
    dynamodb.put_item(TableName=names["UsageTable"], Item=key)
    create_resources(endpoint, {}, template=template)
    assert dynamodb.get_item(TableName=names["UsageTable"], Key=key).get("Item") == key


def test_indexes_and_streams_are_translated(endpoint: str) -> None:
    # A table shape the template may grow into: GSI, LSI, stream, SSE, no TTL.
    keys = [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    synthetic = {
        "Resources": {
            "SyntheticIndexTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": {"Fn::Sub": "${AWS::StackName}-synthetic"},
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                        {"AttributeName": "owner", "AttributeType": "S"},
                    ],
                    "KeySchema": keys,
                    "GlobalSecondaryIndexes": [
                        {
                            "IndexName": "by-owner",
                            "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
                            "Projection": {"ProjectionType": "ALL"},
                            "ContributorInsightsSpecification": {"Enabled": False},
                        }
                    ],
                    "LocalSecondaryIndexes": [
                        {
                            "IndexName": "by-pk-owner",
                            "KeySchema": [
                                {"AttributeName": "pk", "KeyType": "HASH"},
                                {"AttributeName": "owner", "KeyType": "RANGE"},
                            ],
                            "Projection": {"ProjectionType": "KEYS_ONLY"},
                        }
                    ],
                    "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
                    "SSESpecification": {"SSEEnabled": True},
                },
            }
        }
    }
    names = create_resources(endpoint, {}, names={}, template=synthetic)
    # Logical ids missing from `names` get a derived local name.
    assert names == {"SyntheticIndexTable": "llm-proxy-synthetic-index"}
    dynamodb = _client("dynamodb", endpoint)
    table = dynamodb.describe_table(TableName="llm-proxy-synthetic-index")["Table"]
    assert table["KeySchema"] == keys
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["by-owner"]
    assert [index["IndexName"] for index in table["LocalSecondaryIndexes"]] == ["by-pk-owner"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}


def test_start_moto_refuses_a_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match="already in use"):
            start_moto(port)


def test_provider_keys_from_env_keeps_set_provider_variables_only() -> None:
    environ = {
        "OPENAI_API_KEY": "sk-openai",
        "ANTHROPIC_API_KEY": "",
        "AZURE_API_BASE": "https://example.openai.azure.com",
        "HOME": "/root",
        "LLM_PROXY__MASTER_KEY": "sk-master",
    }
    assert provider_keys_from_env(environ) == {
        "OPENAI_API_KEY": "sk-openai",
        "AZURE_API_BASE": "https://example.openai.azure.com",
    }


# --- moto's transactions, as the local stack serves them -----------------------------------


def _tables(dynamodb: Any, prefix: str) -> tuple[str, str]:
    """A hash-key table and a hash-and-range table with a stream, both empty."""
    string = "S"
    hash_only, ranged = f"{prefix}-hash", f"{prefix}-range"
    dynamodb.create_table(
        TableName=hash_only,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": string}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName=ranged,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": string},
            {"AttributeName": "sk", "AttributeType": string},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return hash_only, ranged


def _stream_records(endpoint: str, table: str) -> int:
    streams = _client("dynamodbstreams", endpoint)
    arn = streams.list_streams(TableName=table)["Streams"][0]["StreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return len(streams.get_records(ShardIterator=iterator)["Records"])


def test_a_cancelled_transaction_puts_back_exactly_what_it_wrote(endpoint: str) -> None:
    dynamodb = _client("dynamodb", endpoint)
    hash_only, ranged = _tables(dynamodb, "tx-cancelled")
    dynamodb.put_item(TableName=hash_only, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    dynamodb.put_item(TableName=hash_only, Item={"pk": {"S": "untouched"}})
    dynamodb.put_item(TableName=ranged, Item={"pk": {"S": "a"}, "sk": {"S": "1"}})
    before = {
        table: sorted(map(str, dynamodb.scan(TableName=table)["Items"]))
        for table in (hash_only, ranged)
    }
    records = _stream_records(endpoint, ranged)

    with pytest.raises(dynamodb.exceptions.TransactionCanceledException) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": hash_only,
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "5"}},
                    }
                },
                {"Put": {"TableName": hash_only, "Item": {"pk": {"S": "b"}}}},
                {"Put": {"TableName": ranged, "Item": {"pk": {"S": "a"}, "sk": {"S": "2"}}}},
                {"Delete": {"TableName": ranged, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": hash_only,
                        "Key": {"pk": {"S": "untouched"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    after = {
        table: sorted(map(str, dynamodb.scan(TableName=table)["Items"]))
        for table in (hash_only, ranged)
    }
    assert after == before
    # The stream shows no trace of the writes that were undone.
    assert _stream_records(endpoint, ranged) == records


def test_a_transaction_writes_every_item(endpoint: str) -> None:
    dynamodb = _client("dynamodb", endpoint)
    hash_only, ranged = _tables(dynamodb, "tx-written")
    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": hash_only, "Item": {"pk": {"S": "a"}}}},
            {
                "Update": {
                    "TableName": ranged,
                    "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                    "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        ]
    )
    item = dynamodb.get_item(TableName=ranged, Key={"pk": {"S": "a"}, "sk": {"S": "1"}})
    assert item["Item"]["n"] == {"N": "1"}
    assert dynamodb.get_item(TableName=hash_only, Key={"pk": {"S": "a"}})["Item"]


def test_a_transaction_copies_its_items_not_the_tables(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto itself deep-copies every table a transaction names, so each usage write cost more
    # as the usage table grew. The local stack's transactions copy the items they write.
    dynamodb = _client("dynamodb", endpoint)
    copied: list[int] = []
    deepcopy = copy.deepcopy

    def counting(value: Any, memo: Any = None, _nil: Any = ()) -> Any:
        copied[-1] += 1
        return deepcopy(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)
    hash_only, ranged = _tables(dynamodb, "tx-copies")
    dynamodb.put_item(TableName=ranged, Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "0"}})
    for size in (10, 300):
        with dynamodb_batch(dynamodb, hash_only) as put:
            for index in range(size):
                put({"pk": {"S": f"filler-{size}-{index}"}, "text": {"S": "x" * 50}})
        copied.append(0)
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": hash_only, "Item": {"pk": {"S": f"new-{size}"}}}},
                {
                    "Update": {
                        "TableName": ranged,
                        "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    assert copied[0] == copied[1]


@contextmanager
def dynamodb_batch(dynamodb: Any, table: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    items: list[dict[str, Any]] = []
    yield items.append
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={table: requests})


def test_the_moto_process_ends_when_its_parent_dies() -> None:
    # A parent killed outright (SIGKILL, a crash) cleans nothing up; moto must not outlive it.
    port = free_port()
    parent = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\n"
            "from devstack.aws import moto_process\n"
            f"print(moto_process({port}).__enter__(), flush=True)\n"
            "os._exit(0)\n",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    moto = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while is_running(moto) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_running(moto)


# --- events/ --------------------------------------------------------------------------------

EVENT_FILES = sorted(path for path in EVENTS_DIR.glob("*.json") if path.name != "env.json")

REST_KEYS = {
    "resource",
    "path",
    "httpMethod",
    "headers",
    "multiValueHeaders",
    "queryStringParameters",
    "pathParameters",
    "requestContext",
    "body",
    "isBase64Encoded",
}
EVENTBRIDGE_KEYS = {"version", "id", "detail-type", "source", "account", "time", "region"}


def _kind(event: dict[str, Any]) -> str:
    if "httpMethod" in event:
        return "rest"
    if event.get("version") == "2.0" and "routeKey" in event:
        return "http-v2"
    if "detail-type" in event:
        return "eventbridge"
    return "unknown"


def _check_json_body(event: dict[str, Any], content_type: str | None) -> None:
    body = event.get("body")
    if body is None:
        return
    assert isinstance(body, str)
    if content_type == "application/json" and not event["isBase64Encoded"]:
        json.loads(body)


def _check_rest(name: str, event: dict[str, Any]) -> None:
    assert set(event) >= REST_KEYS, f"{name}: missing {REST_KEYS - set(event)}"
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    for key in ("requestId", "stage", "identity", "httpMethod", "resourcePath", "path"):
        assert key in context, f"{name}: requestContext.{key} missing"
    assert context["httpMethod"] == event["httpMethod"]
    assert context["resourcePath"] == event["resource"]
    assert context["path"] == f"/{context['stage']}{event['path']}"
    assert "sourceIp" in context["identity"]
    if event["resource"] == "/{proxy+}":
        assert event["pathParameters"] == {"proxy": event["path"].lstrip("/")}
    # Mangum lets multiValueHeaders override headers, so they must agree.
    assert {k: [v] for k, v in event["headers"].items()} == event["multiValueHeaders"]
    _check_json_body(event, event["headers"].get("Content-Type"))


def _check_http_v2(name: str, event: dict[str, Any]) -> None:
    for key in ("rawPath", "rawQueryString", "headers", "requestContext", "isBase64Encoded"):
        assert key in event, f"{name}: {key} missing"
    assert event["routeKey"] == "$default"
    http = event["requestContext"]["http"]
    assert http["path"] == event["rawPath"]
    assert {"method", "sourceIp"} <= set(http)
    assert event["requestContext"]["requestId"]
    assert all(key == key.lower() for key in event["headers"])
    _check_json_body(event, event["headers"].get("content-type"))


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.name)
def test_event_has_the_fields_its_source_sends(path: Path) -> None:
    event = json.loads(path.read_text())
    kind = _kind(event)
    if kind == "rest":
        _check_rest(path.name, event)
    elif kind == "http-v2":
        _check_http_v2(path.name, event)
    elif kind == "eventbridge":
        assert set(event) >= EVENTBRIDGE_KEYS, f"{path.name}: missing fields"
    else:
        pytest.fail(f"{path.name}: not an API Gateway (REST or HTTP v2) or EventBridge event")


def test_api_events_have_distinct_request_ids() -> None:
    ids = [
        json.loads(path.read_text())["requestContext"]["requestId"]
        for path in EVENT_FILES
        if _kind(json.loads(path.read_text())) in ("rest", "http-v2")
    ]
    assert len(ids) == len(set(ids))


# file: (method, path, bearer key or None, body fields or None)
EXPECTED_REQUESTS: dict[str, tuple[str, str, str | None, dict[str, Any] | None]] = {
    "chat_completion.json": ("POST", "/v1/chat/completions", "sk-1234", {"model": "demo"}),
    "chat_stream.json": ("POST", "/v1/chat/completions", "sk-1234", {"stream": True}),
    "list_models.json": ("GET", "/v1/models", "sk-1234", None),
    "health.json": ("GET", "/health", None, None),
    "wrong_key.json": ("POST", "/v1/chat/completions", "sk-wrong-key", {"model": "demo"}),
    "http_api_v2_chat_completion.json": (
        "POST",
        "/v1/chat/completions",
        "sk-1234",
        {"model": "demo"},
    ),
}


async def _echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "authorization": headers.get("authorization"),
        "body": json.loads(body) if body else None,
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class _Context:
    function_name = "ApiFunction"
    aws_request_id = "test-invocation"


# Mangum 0.22 calls asyncio.get_event_loop() outside a running loop.
@pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")
@pytest.mark.parametrize("name", sorted(EXPECTED_REQUESTS))
def test_event_reaches_the_app_as_the_intended_request(name: str) -> None:
    method, path, key, body_fields = EXPECTED_REQUESTS[name]
    event = json.loads((EVENTS_DIR / name).read_text())
    response = Mangum(_echo_app, lifespan="off")(event, cast(LambdaContext, _Context()))
    assert response["statusCode"] == 200
    seen = json.loads(response["body"])
    assert (seen["method"], seen["path"]) == (method, path)
    assert seen["authorization"] == (f"Bearer {key}" if key else None)
    if body_fields is None:
        assert seen["body"] is None
    else:
        assert body_fields.items() <= seen["body"].items()
        assert seen["body"]["messages"][0]["role"] == "user"


def test_env_json_names_template_functions(template: dict[str, Any]) -> None:
    env = json.loads((EVENTS_DIR / "env.json").read_text())
    functions = _resources(template, "AWS::Serverless::Function")
    assert env, "env.json is empty"
    for logical_id, variables in env.items():
        assert logical_id in functions, f"env.json: {logical_id} is not a function in the template"
        assert all(isinstance(v, str) for v in variables.values())
        # `sam local` only overrides variables the template declares.
        declared = functions[logical_id]["Environment"]["Variables"]
        undeclared = set(variables) - set(declared)
        assert not undeclared, f"env.json: {logical_id} does not declare {undeclared}"
    api = env["ApiFunction"]
    assert api["LLM_PROXY__SECRET_ID"] == LOCAL_NAMES["ProviderKeysSecret"]
    assert api["LLM_PROXY__USAGE_TABLE"] == LOCAL_NAMES["UsageTable"]
    keys = env["KeysFunction"]
    assert keys["LLM_PROXY__SECRET_ID"] == api["LLM_PROXY__SECRET_ID"]
    assert keys["LLM_PROXY__KEYS_TABLE"] == api["LLM_PROXY__KEYS_TABLE"]


def test_queues_buckets_and_topics_match_template(endpoint: str, template: dict[str, Any]) -> None:
    names = create_resources(endpoint, {}, template=template)
    queue = names["UsageDeadLetterQueue"]
    assert queue.endswith("/llm-proxy-usage-dead-letter")
    attributes = _client("sqs", endpoint).get_queue_attributes(
        QueueUrl=queue, AttributeNames=["MessageRetentionPeriod"]
    )["Attributes"]
    assert attributes["MessageRetentionPeriod"] == "1209600"  # 14 days
    quarantine = names["UsageQuarantineQueue"]
    assert quarantine.endswith("/llm-proxy-usage-quarantine")
    sqs = _client("sqs", endpoint)
    quarantine_attributes = sqs.get_queue_attributes(
        QueueUrl=quarantine, AttributeNames=["MessageRetentionPeriod", "QueueArn"]
    )["Attributes"]
    assert quarantine_attributes["MessageRetentionPeriod"] == "1209600"
    redrive = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])
    assert json.loads(redrive["Attributes"]["RedrivePolicy"]) == {
        "deadLetterTargetArn": quarantine_attributes["QueueArn"],
        "maxReceiveCount": template["Parameters"]["UsageDeadLetterMaxReceives"]["Default"],
    }
    buckets = _client("s3", endpoint).list_buckets()["Buckets"]
    assert names["ReportBucket"] in {bucket["Name"] for bucket in buckets}
    topics = _client("sns", endpoint).list_topics()["Topics"]
    assert names["ReportTopic"] in {topic["TopicArn"] for topic in topics}
    assert create_resources(endpoint, {}, template=template) == names  # idempotent


def test_the_dead_letter_queue_sets_aside_what_the_replay_keeps_failing(
    endpoint: str, template: dict[str, Any]
) -> None:
    names = create_resources(endpoint, {}, template=template)
    sqs = _client("sqs", endpoint)
    dead_letters, quarantine = names["UsageDeadLetterQueue"], names["UsageQuarantineQueue"]
    sqs.purge_queue(QueueUrl=dead_letters)
    sqs.purge_queue(QueueUrl=quarantine)
    sqs.send_message(QueueUrl=dead_letters, MessageBody='{"request_id": "req-poison"}')
    limit = template["Parameters"]["UsageDeadLetterMaxReceives"]["Default"]

    def receive(url: str) -> list[dict[str, Any]]:
        # A replay run that fails leaves the message to come back: visible again at once here.
        answer = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, MaxNumberOfMessages=1)
        return list(answer.get("Messages", []))

    for _ in range(limit):
        assert len(receive(dead_letters)) == 1
    assert receive(dead_letters) == []
    [moved] = receive(quarantine)
    assert json.loads(moved["Body"]) == {"request_id": "req-poison"}


def test_function_environment_gives_the_local_values(template: dict[str, Any]) -> None:
    created = {
        "UsageTable": "u",
        "RollupsTable": "r",
        "KeysTable": "k",
        "CountersTable": "c",
        "UsageDeadLetterQueue": "http://q",
        "UsageQuarantineQueue": "http://quarantine",
        "ReportBucket": "b",
        "ReportTopic": "arn:t",
    }
    api = function_environment(template, created, "ApiFunction")
    assert api["LLM_PROXY__ROLLUPS_TABLE"] == "r"
    assert api["LLM_PROXY__USAGE_DLQ_URL"] == "http://q"
    assert api["LLM_PROXY__USAGE_QUARANTINE_URL"] == "http://quarantine"
    replay = function_environment(template, created, "UsageReplayFunction")
    assert replay["LLM_PROXY__USAGE_QUARANTINE_URL"] == "http://quarantine"
    keys = function_environment(template, created, "KeysFunction")
    assert keys == {"LLM_PROXY__KEYS_TABLE": "k", "LLM_PROXY__COUNTERS_TABLE": "c"}
    report = function_environment(template, created, "CostReportFunction")
    assert report == {
        "LLM_PROXY__ROLLUPS_TABLE": "r",
        "LLM_PROXY__REPORT_BUCKET": "b",
        "LLM_PROXY__REPORT_TOPIC_ARN": "arn:t",
        "LLM_PROXY__KEYS_TABLE": "k",
    }


def test_scheduled_functions_read_least_privilege_policies(template: dict[str, Any]) -> None:
    functions = _resources(template, "AWS::Serverless::Function")
    report = functions["CostReportFunction"]
    actions = {
        statement["Sid"]: statement["Action"]
        for policy in report["Policies"]
        for statement in policy["Statement"]
    }
    assert actions == {
        "RollupsRead": "dynamodb:Query",
        "KeyBudgetsRead": "dynamodb:BatchGetItem",
        "ReportObjects": "s3:PutObject",
        "ReportSummary": "sns:Publish",
    }
    assert report["Events"]["Daily"]["Properties"]["Schedule"] == {"Ref": "ReportSchedule"}
    assert template["Parameters"]["ReportSchedule"]["Default"] == "cron(0 6 * * ? *)"
    # Neither scheduled function carries litellm's layer.
    for name in ("CostReportFunction", "UsageReplayFunction"):
        assert {"Ref": "DepsLayer"} not in functions[name]["Layers"]
