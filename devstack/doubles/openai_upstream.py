"""An upstream that speaks OpenAI's wire format (chat completions, embeddings and the Responses
API), with fault injection.

It checks the Bearer key, answers plain JSON or SSE chunks (with the usage chunk when
`stream_options.include_usage` is set), and records every request it received. Asked to, it
calls the tools a request offers (`call_tools`) and quotes a tool's result back (offered OpenAI's
web search on the Responses API, it runs `web_searches` searches first); a reasoning
model (a name with "reasoner", or a request with `reasoning_effort`) answers with its
reasoning in `reasoning_content` (DeepSeek, Ollama) or `reasoning` (OpenRouter). With
`logprobs` asked, each choice carries its tokens' log probabilities, as OpenAI's chat object
and chunk object references describe them (`logprobs.content` of token, logprob, bytes and
`top_logprobs`; `logprobs.refusal` null): https://platform.openai.com/docs/api-reference/chat
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from devstack.doubles.base import RecordedRequest, UpstreamDouble
from devstack.doubles.openai_responses import (
    ResponsesAnswer,
    count_input_tokens,
    input_items,
    refused_reasoning,
)
from devstack.doubles.prompt_cache import openai_cached_tokens
from devstack.doubles.tool_calls import arguments_for, call_id, chosen_tools, tool_reply

# How many characters of a tool call's arguments each streamed chunk carries.
ARGUMENT_PIECE = 8


@dataclass
class Fault:
    """What the next matching request gets instead of a normal answer."""

    status: int = 500
    message: str = "upstream failure"
    retry_after: str | None = None
    delay_s: float = 0.0
    malformed: bool = False
    cut_stream: bool = False  # drop the connection halfway through the answer's words
    # An error event halfway through the answer (chat: `data: {"error": ...}`; Responses:
    # `event: error`), and nothing after it.
    error_event: bool = False
    # Answer 200 and the stream's headers, then send nothing for this long before the events.
    silent_s: float = 0.0
    # Set once the client hung up during that silence (it let the deployment go).
    hung_up: bool = False
    # Pause this long halfway through the answer, then go on.
    stall_s: float = 0.0
    # The error event first, before any content.
    error_at_start: bool = False

    async def keep_silent(self) -> None:
        try:
            await asyncio.sleep(self.silent_s)
        except BaseException:
            self.hung_up = True
            raise

    @property
    def in_stream(self) -> bool:
        """Whether the fault happens inside a 200 stream rather than as an error status."""
        stream_faults = (self.cut_stream, self.error_event, self.silent_s, self.stall_s)
        return any(stream_faults) or self.error_at_start

    def error(self) -> dict[str, Any]:
        """The error object of an error event."""
        return {"message": self.message, "type": "server_error", "param": None, "code": None}


@dataclass(kw_only=True)
class OpenAIUpstream(UpstreamDouble[Fault]):
    api_key: str
    reply: str = "Hello from the upstream double."
    thoughts: str = "The user wants a greeting."
    # Where a reasoning model's reasoning goes: DeepSeek's and Ollama's field, or OpenRouter's.
    reasoning_field: str = "reasoning_content"
    call_tools: bool = False
    tool_name: str | None = None  # the tool to call; the first offered when None
    tool_input: dict[str, Any] | None = None  # its arguments; generated from its schema when None
    parallel_calls: int = 1  # how many offered tools one answer calls
    cached_tokens: int = 0  # prompt tokens reported as read from the provider's cache
    # This deployment's automatic prompt cache (`prompt_cache`), used where `cached_tokens`
    # is 0.
    prompt_cache: set[str] = field(default_factory=set)
    web_searches: int = 1  # searches a Responses answer runs where web search is offered

    def reset(self) -> None:
        super().reset()
        self.call_tools, self.tool_name, self.tool_input = False, None, None
        self.parallel_calls, self.cached_tokens, self.web_searches = 1, 0, 1
        self.reasoning_field = "reasoning_content"
        self.prompt_cache.clear()

    async def _received(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """The request's body, recorded, and the refusal of a wrong key, if it is one."""
        body = await request.json()
        self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, _error(401, "Incorrect API key provided.", "invalid_api_key")
        return body, None

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/chat/completions")
        @api.post("/chat/completions")
        async def chat(request: Request) -> Response:
            body, refused = await self._received(request)
            if refused is not None:
                return refused
            fault = self.next_fault()
            if fault and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault and fault.malformed:
                return Response("{not json", media_type="application/json")
            if fault and not fault.in_stream:
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                return _error(fault.status, fault.message, "upstream_error", headers)
            answer = self._answer(body)
            usage = self._usage(_count_tokens(body.get("messages", [])), answer)
            usage = self._with_chat_cache(usage, body)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(
                    self._chunks(body, answer, usage if include_usage else None, fault),
                    media_type="text/event-stream",
                )
            return JSONResponse(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": answer.message(),
                            "logprobs": _logprobs(answer.content, body),
                            "finish_reason": answer.finish,
                        }
                    ],
                    "usage": usage,
                }
            )

        @api.post("/v1/responses")
        @api.post("/responses")
        async def responses(request: Request) -> Response:
            body, refused = await self._received(request)
            if refused is not None:
                return refused
            fault = self.next_fault()
            if fault is not None and not fault.in_stream:
                return _error(fault.status, fault.message, "upstream_error")
            unreadable = refused_reasoning(input_items(body), body.get("store", True) is not False)
            if unreadable:
                return _error(400, unreadable, "invalid_request_error")
            tools = (self.call_tools, self.tool_name, self.tool_input, self.parallel_calls)
            answer = ResponsesAnswer.build(
                body, self.reply, self.thoughts, tools, self.web_searches
            )
            usage = answer.usage(self.cached_tokens or self._responses_cached(body))
            if body.get("stream"):
                events = list(answer.events(usage))
                return StreamingResponse(
                    _frames(events, fault, pause=self.chunk_delay_s),
                    media_type="text/event-stream",
                )
            whole = answer.response(usage=usage)
            self.requests[-1].answer = whole
            return JSONResponse(whole)

        @api.post("/v1/embeddings")
        @api.post("/embeddings")
        async def embeddings(request: Request) -> Response:
            body, refused = await self._received(request)
            if refused is not None:
                return refused
            if (fault := self.next_fault()) is not None:
                return _error(fault.status, fault.message, "upstream_error")
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            tokens = sum(len(str(text).split()) for text in texts)
            data = [
                # A deterministic vector per input: its index and word count.
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": [float(i), len(str(t).split()), 0.5],
                }
                for i, t in enumerate(texts)
            ]
            return JSONResponse(
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        @api.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": []}

        return api

    def _answer(self, body: dict[str, Any]) -> ChatAnswer:
        """Text, a call to an offered tool, or the quote of a tool's result; with reasoning
        when the model reasons."""
        messages = body.get("messages") or [{}]
        reasons = "reasoner" in str(body.get("model")) or any(
            body.get(name) for name in ("reasoning_effort", "reasoning", "include_reasoning")
        )
        answer = ChatAnswer(self.thoughts if reasons else None, self.reasoning_field)
        offered = [tool.get("function") or {} for tool in body.get("tools") or []]
        if messages[-1].get("role") == "tool":
            answer.content = tool_reply(messages[-1].get("content"))
        elif self.call_tools and offered:
            count = 1 if body.get("parallel_tool_calls") is False else self.parallel_calls
            for tool in chosen_tools(offered, self.tool_name, count):
                arguments = self.tool_input or arguments_for(tool.get("parameters"))
                answer.tool_calls.append(
                    {
                        "id": call_id(),
                        "type": "function",
                        "function": {"name": tool["name"], "arguments": json.dumps(arguments)},
                    }
                )
        else:
            answer.content = self.reply
        return answer

    def _usage(self, prompt_tokens: int, answer: ChatAnswer) -> dict[str, Any]:
        reasoning_tokens = len((answer.reasoning or "").split())
        completion_tokens = answer.output_tokens()
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage

    def _with_chat_cache(self, usage: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The chat usage with what this deployment's prompt cache read (set `cached_tokens`
        wins)."""
        if self.cached_tokens:
            return usage
        messages = list(body.get("messages") or [])
        tokens = [_count_tokens([message]) for message in messages]
        key = body.get("prompt_cache_key")
        cached = openai_cached_tokens(self.prompt_cache, messages, tokens, key)
        return {**usage, "prompt_tokens_details": {"cached_tokens": cached}} if cached else usage

    def _responses_cached(self, body: dict[str, Any]) -> int:
        """The Responses input tokens this deployment's prompt cache read."""
        blocks: list[Any] = [{"instructions": body.get("instructions") or ""}, *input_items(body)]
        tokens = [count_input_tokens({"instructions": blocks[0]["instructions"]})]
        tokens += [count_input_tokens({"input": [item]}) for item in blocks[1:]]
        key = body.get("prompt_cache_key")
        return openai_cached_tokens(self.prompt_cache, blocks, tokens, key)

    async def _chunks(
        self,
        body: dict[str, Any],
        answer: ChatAnswer,
        usage: dict[str, Any] | None,
        fault: Fault | None,
    ) -> AsyncIterator[bytes]:
        chunk_id, model = f"chatcmpl-{uuid.uuid4().hex}", body["model"]

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            logprobs = _logprobs(delta.get("content"), body) if delta.get("content") else None
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        if fault and fault.silent_s:
            await fault.keep_silent()
        if fault and fault.error_at_start:
            yield f"data: {json.dumps({'error': fault.error()})}\n\n".encode()
            return
        yield frame({"role": "assistant", "content": ""})
        for index, word in enumerate((answer.reasoning or "").split()):
            yield frame({answer.reasoning_field: word if index == 0 else f" {word}"})
        words = (answer.content or "").split()
        for index, word in enumerate(words):
            if fault and index == len(words) // 2:
                if fault.stall_s:
                    await asyncio.sleep(fault.stall_s)
                elif fault.cut_stream:
                    raise ConnectionResetError("stream cut by fault injection")
                elif fault.error_event:
                    yield f"data: {json.dumps({'error': fault.error()})}\n\n".encode()
                    return
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield frame({"content": word if index == 0 else f" {word}"})
        for index, call in enumerate(answer.tool_calls):
            opening = {**call, "function": {**call["function"], "arguments": ""}}
            yield frame({"tool_calls": [{"index": index, **opening}]})
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), ARGUMENT_PIECE):
                piece = {"arguments": arguments[start : start + ARGUMENT_PIECE]}
                yield frame({"tool_calls": [{"index": index, "function": piece}]})
        yield frame({}, answer.finish)
        if usage is not None:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


@dataclass
class ChatAnswer:
    reasoning: str | None
    reasoning_field: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finish(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            message[self.reasoning_field] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message

    def output_tokens(self) -> int:
        """One token per word of text and reasoning, and of each call's name and arguments."""
        calls = " ".join(
            f"{call['function']['name']} {call['function']['arguments']}"
            for call in self.tool_calls
        )
        return sum(len((text or "").split()) for text in (self.content, self.reasoning, calls))


def _logprobs(text: str | None, body: dict[str, Any]) -> dict[str, Any] | None:
    """The log probabilities of a text's tokens (one per word), where the request asks."""
    if not body.get("logprobs"):
        return None
    top = int(body.get("top_logprobs") or 0)
    tokens = []
    for word in (text or "").split(" "):
        entry = {"token": word, "logprob": -0.25, "bytes": list(word.encode())}
        tokens.append({**entry, "top_logprobs": [entry] * top})
    return {"content": tokens, "refusal": None}


def _count_tokens(messages: list[dict[str, Any]]) -> int:
    """A deterministic stand-in for a tokenizer: one token per word, plus one per message."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        total += len(str(content).split()) + 1
    return total


def sse(event_type: str, data: dict[str, Any]) -> bytes:
    return f"event: {event_type}\ndata: {json.dumps(data)}\n\n".encode()


async def _frames(
    events: list[dict[str, Any]], fault: Fault | None, pause: float = 0.0
) -> AsyncIterator[bytes]:
    """A Responses API stream with the fault's failure (halfway through its events, or right
    after `response.created`), and a `pause` before its last event (`response.completed`,
    whose usage a client that hangs up in the pause never lets the gateway read)."""
    if fault and fault.silent_s:
        await fault.keep_silent()
    halfway = len(events) // 2
    for number, event in enumerate(events):
        if fault and (number == halfway or (number == 1 and fault.error_at_start)):
            if fault.stall_s:
                await asyncio.sleep(fault.stall_s)
            elif fault.cut_stream:
                raise ConnectionResetError("stream cut by fault injection")
            elif fault.error_event or fault.error_at_start:
                error = {"code": "server_error", "message": fault.message, "param": None}
                yield sse("error", {"type": "error", **error, "sequence_number": number})
                return
        if pause and number == len(events) - 1:
            await asyncio.sleep(pause)
        yield sse(event["type"], event)


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return JSONResponse(body, status_code=status, headers=headers)
