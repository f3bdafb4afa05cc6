"""An upstream that speaks Ollama's HTTP API, with fault injection.

`POST /api/generate` and `POST /api/chat` answer one JSON object, or NDJSON
(`application/x-ndjson`: one object per word with `done: false`, then a final `done: true`
object carrying the counters) when `stream` is true or absent, which is Ollama's default.
`GET /`, `GET /api/tags`, `GET /api/version` and `POST /api/show` answer as Ollama does, and
a model that was never pulled is a 404 `{"error": ...}`. Counts are deterministic: one token
per whitespace-separated word of the prompt (with the system prompt) or of every message,
and of the reply. Every request is recorded with the final object it was answered with.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from devstack.doubles.base import RecordedRequest, UpstreamDouble

NDJSON = "application/x-ndjson"
# Fixed durations (nanoseconds, as Ollama reports them) keep answers reproducible.
LOAD_DURATION_NS = 5_025_959
PROMPT_EVAL_NS_PER_TOKEN = 1_250_000
EVAL_NS_PER_TOKEN = 20_000_000


@dataclass
class Fault:
    """What the next generate/chat request gets instead of a normal answer; status 200 with a
    delay is a normal answer that comes late."""

    status: int = 500
    message: str = "llama runner process has terminated: exit status 2"
    delay_s: float = 0.0
    malformed: bool = False
    cut_stream: bool = False
    # Ollama reports a failure after a stream has begun as an `{"error": ...}` line.
    error_mid_stream: bool = False


@dataclass(kw_only=True)
class OllamaUpstream(UpstreamDouble[Fault]):
    # Names as `ollama list` shows them; a request for "llama2" means "llama2:latest".
    models: tuple[str, ...] = ("llama2:latest", "mistral:latest", "qwen:0.5b")
    reply: str = "Hello from the Ollama double."
    # A thinking model's reasoning, sent in `message.thinking` when a chat asks to `think`.
    thoughts: str = "The user wants a greeting."

    def calls(self, path: str) -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.path == path]

    def knows(self, model: str) -> bool:
        return _with_tag(model) in {_with_tag(name) for name in self.models}

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.get("/")
        @api.head("/")
        async def root() -> Response:
            return PlainTextResponse("Ollama is running")

        @api.get("/api/version")
        async def version() -> dict[str, str]:
            return {"version": "0.5.7"}

        @api.get("/api/tags")
        async def tags(request: Request) -> dict[str, Any]:
            self._record(request, {})
            return {"models": [_tag_entry(name) for name in self.models]}

        @api.post("/api/show")
        async def show(request: Request) -> Response:
            body = await _json_body(request)
            if body is None:
                return _error(400, "invalid request body")
            self._record(request, body)
            name = str(body.get("model") or body.get("name") or "")
            if not self.knows(name):
                return _error(404, f"model '{name}' not found")
            return JSONResponse(
                {
                    "modelfile": f"FROM {_with_tag(name)}\n",
                    "parameters": 'stop "[INST]"\nstop "[/INST]"',
                    "template": "[INST] {{ .System }} {{ .Prompt }} [/INST]",
                    "details": _tag_entry(name)["details"],
                    "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
                    "capabilities": ["completion"],
                }
            )

        @api.post("/api/generate")
        async def generate(request: Request) -> Response:
            return await self._answer(request, chat=False)

        @api.post("/api/chat")
        async def chat(request: Request) -> Response:
            return await self._answer(request, chat=True)

        return api

    # -- generate / chat ---------------------------------------------------------------------

    def _record(self, request: Request, body: dict[str, Any]) -> RecordedRequest:
        recorded = RecordedRequest(request.url.path, dict(request.headers), body)
        self.requests.append(recorded)
        return recorded

    async def _answer(self, request: Request, *, chat: bool) -> Response:
        body = await _json_body(request)
        if body is None:
            return _error(400, "invalid character looking for beginning of value")
        recorded = self._record(request, body)
        model = body.get("model")
        if not model:
            return _error(400, "model is required")
        if not self.knows(str(model)):
            return _error(404, f'model "{model}" not found, try pulling it first')
        fault = self.next_fault()
        if fault and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault and fault.malformed:
            return Response('{"model": "' + str(model), media_type="application/json")
        if fault and fault.status != 200 and not (fault.cut_stream or fault.error_mid_stream):
            return _error(fault.status, fault.message)
        prompt_tokens = _chat_words(body) if chat else _generate_words(body)
        thinking = self.thoughts if chat and body.get("think") else ""
        final = self._final(str(model), prompt_tokens, chat, thinking)
        if body.get("stream", True):
            recorded.answer = final
            lines = self._lines(str(model), final, chat, thinking, fault)
            return StreamingResponse(lines, media_type=NDJSON)
        recorded.answer = final | _text(self.reply, chat, thinking)
        return JSONResponse(recorded.answer)

    def _final(self, model: str, prompt_tokens: int, chat: bool, thinking: str) -> dict[str, Any]:
        """The closing object: a stream's last line, or (with the text) the whole answer."""
        eval_count = len(self.reply.split()) + len(thinking.split())
        prompt_ns = prompt_tokens * PROMPT_EVAL_NS_PER_TOKEN
        eval_ns = eval_count * EVAL_NS_PER_TOKEN
        final: dict[str, Any] = {
            "model": model,
            "created_at": _now(),
            **_text("", chat),
            "done": True,
            "done_reason": "stop",
        }
        if not chat:
            # Ollama's encoded conversation, to send back for a follow-up; opaque to clients.
            final["context"] = list(range(1, prompt_tokens + eval_count + 1))
        final.update(
            total_duration=LOAD_DURATION_NS + prompt_ns + eval_ns,
            load_duration=LOAD_DURATION_NS,
            prompt_eval_count=prompt_tokens,
            prompt_eval_duration=prompt_ns,
            eval_count=eval_count,
            eval_duration=eval_ns,
        )
        return final

    async def _lines(
        self, model: str, final: dict[str, Any], chat: bool, thinking: str, fault: Fault | None
    ) -> AsyncIterator[bytes]:
        for index, word in enumerate(thinking.split()):
            piece = word if index == 0 else f" {word}"
            line = {"model": model, "created_at": _now(), **_text("", chat, piece), "done": False}
            yield _ndjson(line)
        words = self.reply.split()
        for index, word in enumerate(words):
            if fault and index == len(words) // 2:
                if fault.error_mid_stream:
                    yield _ndjson({"error": fault.message})
                    return
                if fault.cut_stream:
                    raise ConnectionResetError("stream cut by fault injection")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            piece = word if index == 0 else f" {word}"
            line = {"model": model, "created_at": _now(), **_text(piece, chat), "done": False}
            yield _ndjson(line)
        yield _ndjson({**final, "created_at": _now()})


def _text(text: str, chat: bool, thinking: str = "") -> dict[str, Any]:
    if not chat:
        return {"response": text}
    message = {"role": "assistant", "content": text}
    return {"message": {**message, "thinking": thinking} if thinking else message}


def _generate_words(body: dict[str, Any]) -> int:
    return len(str(body.get("system") or "").split()) + len(str(body.get("prompt") or "").split())


def _chat_words(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(len(str(m.get("content") or "").split()) for m in messages if isinstance(m, dict))


def _with_tag(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _tag_entry(name: str) -> dict[str, Any]:
    tagged = _with_tag(name)
    return {
        "name": tagged,
        "model": tagged,
        "modified_at": "2024-05-01T10:00:00.000000000Z",
        "size": 3_826_793_677,
        "digest": "78e26419b4469263f75331927a00a0284ef6544c1975b826b15abdaef17bb962",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "7B",
            "quantization_level": "Q4_0",
        },
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
