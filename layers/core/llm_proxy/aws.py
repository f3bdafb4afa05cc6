"""boto3 clients with timeouts that fail fast, so an unreachable dependency becomes a 503."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "standard"},
)


@cache
def client(service: str) -> Any:
    # AWS_ENDPOINT_URL (LocalStack, the local moto server) is honoured by boto3 itself.
    return boto3.session.Session().client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]


@cache
def resource_table(name: str) -> Any:
    resource = boto3.session.Session().resource("dynamodb", config=CLIENT_CONFIG)
    return resource.Table(name)
