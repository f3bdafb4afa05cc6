"""boto3 clients with timeouts that fail fast, so an unreachable dependency becomes a 503."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from llm_proxy.settings import AwsSettings

CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "standard"},
)


def _endpoint_url() -> str | None:
    # LLM_PROXY__AWS_ENDPOINT_URL, for `sam local` (AwsSettings); boto3 honours AWS_ENDPOINT_URL.
    return AwsSettings.current().aws_endpoint_url


# A session is not safe to make clients from on two threads at once.
_SESSION_LOCK = threading.Lock()


@cache
def session() -> boto3.session.Session:
    """One session for every client: its loader parses each service model once, where a
    session per client parsed them again (50-90 ms of CPU each)."""
    return boto3.session.Session()


@cache
def client(service: str, max_attempts: int = 3) -> Any:
    """`max_attempts=1` for callers that retry with their own backoff and deadline."""
    config = CLIENT_CONFIG.merge(Config(retries={"max_attempts": max_attempts, "mode": "standard"}))
    with _SESSION_LOCK:
        return session().client(  # type: ignore[call-overload]
            service, config=config, endpoint_url=_endpoint_url()
        )


@cache
def _dynamodb_resource() -> Any:
    with _SESSION_LOCK:
        return session().resource("dynamodb", config=CLIENT_CONFIG, endpoint_url=_endpoint_url())


@cache
def resource_table(name: str) -> Any:
    return _dynamodb_resource().Table(name)


def load_operations(client: Any, operations: tuple[str, ...]) -> None:
    """Resolve the request and response shapes of `operations` on `client` now: botocore
    resolves them on each client's first call of each operation."""
    model = client.meta.service_model
    for name in operations:
        operation = model.operation_model(name)
        for shape in (operation.input_shape, operation.output_shape):
            _resolve(shape, frozenset())


def _resolve(shape: Any, path: frozenset[str]) -> None:
    # botocore makes a shape object per place a shape is used, and resolves each one's members
    # when first read: every place is resolved (an AttributeValue in Key, Item, ...), down to
    # where a shape would hold itself again (a DynamoDB AttributeValue holds maps of itself).
    if shape is None or shape.name in path:
        return
    path |= {shape.name}
    for member in getattr(shape, "members", {}).values():
        _resolve(member, path)
    for part in ("member", "key", "value"):
        _resolve(getattr(shape, part, None), path)


def forget_clients() -> None:
    """Drop the session and every client made from it: the next call makes them again, with
    the credentials and connections of that moment (after a SnapStart restore)."""
    client.cache_clear()
    resource_table.cache_clear()
    _dynamodb_resource.cache_clear()
    session.cache_clear()
