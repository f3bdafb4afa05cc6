"""The pipeline's route step, and the only caller of the litellm Router: chat completions
(a stream opened up to its first chunk, with the fallbacks litellm skips for an empty stream)
and embeddings, under the admission's deployment limits and the provider deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from llm_proxy.access.limits import CURRENT_ADMISSION, Admission
from llm_proxy.errors import ProxyError, invalid_request
from llm_proxy.logs import logger
from llm_proxy.pipeline.anthropic_native import CURRENT_NATIVE
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.responses import readable_input, replayed_events
from llm_proxy.pipeline.router import CURRENT_PERMISSION, ModelRouter, Permission
from llm_proxy.pipeline.streams import OpenedStream, empty_stream, open_stream


async def route(
    router: ModelRouter,
    request: GatewayRequest,
    admission: Admission | None,
    permission: Permission,
    deadline_s: float | None,
) -> Any:
    """litellm's ModelResponse or EmbeddingResponse, or an OpenedStream when streaming."""
    # The Router's pre-call and fallback checks read the admission (to take deployment
    # counters) and the permission (to skip fallbacks the key may not use).
    admitted, permitted = CURRENT_ADMISSION.set(admission), CURRENT_PERMISSION.set(permission)
    native = CURRENT_NATIVE.set(request.native)
    try:
        async with asyncio.timeout(deadline_s):
            if request.call == "embedding":
                return await _embedding(router, request)
            if request.call == "responses":
                return await _responses(router, request)
            return await _completion(router, request, permission)
    except Exception:
        fallbacks = router.fallbacks(request.model)
        if fallbacks and set(fallbacks) <= set(permission.skipped):
            raise fallbacks_not_allowed(request.model, fallbacks) from None
        raise
    finally:
        CURRENT_ADMISSION.reset(admitted)
        CURRENT_PERMISSION.reset(permitted)
        CURRENT_NATIVE.reset(native)


def fallbacks_not_allowed(model: str, fallbacks: list[str]) -> ProxyError:
    return ProxyError(
        403,
        f"Model '{model}' failed, and this key may not use its fallbacks ({', '.join(fallbacks)}).",
        "permission_error",
        param="model",
        code="model_not_allowed",
    )


async def _embedding(router: ModelRouter, request: GatewayRequest) -> Any:
    model = request.model
    if router.is_mock(model):
        raise invalid_request(
            f"Model '{model}' is a mock chat model and has no embeddings.",
            param="model",
            code="model_not_embedding",
        )
    return await router.router.aembedding(
        model=model, input=request.body["input"], **request.call_params()
    )


async def _responses(router: ModelRouter, request: GatewayRequest) -> Any:
    """The Responses API; the conversation and what is stored are the gateway's own, so the
    provider is asked to store nothing."""
    params = request.call_params()
    params.pop("previous_response_id", None)
    params["store"] = False
    response = await router.router.aresponses(
        model=request.model, input=readable_input(request.body.get("input")), **params
    )
    if not request.stream:
        return response
    if not hasattr(response, "__aiter__"):
        # A whole response where a stream was asked for (a mock deployment): its events.
        replayed = PeekedStream(response, replayed_events(response), [])
        return replayed
    return await PeekedStream.open(response)


class PeekedStream:
    """A stream read up to its first event, so a provider that fails at once fails before the
    client is answered (and a fallback may still answer)."""

    def __init__(self, source: Any, events: AsyncIterator[Any], first: list[Any]) -> None:
        self._source, self._events, self._first = source, events, first

    @classmethod
    async def open(cls, source: Any) -> PeekedStream:
        events = source.__aiter__()
        return cls(source, events, [event async for event in _first(events)])

    @property
    def _hidden_params(self) -> dict[str, Any]:
        return dict(getattr(self._source, "_hidden_params", None) or {})

    async def __aiter__(self) -> AsyncIterator[Any]:
        for event in self._first:
            yield event
        async for event in self._events:
            yield event


async def _first(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for event in events:
        yield event
        return


async def _completion(router: ModelRouter, request: GatewayRequest, permission: Permission) -> Any:
    model, messages, params = request.model, request.body["messages"], request.call_params()
    if request.stream and router.streams_usage(model):
        # Usage comes in the stream's last chunk only when asked for.
        params["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
    response = await router.router.acompletion(model=model, messages=messages, **params)
    if not request.stream:
        return response
    return await _opened(router, model, response, messages, params, permission)


async def _opened(
    router: ModelRouter,
    model: str,
    response: Any,
    messages: Any,
    params: dict[str, Any],
    permission: Permission,
) -> OpenedStream:
    """The stream, its first chunk read. litellm reads a body that is not SSE as an empty
    stream and raises nothing, so the Router never tries the fallbacks: they are tried here."""
    opened = await open_stream(response)
    if opened is not None:
        return opened
    error = empty_stream(model, response)
    for taken, fallback in enumerate(router.fallbacks(model), start=1):
        if not permission.allows(fallback):
            permission.skipped.append(fallback)
            continue
        try:
            retry = await router.router.acompletion(model=fallback, messages=messages, **params)
            opened = await open_stream(retry, fallbacks=taken)
        except Exception as exc:
            logger.warning(
                "fallback after an empty stream failed",
                extra={"fallback": fallback, "error": type(exc).__name__},
            )
            continue
        if opened is not None:
            return opened
    raise error
