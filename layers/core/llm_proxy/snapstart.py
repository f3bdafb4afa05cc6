"""Lambda SnapStart: what runs before Lambda snapshots the initialised function, and after
each restore of that snapshot.

One snapshot starts many execution environments, so whatever init made is shared by all of
them: anything that must be unique per environment (random state, connections, credentials,
a freshly read secret) is made again after the restore. Before the snapshot, the work that init
leaves to the first request (litellm's lazily imported provider and response code, Starlette's
routing) is done by a rehearsal of every path (`rehearsal`), so restored environments start
warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import litellm
from botocore.stub import Stubber
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_proxy import aws
from llm_proxy.gateway import Gateway
from llm_proxy.logs import logger
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.rehearsal import rehearse
from llm_proxy.settings import ApiSettings


def before_snapshot(gateway: Gateway, app: Any) -> None:
    gateway.warm()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(rehearse(app, stop_logging_worker=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    logger.info("warmed before the snapshot")


def after_restore(gateway: Gateway, handler_loop: asyncio.AbstractEventLoop | None = None) -> None:
    """`handler_loop`: the event loop the handler serves on (Mangum's), when it is not running:
    its worker thread is started now, not by the first request."""
    random.seed()  # every restored environment would otherwise draw the same numbers
    # AWS clients hold the snapshot's credentials and connections: make them again, now,
    # rather than on the first request (a client costs 100-200 ms of CPU to make).
    aws.forget_clients()
    reconnect(gateway.settings)
    # litellm's HTTP clients hold sockets of the snapshotted environment.
    litellm.in_memory_llm_clients_cache.flush_cache()  # type: ignore[no-untyped-call]
    gateway.refresh_after_restore()
    if gateway.routers.last_built is not None:
        warm_router(gateway.routers.last_built)
    if handler_loop is not None and not handler_loop.is_running():
        # A request's blocking calls (DynamoDB, the usage write without the extension) run in
        # the loop's default executor, whose first thread its first such call would start.
        handler_loop.run_until_complete(asyncio.to_thread(int))
    logger.info("refreshed after restore")


def warm_router(model_router: ModelRouter) -> None:
    """The lookups litellm makes, and caches, when the Router routes a request and counts its
    usage and cost (each group's merged model info, each deployment's, whether it tracks
    usage, its token prices): made now, as a new Router starts with them empty. Nothing is
    sent anywhere."""
    try:
        registry = model_router.router.registry()
        # litellm has no public form of the Router's "does this deployment track usage".
        tracks_usage = model_router.router._core.deployment_tracks_usage
        for deployment_id, deployment in model_router.deployments.items():
            group = str(deployment.get("model_name"))
            model = str(deployment["litellm_params"]["model"])
            registry.group(group, field="cached_info")
            registry.deployment_model_info(deployment_id, group, cached=True)
            registry.router_model_info(deployment=None, received_model_name=group, id=deployment_id)
            for name in (group, model):
                tracks_usage(deployment_id, name)
            with contextlib.suppress(Exception):  # a model litellm does not price
                litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    except Exception as exc:  # a first request makes them instead
        logger.warning("router lookups left to the first request", extra={"error": repr(exc)})


# What the request path asks of DynamoDB.
ITEM_OPERATIONS = ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "TransactWriteItems")


def reconnect(settings: ApiSettings) -> None:
    """The AWS clients the request path uses, made again, with their operations loaded."""
    # The second: the usage store's, which retries with its own backoff.
    dynamodb = [aws.client("dynamodb"), aws.client("dynamodb", max_attempts=1)]
    if settings.usage_dead_letter_queue or settings.usage_quarantine_queue:
        aws.client("sqs")
    tables = [
        aws.resource_table(table)
        for table in (
            settings.keys_table,
            settings.cache_table,
            settings.responses_table,
            settings.rollups_table,
        )
        if table
    ]
    dynamodb += [table.meta.client for table in tables]
    for client in {id(client): client for client in dynamodb}.values():
        aws.load_operations(client, ITEM_OPERATIONS)
        if settings.usage_table:
            _open_connection(client, settings.usage_table)
            rehearse_operations(client, settings.usage_table)
    for table in tables:
        rehearse_table(table)


def _item_calls(table: str) -> dict[str, dict[str, Any]]:
    """A valid call of each of ITEM_OPERATIONS on `table` (names only: none is sent)."""
    key = {"request_id": {"S": "snapshot-rehearsal"}}
    update = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": "SET n = :n",
        "ConditionExpression": "attribute_not_exists(n) OR n < :n",
        "ExpressionAttributeValues": {":n": {"N": "1"}},
    }
    return {
        "get_item": {"TableName": table, "Key": key},
        "put_item": {
            "TableName": table,
            "Item": key,
            "ConditionExpression": "attribute_not_exists(request_id)",
        },
        "update_item": update,
        "delete_item": {"TableName": table, "Key": key},
        "query": {
            "TableName": table,
            "KeyConditionExpression": "request_id = :k",
            "ExpressionAttributeValues": {":k": {"S": "snapshot-rehearsal"}},
        },
        "transact_write_items": {
            "TransactItems": [{"Put": {"TableName": table, "Item": key}}, {"Update": update}]
        },
    }


def rehearse_operations(client: Any, table: str) -> None:
    """Each item operation called once through botocore's own Stubber, which answers it in
    place of DynamoDB: nothing is sent, but the client's first call of each operation
    (its events, endpoint rules, parameter checks and serialisation, about 3-5 ms of CPU
    each) is made now rather than by the first request."""
    try:
        with Stubber(client) as stub:
            for method, params in _item_calls(table).items():
                stub.add_response(method, {}, params)
                getattr(client, method)(**params)
    except Exception as exc:  # the first request makes them instead
        logger.warning("DynamoDB operations left to the first request", extra={"error": repr(exc)})


def rehearse_table(table: Any) -> None:
    """The same for a table resource's own item calls, whose first call of each also prepares
    the resource's action and its conversion of Python values to DynamoDB's."""
    key = {"request_id": "snapshot-rehearsal"}
    calls: dict[str, dict[str, Any]] = {
        "get_item": {"Key": key},
        "put_item": {"Item": {**key, "n": 1, "tags": {"a": ["b"]}}},
        "update_item": {
            "Key": key,
            "UpdateExpression": "SET n = :n",
            "ExpressionAttributeValues": {":n": 1},
        },
        "delete_item": {"Key": key},
        "query": {
            "KeyConditionExpression": "request_id = :k",
            "ExpressionAttributeValues": {":k": "snapshot-rehearsal"},
        },
    }
    try:
        with Stubber(table.meta.client) as stub:
            for method, params in calls.items():
                stub.add_response(method, {})
                getattr(table, method)(**params)
    except Exception as exc:  # the first request makes them instead
        logger.warning("DynamoDB operations left to the first request", extra={"error": repr(exc)})


def _open_connection(client: Any, table: str) -> None:
    """One cheap call (DescribeTable, which the api functions may make on the usage table), so
    the connection, endpoint, signer and parser are ready before the first request."""
    try:
        client.describe_table(TableName=table)
    except Exception as exc:  # the first request makes the connection instead
        logger.warning("no connection after restore", extra={"error": type(exc).__name__})


def register(gateway: Gateway, app: FastAPI, runtime: Any = None) -> bool:
    """Register the hooks with Lambda's `snapshot_restore_py`, which the Lambda Python runtime
    provides; outside Lambda (no runtime API) nothing is registered."""
    if runtime is None:
        if not gateway.settings.lambda_runtime_api:
            return False
        try:
            import snapshot_restore_py
        except ImportError:
            return False
        runtime = snapshot_restore_py
    runtime.register_before_snapshot(lambda: before_snapshot(gateway, app))
    runtime.register_after_restore(lambda: after_restore(gateway, handler_loop()))
    return True


def handler_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the thread the hooks and the handler run on: Mangum sets it up when it
    is made, and serves every invocation on it."""
    return asyncio.get_event_loop_policy().get_event_loop()


# --- under Lambda Web Adapter (the streaming function) ---------------------------------------

# The adapter (1.1.0 and newer) runs the app as a process of its own, outside the runtime's
# hook loop, and bridges SnapStart to it: it POSTs to the paths its variables name, where they
# are set (ApiSettings.snapstart_*_path), before the snapshot and after each restore, and
# answers 403 to any invocation asking for them.

# The adapter adds this header to every invocation it relays; its own hook calls lack it.
RELAYED_INVOCATION_HEADER = "x-amzn-lambda-context"


def add_adapter_hooks(gateway: Gateway, app: FastAPI) -> list[str]:
    """The adapter's SnapStart hooks as routes of `app`, at the paths its variables name;
    returns those paths (none outside the adapter). A relayed invocation never reaches a hook:
    the adapter refuses it, and the route answers 404 as to any unknown path."""
    settings = gateway.settings

    async def warm() -> None:
        gateway.warm()
        await rehearse(app, stop_logging_worker=False)
        logger.info("warmed before the snapshot")

    async def refresh() -> None:
        after_restore(gateway)

    paths = []
    hooks = (
        (settings.snapstart_before_checkpoint_path, warm),
        (settings.snapstart_after_restore_path, refresh),
    )
    for path, hook in hooks:
        if path and path.startswith("/"):
            app.add_api_route(path, _hook_route(hook), methods=["POST"], include_in_schema=False)
            paths.append(path)
    return paths


def _hook_route(hook: Callable[[], Awaitable[None]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if RELAYED_INVOCATION_HEADER in request.headers:
            raise StarletteHTTPException(404)
        await hook()
        return Response(status_code=204)

    return endpoint
