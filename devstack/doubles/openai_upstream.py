"""An upstream that speaks OpenAI's chat-completions wire format, with fault injection.

It checks the Bearer key, answers plain JSON or SSE chunks (with the usage chunk when
`stream_options.include_usage` is set), and records every request it received.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from devstack.doubles.base import RecordedRequest, UpstreamDouble


@dataclass
class Fault:
    """What the next matching request gets instead of a normal answer."""

    status: int = 500
    message: str = "upstream failure"
    retry_after: str | None = None
    delay_s: float = 0.0
    malformed: bool = False
    cut_stream: bool = False


@dataclass(kw_only=True)
class OpenAIUpstream(UpstreamDouble[Fault]):
    api_key: str
    reply: str = "Hello from the upstream double."

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/v1/chat/completions")
        @api.post("/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "Incorrect API key provided.", "invalid_api_key")
            fault = self.next_fault()
            if fault and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault and fault.malformed:
                return Response("{not json", media_type="application/json")
            if fault and not fault.cut_stream:
                headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
                return _error(fault.status, fault.message, "upstream_error", headers)
            prompt_tokens = _count_tokens(body.get("messages", []))
            completion_tokens = len(self.reply.split())
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(
                    self._chunks(body["model"], prompt_tokens, include_usage, fault),
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
                            "message": {"role": "assistant", "content": self.reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )

        @api.post("/v1/embeddings")
        @api.post("/embeddings")
        async def embeddings(request: Request) -> Response:
            body = await request.json()
            self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "Incorrect API key provided.", "invalid_api_key")
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

    async def _chunks(
        self, model: str, prompt_tokens: int, include_usage: bool, fault: Fault | None
    ) -> AsyncIterator[bytes]:
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        words = self.reply.split()

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        yield frame({"role": "assistant", "content": ""})
        for index, word in enumerate(words):
            if fault and fault.cut_stream and index == len(words) // 2:
                raise ConnectionResetError("stream cut by fault injection")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield frame({"content": word if index == 0 else f" {word}"})
        yield frame({}, "stop")
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
            }
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


def _count_tokens(messages: list[dict[str, Any]]) -> int:
    """A deterministic stand-in for a tokenizer: one token per word, plus one per message."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        total += len(str(content).split()) + 1
    return total


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return JSONResponse(body, status_code=status, headers=headers)
