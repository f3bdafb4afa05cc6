"""A provider stream, whatever the API: opened up to its first item that carries something
(`OpenedStream`), then re-emitted item by item and metered when it ends, however it ends
(`MeteredStream`). What an item means is the API's (`StreamReader`: chat chunks, Responses API
events); how items go out is the API's encoder's (OpenAI's SSE, the Responses API's named
events, Anthropic's events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import litellm

from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.after_response import hold
from llm_proxy.errors import PROVIDER_BAD_RESPONSE, ProxyError, as_proxy_error, late_failure
from llm_proxy.logs import logger
from llm_proxy.pipeline.billed_input import count_request_input
from llm_proxy.pipeline.litellm_hooks import RequestScope, request_scope
from llm_proxy.pipeline.meter import record_latency

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest, RequestState

# nginx's status for a client that closed the connection before the answer was complete.
CLIENT_CLOSED_REQUEST = 499


class OpenedStream:
    """A provider stream read up to its first item that carries something, so that a stream
    that fails at once, or has nothing in it, fails before the client is answered, while a
    fallback can still answer."""

    def __init__(
        self,
        source: Any,
        read: list[Any],
        rest: AsyncIterator[Any],
        *,
        has_content: bool = True,
    ) -> None:
        self._source, self._read, self._rest = source, read, rest
        self.has_content = has_content
        # Attempts the provider call made after streams that failed before their first chunk.
        self._retries = self._fallbacks = 0
        # The request's scope, which litellm's hooks read while the stream is read on.
        self._scope: RequestScope | None = None

    @classmethod
    async def open(cls, source: Any, carries_something: Callable[[Any], bool]) -> OpenedStream:
        """Read up to the first item that carries something (which may raise: the attempt's
        failure); a stream that fails so is closed, so its deployment is let go at once."""
        rest = source.__aiter__()
        read: list[Any] = []
        try:
            async for item in rest:
                read.append(item)
                if carries_something(item):
                    return cls(source, read, rest)
        except Exception:
            await close_quietly(rest)
            raise
        return cls(source, read, rest, has_content=False)

    def served(self, scope: RequestScope, retries: int, fallbacks: int) -> OpenedStream:
        """This stream as the request's answer, read on under its scope, after `retries` and
        `fallbacks` the Router did not see."""
        self._scope, self._retries, self._fallbacks = scope, retries, fallbacks
        return self

    @property
    def _hidden_params(self) -> dict[str, Any]:
        hidden = dict(getattr(self._source, "_hidden_params", None) or {})
        if not hidden.get("model_id") and self._scope and self._scope.attempts.tried:
            # litellm's bridged Responses stream, retried within the Router, loses the id of
            # the deployment that answered: the last one the request was sent to.
            hidden["model_id"] = self._scope.attempts.tried[-1]
        added = {
            "x-litellm-attempted-retries": self._retries,
            "x-litellm-attempted-fallbacks": self._fallbacks,
        }
        if any(added.values()):
            headers = dict(hidden.get("additional_headers") or {})
            for name, count in added.items():
                headers[name] = int(headers.get(name) or 0) + count
            hidden["additional_headers"] = headers
        return hidden

    @property
    def opening_usage(self) -> Any:
        """The usage the provider reported as its stream began (Anthropic's message_start),
        which litellm keeps on its first raw chunk and passes on only at the end."""
        chunks = getattr(self._source, "chunks", None)
        return getattr(chunks[0], "usage", None) if isinstance(chunks, list) and chunks else None

    async def __aiter__(self) -> AsyncIterator[Any]:
        for item in self._read:
            yield item
        while True:
            # The scope is set for each read only: never across a yield to the client.
            with request_scope(self._scope) if self._scope else nullcontext():
                try:
                    item = await anext(self._rest)
                except StopAsyncIteration:
                    return
            yield item


async def close_quietly(stream: Any) -> None:
    """Close a provider stream (its connection) that will not be read on; a failure to close
    is no news."""
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        logger.debug("provider stream could not be closed")


def empty_stream(model: str, stream: Any) -> ProxyError:
    error = PROVIDER_BAD_RESPONSE(f"Model '{model}': the provider's stream carried no answer.")
    error.failed_deployment_id = (getattr(stream, "_hidden_params", None) or {}).get("model_id")
    return error


class StreamReader:
    """What a stream's items mean to the gateway, per API: each item as the client gets it
    (usage recorded on the way), and whether the stream completed.

    A reader keeps the text it passed on (`streamed`), so that a stream that ends without the
    provider's usage (a client that hangs up, a provider that cuts it, a deployment that sends
    none) is metered for what it produced: the gateway's count of its input and of that
    text."""

    def __init__(self, request: GatewayRequest) -> None:
        self.request = request
        # Set once the stream has given its whole answer; a stream cut before is a 499.
        self.completed = False
        # What the completed stream produced that the API keeps (a Responses API response).
        self.result: Any = None
        self.streamed: list[str] = []

    def read(self, item: Any, record: UsageRecord) -> Any:
        return item

    def end(self, model: str, source: Any) -> None:
        """The stream ended: mark it completed, or raise a ProxyError if it carried no answer."""
        self.completed = True

    def estimate_usage(self, record: UsageRecord, model: str) -> None:
        """Count the tokens the provider did not report: the input, where no count of it came;
        the output, where text was streamed and no count of it came."""
        model = record.deployment_model or model
        text = "".join(self.streamed)
        try:
            if not record.prompt_tokens:
                record.prompt_tokens = count_request_input(self.request, model)
                record.usage_estimated = True
            if not record.completion_tokens and text:
                record.completion_tokens = int(litellm.token_counter(model=model, text=text))
                record.usage_estimated = True
        except Exception:
            logger.warning("stream usage could not be counted", extra={"model": model})

    @staticmethod
    def replay(response: Any) -> AsyncIterator[Any]:
        """A whole answer (from the cache) as this API's stream items."""
        raise NotImplementedError


# Meters the stream's request once it has ended, however it ended.
StreamFinish = Callable[["MeteredStream"], Awaitable[None]]


class MeteredStream:
    """One provider stream, re-emitted item by item and metered once when it ends: completed,
    failed (a ProxyError; a provider's 4xx after the start is its failure, 502) or cut by the
    client (499). The metering is shielded from the client's cancellation."""

    def __init__(
        self, source: Any, reader: StreamReader, state: RequestState, finish: StreamFinish
    ) -> None:
        self.source = source
        self.reader = reader
        self.state = state
        self._finish = finish

    @property
    def model(self) -> str:
        return self.state.record.model_requested or ""

    @property
    def completed(self) -> bool:
        return self.reader.completed

    @property
    def hidden_params(self) -> dict[str, Any]:
        """litellm's hidden params of the provider stream: after a fallback they name the
        deployment that finished it."""
        return dict(getattr(self.source, "_hidden_params", None) or {})

    @property
    def opening_usage(self) -> Any:
        return getattr(self.source, "opening_usage", None)

    async def items(self) -> AsyncIterator[Any]:
        """The provider's items, metered; a failure after the start raises a ProxyError."""
        state, record, reader = self.state, self.state.record, self.reader
        try:
            async for item in self.source:
                if record.ttft_ms is None:
                    record.ttft_ms = (time.perf_counter() - state.started) * 1000
                yield reader.read(item, record)
            reader.end(self.model, self.source)
        except (asyncio.CancelledError, GeneratorExit):
            if not reader.completed and record.status == 200:
                record.fail(CLIENT_CLOSED_REQUEST, "client_closed", "client_disconnected")
            raise
        except Exception as exc:
            error = late_failure(as_proxy_error(exc, self.model))
            record.fail(error.status, error.error_type, error.code)
            raise error from None
        finally:
            reader.estimate_usage(record, self.model)
            record_latency(record, state.started, state.routed)
            # A client that hangs up cancels this generator; the metering must still land.
            await asyncio.shield(hold(asyncio.ensure_future(self._finish(self))))
