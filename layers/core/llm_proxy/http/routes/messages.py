"""Anthropic's Messages API: translated to a chat completion, through the pipeline, and back
(a message object, or Anthropic's SSE events)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llm_proxy.http.answers import cache_headers, event_stream
from llm_proxy.http.dependencies import Authenticated, GatewayDep, after_response, request_id
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import AnthropicMessagesRequest
from llm_proxy.pipeline.messages import message_events, to_chat_request, to_message
from llm_proxy.pipeline.streams import ChatStream

router = APIRouter()


@router.post("/v1/messages", response_model=None, responses=STREAM_RESPONSE)
async def messages(
    body: AnthropicMessagesRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> JSONResponse | StreamingResponse:
    sent = body.model_dump(exclude_unset=True)
    chat = to_chat_request(sent)
    call = gateway.request(request.url.path, "messages", who, chat, request_id(request), sent)
    result = await gateway.run(call, after_response(request))
    headers = cache_headers(gateway, result)
    if isinstance(result, ChatStream):
        return event_stream(message_events(result), headers)
    return JSONResponse(to_message(result, str(sent.get("model"))), headers=headers)
