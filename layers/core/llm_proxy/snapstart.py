"""Lambda SnapStart: what runs before Lambda snapshots the initialised function, and after
each restore of that snapshot.

One snapshot starts many execution environments, so whatever init made is shared by all of
them: anything that must be unique per environment (random state, connections, credentials,
a freshly read secret) is made again after the restore. Before the snapshot, the work that init
leaves to the first request (litellm's lazily imported response path, Starlette's routing) is
done, so restored environments start warm.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import litellm

from llm_proxy import aws
from llm_proxy.gateway import Gateway
from llm_proxy.logs import logger
from llm_proxy.pipeline.router import retire
from llm_proxy.settings import Settings

# A gateway of canned replies on the app's own routes: the snapshot's warm-up runs every path a
# request takes (authentication, the pipeline, litellm's completion, stream, Responses and
# Messages code, the response writers) without calling a provider or AWS.
REHEARSAL_KEY = "sk-snapshot-rehearsal"
REHEARSAL_CONFIG: dict[str, Any] = {
    "model_list": [
        {
            "model_name": "rehearsal",
            "litellm_params": {
                "model": "openai/rehearsal",
                "mock_response": "warm",
                "api_key": "not-used",
                "input_cost_per_token": 0,
                "output_cost_per_token": 0,
            },
        }
    ],
    "router_settings": {"num_retries": 0},
    "general_settings": {"master_key": REHEARSAL_KEY},
}
QUESTION = [{"role": "user", "content": "warm"}]
REHEARSAL: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"model": "rehearsal", "messages": QUESTION}),
    ("/v1/chat/completions", {"model": "rehearsal", "messages": QUESTION, "stream": True}),
    ("/v1/messages", {"model": "rehearsal", "max_tokens": 8, "messages": QUESTION}),
    (
        "/v1/messages",
        {"model": "rehearsal", "max_tokens": 8, "messages": QUESTION, "stream": True},
    ),
    ("/v1/messages/count_tokens", {"model": "rehearsal", "messages": QUESTION}),
    ("/v1/responses", {"model": "rehearsal", "input": "warm", "store": False}),
    ("/v1/responses", {"model": "rehearsal", "input": "warm", "store": False, "stream": True}),
]


def before_snapshot(gateway: Gateway, app: Any) -> None:
    gateway.warm()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_warm_paths(app))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    logger.info("warmed before the snapshot")


async def _warm_paths(app: Any) -> None:
    import httpx
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    from llm_proxy.config import ProxyConfig
    from llm_proxy.http.app import create_app

    rehearsal = Gateway(Settings(environment="local"), ProxyConfig.model_validate(REHEARSAL_CONFIG))
    headers = {"Authorization": f"Bearer {REHEARSAL_KEY}"}
    transport = httpx.ASGITransport(app=create_app(rehearsal))
    async with httpx.AsyncClient(transport=transport, base_url="http://snapshot") as client:
        for path, body in REHEARSAL:
            response = await client.post(path, json=body, headers=headers)
            if response.status_code != 200:
                logger.warning("warm-up request failed", extra={"path": path})
    retire(rehearsal.model_router())
    own = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=own, base_url="http://snapshot") as client:
        await client.get("/health")
    # litellm's logging worker is bound to the loop that last used it: stop it with this loop.
    await GLOBAL_LOGGING_WORKER.flush()
    await GLOBAL_LOGGING_WORKER.stop()


def after_restore(gateway: Gateway) -> None:
    random.seed()  # every restored environment would otherwise draw the same numbers
    # AWS clients hold the snapshot's credentials and connections: make them again, now,
    # rather than on the first request (a client costs 100-200 ms of CPU to make).
    aws.client.cache_clear()
    aws.resource_table.cache_clear()
    reconnect(gateway.settings)
    # litellm's HTTP clients hold sockets of the snapshotted environment.
    litellm.in_memory_llm_clients_cache.flush_cache()  # type: ignore[no-untyped-call]
    gateway.refresh_after_restore()
    logger.info("refreshed after restore")


def reconnect(settings: Settings) -> None:
    """The AWS clients the request path uses, made again."""
    aws.client("dynamodb")
    aws.client("dynamodb", max_attempts=1)  # the usage store's, with its own retries
    if settings.usage_dead_letter_queue or settings.usage_quarantine_queue:
        aws.client("sqs")
    for table in (
        settings.keys_table,
        settings.cache_table,
        settings.responses_table,
        settings.rollups_table,
    ):
        if table:
            aws.resource_table(table)


def register(gateway: Gateway, app: Any, runtime: Any = None) -> bool:
    """Register the hooks with Lambda's `snapshot_restore_py`, which the Lambda Python runtime
    provides; outside Lambda (no runtime API) nothing is registered."""
    if runtime is None:
        if not os.environ.get("AWS_LAMBDA_RUNTIME_API"):
            return False
        try:
            import snapshot_restore_py
        except ImportError:
            return False
        runtime = snapshot_restore_py
    runtime.register_before_snapshot(lambda: before_snapshot(gateway, app))
    runtime.register_after_restore(lambda: after_restore(gateway))
    return True
