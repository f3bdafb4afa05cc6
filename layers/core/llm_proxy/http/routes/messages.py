"""Anthropic's Messages API: translated to a chat completion, through the pipeline, and back
(a message object, or Anthropic's SSE events)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llm_proxy.http.answers import cache_headers, event_stream
from llm_proxy.http.dependencies import Authenticated, GatewayDep, after_response, request_id
from llm_proxy.http.openapi import STREAM_RESPONSE
from llm_proxy.http.schemas import AnthropicMessagesRequest, CountTokensRequest
from llm_proxy.pipeline.anthropic_native import native_parts
from llm_proxy.pipeline.messages import (
    count_input_tokens,
    message_events,
    to_chat_request,
    to_message,
)
from llm_proxy.pipeline.streams import ChatStream

router = APIRouter()


@router.post("/v1/messages", response_model=None, responses=STREAM_RESPONSE)
@router.post("/messages", include_in_schema=False, response_model=None)
async def messages(
    body: AnthropicMessagesRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> JSONResponse | StreamingResponse:
    """`?beta=true` (the SDK's beta client, Claude Code) is the same route."""
    sent = body.model_dump(exclude_unset=True)
    chat = to_chat_request(sent)
    native = native_parts(request.headers, sent)
    rid = request_id(request)
    call = gateway.request(request.url.path, "messages", who, chat, rid, sent, native)
    result = await gateway.run(call, after_response(request))
    headers = cache_headers(gateway, result)
    if isinstance(result, ChatStream):
        count_input = partial(count_input_tokens, chat, call.model)
        return event_stream(message_events(result, count_input), headers)
    return JSONResponse(to_message(result, str(sent.get("model"))), headers=headers)


@router.post("/v1/messages/count_tokens")
@router.post("/messages/count_tokens", include_in_schema=False)
async def count_tokens(
    body: CountTokensRequest, request: Request, gateway: GatewayDep, who: Authenticated
) -> dict[str, int]:
    """The anthropic SDK's `messages.count_tokens`: checked like a message, counted by
    litellm's tokenizer for the model; nothing is called and nothing is spent."""
    sent = body.model_dump(exclude_unset=True)
    chat = to_chat_request({**sent, "max_tokens": 1})
    call = gateway.request(request.url.path, "count_tokens", who, chat, request_id(request), sent)
    await gateway.check(call)
    return {"input_tokens": count_input_tokens(chat, call.model)}
