"""A provider stream: opened up to its first chunk that carries something, re-emitted to the
client (OpenAI's SSE, or chunks for other formats), and metered when it ends, however it
ends."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import litellm

from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.errors import ProxyError, as_proxy_error
from llm_proxy.logs import logger
from llm_proxy.pipeline.meter import record_latency, record_usage

# nginx's status for a client that closed the connection before the answer was complete.
CLIENT_CLOSED_REQUEST = 499
# Metering shielded from a disconnecting client's cancellation, kept referenced until done.
_PENDING_WRITES: set[asyncio.Future[None]] = set()
# Meters a stream's record once the stream ends; the hidden params of a stream that completed
# name the deployment that finished it (None when it failed or the client left).
StreamFinish = Callable[[UsageRecord, Mapping[str, Any] | None], Awaitable[None]]


class OpenedStream:
    """A provider stream read up to its first chunk that carries something, so that a stream
    with nothing in it fails before the client is answered, while a fallback can still answer."""

    def __init__(
        self, stream: Any, read: list[Any], rest: AsyncIterator[Any], fallbacks: int
    ) -> None:
        self._stream, self._read, self._rest = stream, read, rest
        self._fallbacks = fallbacks

    @property
    def _hidden_params(self) -> dict[str, Any]:
        hidden = dict(getattr(self._stream, "_hidden_params", None) or {})
        if self._fallbacks:
            headers = dict(hidden.get("additional_headers") or {})
            taken = int(headers.get("x-litellm-attempted-fallbacks") or 0)
            headers["x-litellm-attempted-fallbacks"] = taken + self._fallbacks
            hidden["additional_headers"] = headers
        return hidden

    @property
    def opening_usage(self) -> Any:
        """The usage the provider reported as its stream began (Anthropic's message_start),
        which litellm keeps on its first raw chunk and passes on only at the end."""
        chunks = getattr(self._stream, "chunks", None)
        return getattr(chunks[0], "usage", None) if isinstance(chunks, list) and chunks else None

    async def __aiter__(self) -> AsyncIterator[Any]:
        for chunk in self._read:
            yield chunk
        async for chunk in self._rest:
            yield chunk


def _carries_something(chunk: Any) -> bool:
    if getattr(chunk, "usage", None) is not None:
        return True
    for choice in getattr(chunk, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        if any(getattr(delta, name, None) for name in ("role", "content", "tool_calls")):
            return True
    return False


async def open_stream(stream: Any, fallbacks: int = 0) -> OpenedStream | None:
    """The stream, read up to its first chunk with something in it; None when it has nothing
    (litellm reads a body that is not SSE as a stream of one bare finishing chunk)."""
    rest = stream.__aiter__()
    read: list[Any] = []
    async for chunk in rest:
        read.append(chunk)
        if _carries_something(chunk):
            return OpenedStream(stream, read, rest, fallbacks)
    return None


def empty_stream(model: str, stream: Any) -> ProxyError:
    error = ProxyError(
        502,
        f"Model '{model}': the provider's stream carried no answer.",
        "upstream_error",
        code="provider_bad_response",
    )
    error.failed_deployment_id = (getattr(stream, "_hidden_params", None) or {}).get("model_id")
    return error


class ChatStream:
    """An open provider stream, re-emitted as OpenAI SSE and metered when it ends."""

    def __init__(
        self,
        stream: Any,
        record: UsageRecord,
        timing: tuple[float, float | None],
        client_wants_usage: bool,
        messages: list[dict[str, Any]] | None,
        finish: StreamFinish,
    ) -> None:
        self._stream = stream
        self._record = record
        # When the request started, and when it was routed (None: answered from the cache).
        self._started, self._routed = timing
        self._client_wants_usage = client_wants_usage
        self._messages = messages or []
        self._finish = finish
        self._text: list[str] = []
        self._answered = False
        self._done = False
        self._stream_id = ""

    @property
    def model(self) -> str:
        return self._record.model_requested or ""

    @property
    def cache_hit(self) -> bool:
        return self._record.cache_hit

    @property
    def opening_usage(self) -> Any:
        return getattr(self._stream, "opening_usage", None)

    async def chunks(self) -> AsyncIterator[Any]:
        """The provider's chunks, metered; a failure after the start raises a ProxyError."""
        record = self._record
        try:
            async for chunk in self._stream:
                if record.ttft_ms is None:
                    record.ttft_ms = (time.perf_counter() - self._started) * 1000
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    record_usage(record, usage)
                # One id for the whole stream, as OpenAI sends it (some providers vary it).
                self._stream_id = self._stream_id or str(getattr(chunk, "id", "") or "")
                if not self._stream_id.startswith("chatcmpl-"):
                    self._stream_id = f"chatcmpl-{uuid.uuid4().hex}"
                chunk.id = self._stream_id
                for choice in getattr(chunk, "choices", None) or []:
                    self._text.append(getattr(choice.delta, "content", None) or "")
                    self._answered = self._answered or bool(
                        getattr(choice.delta, "tool_calls", None)
                    )
                self._answered = self._answered or usage is not None
                yield chunk
            if not self._answered and not "".join(self._text):
                raise empty_stream(self.model, self._stream)
            self._done = True
        except (asyncio.CancelledError, GeneratorExit):
            if record.status == 200 and not self._done:
                record.fail(CLIENT_CLOSED_REQUEST, "client_closed", "client_disconnected")
            raise
        except Exception as exc:
            error = as_proxy_error(exc, self.model)
            if error.status < 500 and error.status != 429:
                # Once the stream has started, the request was accepted: a failure now is the
                # provider's, whatever status litellm gives it.
                error = ProxyError(502, error.message, "upstream_error", code="provider_error")
            record.fail(error.status, error.error_type, error.code)
            raise error from None
        finally:
            if not record.prompt_tokens and not record.completion_tokens:
                self._estimate_usage()
            record_latency(record, self._started, self._routed)
            # After a mid-stream fallback the stream carries the deployment that finished it.
            hidden = getattr(self._stream, "_hidden_params", None) or {}
            # A client that hangs up cancels this generator; the metering must still land.
            write = asyncio.ensure_future(self._finish(record, hidden if self._done else None))
            _PENDING_WRITES.add(write)
            write.add_done_callback(_PENDING_WRITES.discard)
            await asyncio.shield(write)

    def _estimate_usage(self) -> None:
        """Count tokens when the provider sent no usage (a stream without stream_options)."""
        record = self._record
        model = record.deployment_model or self.model
        try:
            record.prompt_tokens = int(litellm.token_counter(model=model, messages=self._messages))
            text = "".join(self._text)
            record.completion_tokens = int(litellm.token_counter(model=model, text=text))
        except Exception:
            logger.warning("stream usage could not be counted", extra={"model": model})
            return
        record.usage_estimated = True

    async def events(self) -> AsyncIterator[str]:
        """OpenAI's SSE: one `data:` line per chunk, then `data: [DONE]` (or an error)."""
        try:
            async for chunk in self.chunks():
                data = chunk.model_dump(exclude_none=True)
                if not self._client_wants_usage:
                    data.pop("usage", None)
                    if not data.get("choices"):
                        continue
                yield f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
            yield "data: [DONE]\n\n"
        except ProxyError as error:
            yield f"data: {json.dumps(error.body())}\n\n"
