"""Embedded AWS for `make dev`, the tests and the benches: a moto server holding the tables,
secret, queues, buckets and topics that template.yaml declares, created from the template's
own resource definitions so local and deployed shapes cannot drift.

`local_aws` stands it all up; the rest are its parts, for callers that need only one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from devstack.moto_server import make_local_server
from devstack.processes import port_is_free, stop_process, wait_for_port
from devstack.server import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"  # noqa: S105 - moto accepts any credentials
DEFAULT_REGION = "us-east-1"

LOCAL_NAMES: dict[str, str] = {
    "UsageTable": "llm-proxy-usage",
    "ProviderKeysSecret": "llm-proxy/provider-keys",
}

PROVIDER_KEY_NAMES: tuple[str, ...] = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_API_KEY",
    "AZURE_API_BASE",
    "AZURE_API_VERSION",
    "OPENROUTER_API_KEY",
    "DEEPSEEK_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "COHERE_API_KEY",
    "TOGETHERAI_API_KEY",
)

TABLE_TYPE = "AWS::DynamoDB::Table"
SECRET_TYPE = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type
QUEUE_TYPE = "AWS::SQS::Queue"
BUCKET_TYPE = "AWS::S3::Bucket"
TOPIC_TYPE = "AWS::SNS::Topic"
# The suffix a logical id drops in its local name: UsageTable -> llm-proxy-usage.
NAME_SUFFIXES = {
    TABLE_TYPE: "Table",
    SECRET_TYPE: "Secret",
    QUEUE_TYPE: "Queue",
    BUCKET_TYPE: "Bucket",
    TOPIC_TYPE: "Topic",
}


# --- template loading -----------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form intrinsic tags."""


# CloudFormation reads unquoted dates such as 2010-09-09 as strings, not datetimes.
_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]

    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # Short form "Resource.Attribute"; attributes themselves may contain dots.
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template, short-form tags included."""
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    return document


# --- moto server ----------------------------------------------------------------------------


class LocalMotoServer(ThreadedMotoServer):
    """moto in a thread of this process, as `devstack.moto_server` serves it."""

    def _server_entry(self) -> None:
        self._server = make_local_server(self._ip_address, self._port)
        self._server_ready_event.set()
        self._server.serve_forever()


def start_moto(port: int = 4566, host: str = "127.0.0.1") -> ThreadedMotoServer:
    """Start a moto server in a background thread and return it (call .stop() when done)."""
    # ThreadedMotoServer.start() waits forever if its thread cannot bind, so check first.
    if not port_is_free(port, host):
        raise OSError(f"port {host}:{port} is already in use; cannot start the moto server there")
    server = LocalMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return server


@contextmanager
def moto_process(port: int, host: str = "127.0.0.1") -> Iterator[int]:
    """The local moto server (`devstack.moto_server`) in a process of its own, for the
    block's duration; yields its process id. It also exits if this process dies."""
    if not port_is_free(port, host):
        raise OSError(f"port {host}:{port} is already in use; cannot start the moto server there")
    command = [sys.executable, "-m", "devstack.moto_server", "--host", host, "--port", str(port)]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [*command, "--parent", str(os.getpid())],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            try:
                wait_for_port(port, host, process=process)
            except (OSError, RuntimeError) as exc:
                errors.seek(0)
                raise RuntimeError(f"{exc}\n{errors.read().decode()[-2000:]}") from exc
            yield process.pid
        finally:
            stop_process(process)


# --- resources ------------------------------------------------------------------------------


def _local_name(logical_id: str, resource_type: str) -> str:
    """Physical name for a logical id missing from `names`: UsageTable -> llm-proxy-usage."""
    stem = logical_id.removesuffix(NAME_SUFFIXES[resource_type]) or logical_id
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", stem).lower()
    return f"llm-proxy/{kebab}" if resource_type == SECRET_TYPE else f"llm-proxy-{kebab}"


def _resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, Any]:
    resources: Mapping[str, Any] = template.get("Resources", {})
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in resources.items()
        if resource.get("Type") == resource_type
    }


def _parameter_default(template: Mapping[str, Any], value: Any) -> Any:
    """A value as deployed with default parameters: `!Ref Parameter` gives its Default."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = template.get("Parameters", {}).get(value["Ref"])
        if parameter is None or "Default" not in parameter:
            raise ValueError(f"{value['Ref']} is not a parameter with a default")
        return parameter["Default"]
    return value


def _pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: source[key] for key in keys if key in source}


def create_table_request(table_name: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """Translate AWS::DynamoDB::Table properties into DynamoDB CreateTable arguments."""
    request: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PROVISIONED"),
    }
    if "ProvisionedThroughput" in properties:
        request["ProvisionedThroughput"] = properties["ProvisionedThroughput"]
    if gsis := properties.get("GlobalSecondaryIndexes"):
        # CloudFormation-only keys (ContributorInsightsSpecification, ...) are dropped.
        gsi_keys = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
        request["GlobalSecondaryIndexes"] = [_pick(index, gsi_keys) for index in gsis]
    if lsis := properties.get("LocalSecondaryIndexes"):
        lsi_keys = ("IndexName", "KeySchema", "Projection")
        request["LocalSecondaryIndexes"] = [_pick(index, lsi_keys) for index in lsis]
    if stream := properties.get("StreamSpecification"):
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    if sse := properties.get("SSESpecification"):
        # Key names differ from CloudFormation's; a KMS key id would reference a stack resource.
        request["SSESpecification"] = {"Enabled": bool(sse.get("SSEEnabled", False))}
    return request


def create_request_for(
    logical_id: str, table_name: str, template: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """CreateTable arguments for one of the template's tables under another name."""
    template = load_template() if template is None else template
    return create_table_request(table_name, template["Resources"][logical_id]["Properties"])


def _client(service: str, endpoint_url: str, region: str) -> Any:
    return boto3.session.Session().client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=DUMMY_ACCESS_KEY,
        aws_secret_access_key=DUMMY_SECRET_KEY,
    )


def _ensure_table(dynamodb: Any, table_name: str, properties: Mapping[str, Any]) -> None:
    try:
        dynamodb.create_table(**create_table_request(table_name, properties))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )

    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        current = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
        if (current.get("TimeToLiveStatus"), current.get("AttributeName")) != (
            "ENABLED",
            ttl["AttributeName"],
        ):
            dynamodb.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )

    pitr = properties.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        # Not essential locally, and not every emulator implements it.
        with contextlib.suppress(ClientError):
            dynamodb.update_continuous_backups(
                TableName=table_name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )


def _ensure_secret(secretsmanager: Any, name: str, secret_string: str) -> None:
    try:
        secretsmanager.create_secret(Name=name, SecretString=secret_string)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceExistsException":
            raise
        secretsmanager.put_secret_value(SecretId=name, SecretString=secret_string)


def _redrive_target(properties: Mapping[str, Any]) -> str | None:
    """The logical id of the queue a queue's RedrivePolicy sends to (`!GetAtt Queue.Arn`)."""
    target = properties.get("RedrivePolicy", {}).get("deadLetterTargetArn")
    if target is None:
        return None
    if isinstance(target, dict) and list(target.get("Fn::GetAtt", ())[1:]) == ["Arn"]:
        return str(target["Fn::GetAtt"][0])
    raise ValueError(f"RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn: {target!r}")


def _redrive_order(queues: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Logical ids with every redrive target before the queues that send to it."""
    ordered: list[str] = []

    def visit(logical_id: str) -> None:
        if logical_id in ordered:
            return
        target = _redrive_target(queues[logical_id])
        if target is not None:
            if target not in queues:
                raise ValueError(f"{logical_id}: its redrive target {target} is not a queue")
            visit(target)
        ordered.append(logical_id)

    for logical_id in queues:
        visit(logical_id)
    return ordered


def _ensure_queue(
    sqs: Any,
    name: str,
    properties: Mapping[str, Any],
    arns: Mapping[str, str],
    template: Mapping[str, Any],
) -> tuple[str, str]:
    """Create the queue (or bring an existing one to the template's attributes); returns its
    URL and ARN. `arns` holds the ARNs of the queues created so far, by logical id."""
    attributes = {
        key: str(_parameter_default(template, properties[key]))
        for key in ("MessageRetentionPeriod", "VisibilityTimeout")
        if key in properties
    }
    target = _redrive_target(properties)
    if target is not None:
        receives = _parameter_default(template, properties["RedrivePolicy"]["maxReceiveCount"])
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arns[target], "maxReceiveCount": int(receives)}
        )
    try:
        url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "QueueAlreadyExists":
            raise
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, str(arn["QueueArn"])


def _ensure_bucket(s3: Any, name: str, region: str, properties: Mapping[str, Any]) -> str:
    """The bucket with its versioning and lifecycle rules as the template has them (DELETE of a
    stored response's object behaves locally as deployed: a delete marker on a versioned
    bucket)."""
    request: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
    versioning = properties.get("VersioningConfiguration", {}).get("Status")
    if versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
    rules = properties.get("LifecycleConfiguration", {}).get("Rules", [])
    if rules:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in rules]}
        )
    return name


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's shape (the properties the template
    uses; another is an error here rather than a local bucket that differs)."""
    known = {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "ExpiredObjectDeleteMarker",
        "NoncurrentVersionExpiration",
    }
    if set(rule) - known:
        raise ValueError(f"lifecycle rule {rule.get('Id')}: no local shape for {set(rule) - known}")
    converted: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "ExpiredObjectDeleteMarker" in rule:
        converted["Expiration"] = {"ExpiredObjectDeleteMarker": rule["ExpiredObjectDeleteMarker"]}
    if "NoncurrentVersionExpiration" in rule:
        days = int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    return converted


def _ensure_topic(sns: Any, name: str) -> str:
    return str(sns.create_topic(Name=name)["TopicArn"])


def create_resources(
    endpoint_url: str,
    provider_keys: Mapping[str, str],
    names: Mapping[str, str] = LOCAL_NAMES,
    region: str = DEFAULT_REGION,
    template: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Create every table, secret, queue (with its redrive policy), bucket and topic of the
    template at `endpoint_url`; idempotent.

    Secrets hold `provider_keys` as a JSON object (the deployed stack's generated master key
    is not reproduced). Returns logical id -> what `!Ref` gives for it: the name of a table,
    secret or bucket, the URL of a queue, the ARN of a topic.
    """
    template = load_template() if template is None else template
    created: dict[str, str] = {}

    tables = _resources_of_type(template, TABLE_TYPE)
    if tables:
        dynamodb = _client("dynamodb", endpoint_url, region)
        for logical_id, properties in tables.items():
            table_name = names.get(logical_id) or _local_name(logical_id, TABLE_TYPE)
            _ensure_table(dynamodb, table_name, properties)
            created[logical_id] = table_name

    secrets = _resources_of_type(template, SECRET_TYPE)
    if secrets:
        secretsmanager = _client("secretsmanager", endpoint_url, region)
        secret_string = json.dumps(dict(provider_keys))
        for logical_id in secrets:
            secret_name = names.get(logical_id) or _local_name(logical_id, SECRET_TYPE)
            _ensure_secret(secretsmanager, secret_name, secret_string)
            created[logical_id] = secret_name

    queues = _resources_of_type(template, QUEUE_TYPE)
    if queues:
        sqs = _client("sqs", endpoint_url, region)
        arns: dict[str, str] = {}
        # A redrive policy names its target's ARN, so targets are created first.
        for logical_id in _redrive_order(queues):
            name = names.get(logical_id) or _local_name(logical_id, QUEUE_TYPE)
            created[logical_id], arns[logical_id] = _ensure_queue(
                sqs, name, queues[logical_id], arns, template
            )

    for resource_type, service in ((BUCKET_TYPE, "s3"), (TOPIC_TYPE, "sns")):
        resources = _resources_of_type(template, resource_type)
        if not resources:
            continue
        client = _client(service, endpoint_url, region)
        for logical_id, properties in resources.items():
            name = names.get(logical_id) or _local_name(logical_id, resource_type)
            if resource_type == BUCKET_TYPE:
                created[logical_id] = _ensure_bucket(client, name, region, properties)
            else:
                created[logical_id] = _ensure_topic(client, name)

    return created


def function_environment(
    template: Mapping[str, Any], created: Mapping[str, str], function: str
) -> dict[str, str]:
    """A function's environment variables that `!Ref` a created resource, with local values:
    the same names the deployed function reads."""
    properties = template.get("Resources", {}).get(function, {}).get("Properties", {})
    variables = properties.get("Environment", {}).get("Variables", {})
    return {
        name: created[value["Ref"]]
        for name, value in variables.items()
        if isinstance(value, dict) and value.get("Ref") in created
    }


def provider_keys_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Provider variables that are set and non-empty, to seed the local secret."""
    return {name: environ[name] for name in PROVIDER_KEY_NAMES if environ.get(name)}


# --- the stack ------------------------------------------------------------------------------


def aws_env(endpoint: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The variables that point boto3 at a local endpoint. The credentials are dummies: the
    local endpoint accepts any, and real ones must never be sent there."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }


@dataclass(frozen=True)
class LocalAWS:
    """A running local AWS and the template's resources in it."""

    endpoint: str
    region: str
    template: dict[str, Any]
    # Logical id -> what `!Ref` gives for it: a table's name, a queue's URL, a topic's ARN.
    resources: dict[str, str]
    # The moto server's process, where it runs in one of its own.
    pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables a process needs to use this endpoint."""
        return aws_env(self.endpoint, self.region)

    def function_env(self, function: str = "ApiFunction") -> dict[str, str]:
        """The function's variables that name these resources, as template.yaml passes them."""
        return function_environment(self.template, self.resources, function)


@contextmanager
def local_aws(
    provider_keys: Mapping[str, str],
    names: Mapping[str, str] = LOCAL_NAMES,
    *,
    endpoint: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    in_process: bool = True,
    region: str = DEFAULT_REGION,
) -> Iterator[LocalAWS]:
    """Stand the local AWS up for the block's duration: every resource of template.yaml,
    named by `names` (a derived name for the others), the provider-keys secret holding
    `provider_keys`.

    With `endpoint` the resources are created there (LocalStack, say) and nothing is started.
    Otherwise the local moto server (`devstack.moto_server`) starts on host:`port` (a free
    port if None): in a thread of this process, or with `in_process=False` in a process of its
    own, where it competes for no one's GIL and its memory is its own (`make dev`, benches).
    """
    with ExitStack() as running:
        pid = None
        if endpoint is None:
            port = port or free_port()
            endpoint = f"http://{host}:{port}"
            if in_process:
                running.callback(start_moto(port, host).stop)
            else:
                pid = running.enter_context(moto_process(port, host))
        template = load_template()
        resources = create_resources(endpoint, provider_keys, names, region, template)
        yield LocalAWS(endpoint, region, template, resources, pid)
