"""The pipeline's provider call, and the only caller of the litellm Router: chat completions,
embeddings and the Responses API (a stream opened up to its first answer, failed over while
nothing has reached the client), under the request's scope (its admission's deployment
limits, its key's model list, what only Anthropic gets) and the provider deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from llm_proxy.errors import MODEL_NOT_ALLOWED, MODEL_NOT_EMBEDDING, ProxyError
from llm_proxy.logs import logger
from llm_proxy.pipeline.chat import carries_something
from llm_proxy.pipeline.litellm_hooks import RequestScope, request_scope
from llm_proxy.pipeline.model_router import ModelRouter
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.request_options import candidate_models
from llm_proxy.pipeline.responses import answers, readable_input, replayed_events, searched
from llm_proxy.pipeline.streams import OpenedStream, empty_stream

# litellm's error when no deployment of a group is left to pick.
NONE_LEFT = "RouterRateLimitError"


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
                    return await _responses(router, request, scope)
                return await _completion(router, request, scope)
    except Exception as exc:
        if type(exc).__name__ == NONE_LEFT and scope.attempts.last_failure is not None:
            # Every deployment was tried and failed: the client gets the newest failure.
            raise scope.attempts.last_failure from None
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


async def _responses(router: ModelRouter, request: GatewayRequest, scope: RequestScope) -> Any:
    """The Responses API; the conversation and what is stored are the gateway's own, so the
    provider is asked to store nothing."""
    params = request.call_params()
    params.pop("previous_response_id", None)
    params["store"] = False
    text_input = readable_input(request.body.get("input"))

    async def call(model: str) -> Any:
        return await router.router.aresponses(model=model, input=text_input, **params)

    if not request.stream:
        return searched(await call(request.model))
    return await _opened(router, request, scope, call, _opened_responses)


async def _opened_responses(response: Any) -> OpenedStream:
    if not hasattr(response, "__aiter__"):
        # A whole response where a stream was asked for (a mock deployment): its events.
        return OpenedStream(response, [], replayed_events(response))
    return await OpenedStream.open(response, answers)


async def _completion(router: ModelRouter, request: GatewayRequest, scope: RequestScope) -> Any:
    params = request.call_params()
    if request.stream and router.streams_usage(request.model):
        # Usage comes in the stream's last chunk only when asked for.
        params["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}

    async def call(model: str) -> Any:
        return await router.router.acompletion(
            model=model, messages=request.body["messages"], **params
        )

    if not request.stream:
        return await call(request.model)

    async def opened(response: Any) -> OpenedStream:
        return await OpenedStream.open(response, carries_something)

    return await _opened(router, request, scope, call, opened)


async def _opened(
    router: ModelRouter,
    request: GatewayRequest,
    scope: RequestScope,
    call: Callable[[str], Awaitable[Any]],
    opened: Callable[[Any], Awaitable[OpenedStream]],
) -> OpenedStream:
    """The stream, read up to its first item with an answer in it, from the first deployment
    that starts one. The Router fails over from a deployment that refuses the call; one that
    answers and then fails before any content (no chunk within `stream_timeout`, an error event,
    a body litellm reads as an empty stream) is failed over here, while nothing has reached the
    client: the next deployment of the group not tried yet (the request's retries), then the
    fallbacks. A deployment that failed is never asked again (`GatewayHooks` filters it out)."""
    models = candidate_models(request, router)
    retries_left = int(request.body.get("num_retries", router.router.num_retries or 0))
    retries = fallbacks = 0
    model = request.model
    while True:
        response = await call(model)
        try:
            stream = await opened(response)
        except Exception as exc:
            error: Exception = exc
        else:
            if stream.has_content:
                if not router.router.enable_mid_stream_fallback_continuation:
                    scope.attempts.answering = True
                return stream.served(scope, retries, fallbacks)
            error = empty_stream(request.model, response)
        failed = str((getattr(response, "_hidden_params", None) or {}).get("model_id") or "")
        logger.warning(
            "stream failed before its first chunk",
            extra={"deployment": failed, "error": type(error).__name__},
        )
        if retries < retries_left and _untried(router, model, scope):
            retries += 1
            continue
        fallback = _next_fallback(router, models, model, scope)
        if fallback is None:
            raise error
        model, fallbacks = fallback, fallbacks + 1


def _untried(router: ModelRouter, model: str, scope: RequestScope) -> bool:
    """Whether the group has a deployment this request has not been sent to."""
    tried = scope.attempts.tried
    return any(str(d["model_info"]["id"]) not in tried for d in router.in_group(model))


def _next_fallback(
    router: ModelRouter, models: list[str], model: str, scope: RequestScope
) -> str | None:
    """The next of the request's models after `model` that it may use and has not tried in
    full; the ones this key may not use are noted."""
    for fallback in models[models.index(model) + 1 :]:
        if not scope.permission.allows(fallback):
            scope.permission.skipped.append(fallback)
        elif _untried(router, fallback, scope):
            return fallback
    return None
