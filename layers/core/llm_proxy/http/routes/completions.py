"""OpenAI's chat completions and embeddings, through the pipeline; also under Azure OpenAI's
paths (`/openai/deployments/{deployment}/...`, the Azure OpenAI SDK's), where the deployment
in the path is the model asked for and `api-version` is the client's own business."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from llm_proxy.http.answers import respond
from llm_proxy.http.dependencies import Authenticated, GatewayDep, inbound
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import ChatCompletionRequest, EmbeddingRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None, responses=STREAM_RESPONSE)
@router.post("/chat/completions", include_in_schema=False, response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> Response:
    return respond(await gateway.serve("chat", inbound(request, who, body)))


@router.post("/openai/deployments/{deployment}/chat/completions", include_in_schema=False)
async def azure_chat_completions(
    deployment: str,
    body: ChatCompletionRequest,
    request: Request,
    gateway: GatewayDep,
    who: Authenticated,
) -> Response:
    return respond(await gateway.serve("chat", inbound(request, who, body, model=deployment)))


@router.post("/openai/deployments/{deployment}/embeddings", include_in_schema=False)
async def azure_embeddings(
    deployment: str,
    body: EmbeddingRequest,
    request: Request,
    gateway: GatewayDep,
    who: Authenticated,
) -> dict[str, Any]:
    called = inbound(request, who, body, model=deployment)
    vectors: dict[str, Any] = (await gateway.serve("embeddings", called)).body
    return vectors


@router.post("/v1/embeddings")
@router.post("/embeddings", include_in_schema=False)
async def embeddings(
    body: EmbeddingRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    vectors: dict[str, Any] = (await gateway.serve("embeddings", inbound(request, who, body))).body
    return vectors
