"""OpenAI's Responses API (Codex CLI, the OpenAI Agents SDK, `client.responses`), through the
pipeline; stored responses read and deleted by the key that made them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from llm_proxy.http.answers import respond
from llm_proxy.http.dependencies import Authenticated, GatewayDep, inbound
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import ResponsesRequest

router = APIRouter()
# RFC 6455's "policy violation": this gateway serves the Responses API over HTTPS only.
WEBSOCKET_REFUSED = 1008


@router.post("/v1/responses", response_model=None, responses=STREAM_RESPONSE)
@router.post("/responses", include_in_schema=False, response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> Response:
    return respond(await gateway.serve("responses", inbound(request, who, body)))


@router.get("/v1/responses/{response_id}")
@router.get("/responses/{response_id}", include_in_schema=False)
async def get_response(response_id: str, gateway: GatewayDep, who: Authenticated) -> Any:
    return await gateway.stored_response(response_id, who)


@router.delete("/v1/responses/{response_id}")
@router.delete("/responses/{response_id}", include_in_schema=False)
async def delete_response(
    response_id: str, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    await gateway.delete_stored_response(response_id, who)
    return {"id": response_id, "object": "response", "deleted": True}


@router.websocket("/v1/responses")
@router.websocket("/responses")
async def refuse_websocket(websocket: WebSocket) -> None:
    """Codex tries a websocket first; refused at once, it falls back to HTTPS."""
    await websocket.close(code=WEBSOCKET_REFUSED, reason="Use HTTPS: POST /v1/responses.")
