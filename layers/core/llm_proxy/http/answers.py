"""How a pipeline's answer goes back: a stream as Server-Sent Events, and whether it came from
the response cache as a header."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from llm_proxy.gateway import Gateway
from llm_proxy.pipeline.cache import CACHE_HIT_HEADER, is_cache_hit
from llm_proxy.pipeline.responses import ResponsesStream
from llm_proxy.pipeline.streams import ChatStream


def cache_headers(gateway: Gateway, result: Any) -> dict[str, str]:
    """Whether the answer came from the response cache, where the cache is on."""
    if not gateway.cache_enabled:
        return {}
    streamed = isinstance(result, ChatStream | ResponsesStream)
    hit = result.cache_hit if streamed else is_cache_hit(result)
    return {CACHE_HIT_HEADER: "true" if hit else "false"}


def event_stream(
    events: AsyncIterator[Any], headers: dict[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", **(headers or {})},
    )
