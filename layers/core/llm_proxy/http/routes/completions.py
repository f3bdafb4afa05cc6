"""OpenAI's chat completions and embeddings, through the pipeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llm_proxy.http.answers import cache_headers, event_stream
from llm_proxy.http.dependencies import Authenticated, GatewayDep, after_response, request_id
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import ChatCompletionRequest, EmbeddingRequest
from llm_proxy.pipeline.streams import ChatStream

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None, responses=STREAM_RESPONSE)
@router.post("/chat/completions", include_in_schema=False, response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> JSONResponse | StreamingResponse:
    call = gateway.request(
        request.url.path, "chat", who, body.model_dump(exclude_unset=True), request_id(request)
    )
    result = await gateway.run(call, after_response(request))
    headers = cache_headers(gateway, result)
    if isinstance(result, ChatStream):
        return event_stream(result.events(), headers)
    return JSONResponse(result.model_dump(exclude_none=True), headers=headers)


@router.post("/v1/embeddings")
@router.post("/embeddings", include_in_schema=False)
async def embeddings(
    body: EmbeddingRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    call = gateway.request(
        request.url.path,
        "embeddings",
        who,
        body.model_dump(exclude_unset=True),
        request_id(request),
    )
    result = await gateway.run(call, after_response(request))
    vectors: dict[str, Any] = result.model_dump(exclude_none=True)
    return vectors
