"""boto3 clients with timeouts that fail fast, so an unreachable dependency becomes a 503."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache
from typing import Any

import boto3
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config

CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "standard"},
)


def _endpoint_url() -> str | None:
    # AWS_ENDPOINT_URL is honoured by boto3 itself; this one is for `sam local`, which passes
    # only variables that the template declares (empty when deployed).
    return os.environ.get("LLM_PROXY__AWS_ENDPOINT_URL") or None


@cache
def client(service: str, max_attempts: int = 3) -> Any:
    """`max_attempts=1` for callers that retry with their own backoff and deadline."""
    session = boto3.session.Session()
    config = CLIENT_CONFIG.merge(Config(retries={"max_attempts": max_attempts, "mode": "standard"}))
    return session.client(  # type: ignore[call-overload]
        service, config=config, endpoint_url=_endpoint_url()
    )


@cache
def resource_table(name: str) -> Any:
    session = boto3.session.Session()
    resource = session.resource("dynamodb", config=CLIENT_CONFIG, endpoint_url=_endpoint_url())
    return resource.Table(name)


_SERIALIZER = TypeSerializer()


def dynamo_number(value: Any) -> Any:
    """DynamoDB numbers are Decimals; str() keeps a float's shortest exact form."""
    return Decimal(str(value)) if isinstance(value, float) else value


def attribute_value(value: Any) -> dict[str, Any]:
    """A Python value in the low-level client's form ({"N": "1.5"}, {"S": ...})."""
    return dict(_SERIALIZER.serialize(dynamo_number(value)))
