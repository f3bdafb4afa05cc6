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
import random
from typing import Any

import litellm

from llm_proxy import aws
from llm_proxy.gateway import Gateway
from llm_proxy.logs import logger


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

    # A canned reply: the whole completion path of litellm, no provider called.
    await litellm.acompletion(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "warm"}],
        mock_response="warm",
        api_key="not-used",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://snapshot") as client:
        await client.get("/health")
    # litellm's logging worker is bound to the loop that last used it: stop it with this loop.
    await GLOBAL_LOGGING_WORKER.flush()
    await GLOBAL_LOGGING_WORKER.stop()


def after_restore(gateway: Gateway) -> None:
    random.seed()  # every restored environment would otherwise draw the same numbers
    # AWS clients hold the snapshot's credentials and connections: make them again.
    aws.client.cache_clear()
    aws.resource_table.cache_clear()
    # litellm's HTTP clients hold sockets of the snapshotted environment.
    litellm.in_memory_llm_clients_cache.flush_cache()  # type: ignore[no-untyped-call]
    gateway.refresh_after_restore()
    logger.info("refreshed after restore")


def register(gateway: Gateway, app: Any, runtime: Any = None) -> bool:
    """Register the hooks with Lambda's `snapshot_restore_py`, which only the Lambda Python
    runtime provides; elsewhere nothing is registered."""
    if runtime is None:
        try:
            import snapshot_restore_py
        except ImportError:
            return False
        runtime = snapshot_restore_py
    runtime.register_before_snapshot(lambda: before_snapshot(gateway, app))
    runtime.register_after_restore(lambda: after_restore(gateway))
    return True
