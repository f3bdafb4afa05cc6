"""OpenAI's Responses API (Codex CLI, the OpenAI Agents SDK, `client.responses`), through the
pipeline, with its input-token count; stored responses read, listed, cancelled and deleted by
the key that made them. Every route is served with and without `/v1`, as the LiteLLM proxy
serves them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import Response

from llm_proxy.gateway import ItemsQuery
from llm_proxy.http.answers import respond
from llm_proxy.http.dependencies import Authenticated, GatewayDep, inbound
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import InputTokensRequest, ResponsesRequest

router = APIRouter()
# RFC 6455's "policy violation": this gateway serves the Responses API over HTTPS only.
WEBSOCKET_REFUSED = 1008


@router.post("/v1/responses", response_model=None, responses=STREAM_RESPONSE)
@router.post("/responses", include_in_schema=False, response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> Response:
    return respond(await gateway.serve("responses", inbound(request, who, body)))


@router.post("/v1/responses/input_tokens")
@router.post("/responses/input_tokens", include_in_schema=False)
async def input_tokens(
    body: InputTokensRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    """The openai SDK's `responses.input_tokens.count`: checked like a response, counted by
    litellm's tokenizer for the model; nothing is called and nothing is spent."""
    counted: dict[str, Any] = (
        await gateway.serve("input_tokens", inbound(request, who, body))
    ).body
    return counted


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


@router.post("/v1/responses/{response_id}/cancel")
@router.post("/responses/{response_id}/cancel", include_in_schema=False)
async def cancel_response(response_id: str, gateway: GatewayDep, who: Authenticated) -> Any:
    return await gateway.cancel_stored_response(response_id, who)


@router.get("/v1/responses/{response_id}/input_items")
@router.get("/responses/{response_id}/input_items", include_in_schema=False)
async def list_input_items(
    response_id: str,
    request: Request,
    gateway: GatewayDep,
    who: Authenticated,
    limit: str | None = None,
    order: str | None = None,
    after: str | None = None,
    before: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    """OpenAI's `ResponseItemList`. Query values are checked by the gateway, so a bad one is
    a 400 naming it; `include[]` is the openai SDK's spelling of `include`."""
    included = [*(include or ()), *request.query_params.getlist("include[]")]
    query = ItemsQuery.parse(limit, order, after, before, included)
    return await gateway.stored_input_items(response_id, who, query)


@router.websocket("/v1/responses")
@router.websocket("/responses")
async def refuse_websocket(websocket: WebSocket) -> None:
    """Codex tries a websocket first; refused at once, it falls back to HTTPS."""
    await websocket.close(code=WEBSOCKET_REFUSED, reason="Use HTTPS: POST /v1/responses.")
