"""Anthropic's Messages API: translated to a chat completion, through the pipeline, and back
(a message object, or Anthropic's SSE events). Every route here, and every path under
`/v1/messages` it does not serve, answers errors in Anthropic's envelope."""

from __future__ import annotations

from typing import NoReturn

from fastapi import APIRouter, Request
from fastapi.responses import Response

from llm_proxy.http.answers import respond
from llm_proxy.http.dependencies import Authenticated, GatewayDep, inbound
from llm_proxy.http.errors import AnthropicRoute, not_served
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import AnthropicMessagesRequest, CountTokensRequest

router = APIRouter(route_class=AnthropicRoute)
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def not_served_here(request: Request) -> NoReturn:
    """A path under the Messages API that it does not serve."""
    raise not_served(request)


@router.post("/v1/messages", response_model=None, responses=STREAM_RESPONSE)
@router.post("/messages", include_in_schema=False, response_model=None)
async def messages(
    body: AnthropicMessagesRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> Response:
    """`?beta=true` (the SDK's beta client, Claude Code) is the same route."""
    return respond(await gateway.serve("messages", inbound(request, who, body)))


@router.post("/v1/messages/count_tokens")
@router.post("/messages/count_tokens", include_in_schema=False)
async def count_tokens(
    body: CountTokensRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> dict[str, int]:
    """The anthropic SDK's `messages.count_tokens`: checked like a message, counted by
    litellm's tokenizer for the model; nothing is called and nothing is spent."""
    counted: dict[str, int] = (
        await gateway.serve("count_tokens", inbound(request, who, body))
    ).body
    return counted


for _path in ("/v1/messages", "/messages"):
    for _rest in ("{rest}", "{rest}/{more:path}"):
        router.add_api_route(
            f"{_path}/{_rest}",
            not_served_here,
            methods=EVERY_METHOD,
            include_in_schema=False,
            response_model=None,
        )
