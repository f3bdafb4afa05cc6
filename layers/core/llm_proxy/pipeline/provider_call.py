"""The pipeline's provider call, and the only caller of the litellm Router: chat completions
(a stream opened up to its first chunk, with the fallbacks litellm skips for an empty stream),
embeddings and the Responses API, under the request's scope (its admission's deployment
limits, its key's model list, what only Anthropic gets) and the provider deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from llm_proxy.errors import MODEL_NOT_ALLOWED, MODEL_NOT_EMBEDDING, ProxyError
from llm_proxy.logs import logger
from llm_proxy.pipeline.chat import carries_something
from llm_proxy.pipeline.litellm_hooks import Permission, RequestScope, request_scope
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.request_options import candidate_models
from llm_proxy.pipeline.responses import readable_input, replayed_events, searched
from llm_proxy.pipeline.streams import OpenedStream, empty_stream


async def call_provider(
    router: ModelRouter, request: GatewayRequest, scope: RequestScope, deadline_s: float | None
) -> Any:
    """litellm's answer (ModelResponse, EmbeddingResponse, ResponsesAPIResponse), or an
    OpenedStream when streaming."""
    try:
        with request_scope(scope):
            async with asyncio.timeout(deadline_s):
                if request.api.router_call == "embedding":
                    return await _embedding(router, request)
                if request.api.router_call == "responses":
                    return await _responses(router, request)
                return await _completion(router, request, scope.permission)
    except Exception:
        fallbacks = candidate_models(request, router)[1:]
        if fallbacks and set(fallbacks) <= set(scope.permission.skipped):
            raise fallbacks_not_allowed(request.model, fallbacks) from None
        raise


def fallbacks_not_allowed(model: str, fallbacks: list[str]) -> ProxyError:
    return MODEL_NOT_ALLOWED(
        f"Model '{model}' failed, and this key may not use its fallbacks ({', '.join(fallbacks)}).",
        param="model",
    )


async def _embedding(router: ModelRouter, request: GatewayRequest) -> Any:
    model = request.model
    if router.is_mock(model):
        raise MODEL_NOT_EMBEDDING(
            f"Model '{model}' is a mock chat model and has no embeddings.", param="model"
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
        return searched(response)
    if not hasattr(response, "__aiter__"):
        # A whole response where a stream was asked for (a mock deployment): its events.
        return OpenedStream(response, [], replayed_events(response))
    # Read up to its first event, so a provider that fails at once fails before the client
    # is answered (and a fallback may still answer).
    return await OpenedStream.open(response, lambda event: True)


async def _completion(router: ModelRouter, request: GatewayRequest, permission: Permission) -> Any:
    params = request.call_params()
    if request.stream and router.streams_usage(request.model):
        # Usage comes in the stream's last chunk only when asked for.
        params["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
    call = {"messages": request.body["messages"], **params}
    response = await router.router.acompletion(model=request.model, **call)
    if not request.stream:
        return response
    fallbacks = candidate_models(request, router)[1:]
    return await _opened(router, request.model, fallbacks, response, call, permission)


async def _opened(
    router: ModelRouter,
    model: str,
    fallbacks: list[str],
    response: Any,
    call: dict[str, Any],
    permission: Permission,
) -> OpenedStream:
    """The stream, its first chunk read. litellm reads a body that is not SSE as an empty
    stream and raises nothing, so the Router never tries the fallbacks: they are tried here,
    with the same `call` (messages and parameters)."""
    opened = await OpenedStream.open(response, carries_something)
    if opened.has_content:
        return opened
    error = empty_stream(model, response)
    for taken, fallback in enumerate(fallbacks, start=1):
        if not permission.allows(fallback):
            permission.skipped.append(fallback)
            continue
        try:
            retry = await router.router.acompletion(model=fallback, **call)
            opened = await OpenedStream.open(retry, carries_something, fallbacks=taken)
        except Exception as exc:
            logger.warning(
                "fallback after an empty stream failed",
                extra={"fallback": fallback, "error": type(exc).__name__},
            )
            continue
        if opened.has_content:
            return opened
    raise error
