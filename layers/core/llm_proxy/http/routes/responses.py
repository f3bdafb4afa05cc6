"""OpenAI's Responses API (Codex CLI, the OpenAI Agents SDK, `client.responses`), through the
pipeline; stored responses read and deleted by the key that made them."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse

from llm_proxy.http.answers import cache_headers, event_stream
from llm_proxy.http.dependencies import Authenticated, GatewayDep, after_response, request_id
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import ResponsesRequest
from llm_proxy.pipeline.responses import ResponsesStream, complete_usage

router = APIRouter()
# RFC 6455's "policy violation": this gateway serves the Responses API over HTTPS only.
WEBSOCKET_REFUSED = 1008


@router.post("/v1/responses", response_model=None, responses=STREAM_RESPONSE)
@router.post("/responses", include_in_schema=False, response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> JSONResponse | StreamingResponse:
    fields = body.model_dump(exclude_unset=True)
    call = gateway.request(request.url.path, "responses", who, fields, request_id(request))
    result = await gateway.run(call, after_response(request))
    headers = cache_headers(gateway, result)
    if isinstance(result, ResponsesStream):
        return event_stream(result.events(), headers)
    return JSONResponse(complete_usage(result.model_dump(exclude_none=True)), headers=headers)


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, gateway: GatewayDep, who: Authenticated) -> Any:
    stored = await asyncio.to_thread(gateway.stored_responses.get, response_id, who.key_id)
    return stored.response


@router.delete("/v1/responses/{response_id}")
async def delete_response(
    response_id: str, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    await asyncio.to_thread(gateway.stored_responses.delete, response_id, who.key_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.websocket("/v1/responses")
@router.websocket("/responses")
async def refuse_websocket(websocket: WebSocket) -> None:
    """Codex tries a websocket first; refused at once, it falls back to HTTPS."""
    await websocket.close(code=WEBSOCKET_REFUSED, reason="Use HTTPS: POST /v1/responses.")
