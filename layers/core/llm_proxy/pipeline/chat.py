"""OpenAI's chat completions over the pipeline: how a chat stream's chunks are read and metered
(`ChatReader`), how they go out as OpenAI's SSE (`chat_events`), and a cached answer replayed
as a stream (`replayed_chunks`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import litellm

from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.meter import record_usage
from llm_proxy.pipeline.streams import StreamReader, empty_stream

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest
    from llm_proxy.pipeline.streams import MeteredStream


def carries_something(chunk: Any) -> bool:
    """A chunk with an answer in it (litellm reads a body that is not SSE as a stream of one
    bare finishing chunk)."""
    if getattr(chunk, "usage", None) is not None:
        return True
    for choice in getattr(chunk, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        if any(getattr(delta, name, None) for name in ("role", "content", "tool_calls")):
            return True
    return False


class ChatReader(StreamReader):
    """A chat stream's chunks: usage from the chunk that carries it, one id for the whole
    stream, and the text kept to count tokens where the provider reports none."""

    def __init__(self, request: GatewayRequest) -> None:
        super().__init__(request)
        self._answered = False
        self._stream_id = ""

    def read(self, chunk: Any, record: UsageRecord) -> Any:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            record_usage(record, usage)
        # One id for the whole stream, as OpenAI sends it (some providers vary it).
        self._stream_id = self._stream_id or str(getattr(chunk, "id", "") or "")
        if not self._stream_id.startswith("chatcmpl-"):
            self._stream_id = f"chatcmpl-{uuid.uuid4().hex}"
        chunk.id = self._stream_id
        for choice in getattr(chunk, "choices", None) or []:
            delta = choice.delta
            self.streamed.extend(streamed_text(delta))
            answer = getattr(delta, "content", None) or getattr(delta, "tool_calls", None)
            self._answered = self._answered or bool(answer)
        self._answered = self._answered or usage is not None
        return chunk

    def end(self, model: str, source: Any) -> None:
        if not self._answered:
            raise empty_stream(model, source)
        self.completed = True

    @staticmethod
    def replay(response: Any) -> AsyncIterator[Any]:
        return replayed_chunks(response)


def streamed_text(delta: Any) -> list[str]:
    """What a chunk's delta adds to the answer the provider bills: its text, its reasoning,
    and the names and arguments of the tools it calls."""
    texts = [getattr(delta, "content", None), getattr(delta, "reasoning_content", None)]
    for call in getattr(delta, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        texts += [getattr(function, "name", None), getattr(function, "arguments", None)]
    return [text for text in texts if isinstance(text, str) and text]


async def chat_events(stream: MeteredStream, request: GatewayRequest) -> AsyncIterator[str]:
    """OpenAI's SSE: one `data:` line per chunk, then `data: [DONE]` (or an error)."""
    wants_usage = request.client_wants_usage
    try:
        async for chunk in stream.items():
            data = spec_chunk(chunk.model_dump(exclude_none=True))
            if not wants_usage:
                data.pop("usage", None)
                if not data.get("choices"):
                    continue
            yield f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
        yield "data: [DONE]\n\n"
    except ProxyError as error:
        yield f"data: {json.dumps(error.body())}\n\n"


def dumped(response: Any, request: GatewayRequest) -> Any:
    """litellm's answer as its API's JSON (embeddings)."""
    return response.model_dump(exclude_none=True)


def chat_answer(response: Any, request: GatewayRequest) -> Any:
    """A chat completion as OpenAI's spec has it (`CreateChatCompletionResponse`): the fields
    it requires present, as null where there is nothing, which litellm's dump leaves out."""
    answer: dict[str, Any] = response.model_dump(exclude_none=True)
    for choice in answer.get("choices") or []:
        choice["logprobs"] = spec_logprobs(choice.get("logprobs"))
        message = choice.setdefault("message", {})
        # An assistant message that only calls tools has content, and it is null.
        message.setdefault("content", None)
        message.setdefault("refusal", None)
    return answer


def spec_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chunk as OpenAI's spec has it (`CreateChatCompletionStreamResponse`): each choice's
    `finish_reason` null until the last, and its `logprobs` null or whole."""
    for choice in chunk.get("choices") or []:
        choice.setdefault("finish_reason", None)
        choice["logprobs"] = spec_logprobs(choice.get("logprobs"))
    return chunk


def spec_logprobs(logprobs: Any) -> Any:
    """Logprobs with both their lists (`content`, `refusal`), each null where it is absent."""
    if not isinstance(logprobs, dict):
        return None
    return {"content": logprobs.get("content"), "refusal": logprobs.get("refusal"), **logprobs}


def from_cache(answer: dict[str, Any]) -> Any:
    return litellm.ModelResponse(**answer)


async def replayed_chunks(response: litellm.ModelResponse) -> AsyncIterator[Any]:
    """A cached answer as the chunks of a stream: the message, then the finish and usage."""
    choice = response.choices[0]
    message = choice.message
    delta: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
    if message.tool_calls:
        delta["tool_calls"] = [
            {**call.model_dump(), "index": index} for index, call in enumerate(message.tool_calls)
        ]
    base = {"id": response.id, "created": response.created, "model": response.model}
    yield litellm.ModelResponseStream(**base, choices=[{"index": 0, "delta": delta}])
    yield litellm.ModelResponseStream(
        **base,
        choices=[{"index": 0, "delta": {}, "finish_reason": choice.finish_reason or "stop"}],
        usage=getattr(response, "usage", None),
    )
