"""The middleware every HTTP request passes through."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_proxy.errors import ProxyError
from llm_proxy.http.errors import proxy_error_response
from llm_proxy.lambda_extension import AfterResponseExtension
from llm_proxy.logs import logger

# Threads of their own for the work left for after a response (usage writes), so that a slow
# table delays only that work, never the worker-thread calls of the requests being served.
AFTER_RESPONSE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-response")


class RequestContext:
    """Every HTTP request: its id (API Gateway's, else a fresh one) in the request state, as
    the log correlation id and as `x-request-id` on the response; a body larger than the limit
    refused by its Content-Length; one access log line; then the work the route left for after
    the response (`after_response`), run even when the route failed.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the
    rest of the app in a task of its own and relays every response through a memory stream,
    which costs each request more than everything this does."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        extension: AfterResponseExtension | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # In Lambda: the extension that runs the work after the invocation's response.
        self.extension = extension

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        event = scope.get("aws.event") or {}
        rid = (event.get("requestContext") or {}).get("requestId") or uuid.uuid4().hex
        later = LaterWork()
        scope.setdefault("state", {}).update(request_id=rid, after_response=later.append)
        logger.set_correlation_id(rid)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = rid
            await send(message)

        limit = self.max_body_bytes
        length = Headers(scope=scope).get("content-length", "")
        try:
            too_large = length.isdigit() and int(length) > limit
            if not length.isdigit() and not too_large:
                # No Content-Length (a chunked body): read it here, up to the limit.
                body, too_large = await read_body(receive, limit)
                receive = replay(body, receive)
            if too_large:
                error = ProxyError(
                    413,
                    f"Request body is larger than {limit} bytes.",
                    "invalid_request_error",
                    code="request_too_large",
                )
                await proxy_error_response(scope["path"], rid, error)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
            logger.info(
                "request",
                extra={"method": scope["method"], "path": scope["path"], "status": status},
            )
        finally:
            await self._after_response(scope, later)

    async def _after_response(self, scope: Scope, later: LaterWork) -> None:
        invocation = invocation_id(scope)
        if self.extension is not None and invocation:
            for work in later.close():
                self.extension.submit(work)
            self.extension.handed_over(invocation)
            return
        loop = asyncio.get_running_loop()
        for work in later.close():
            try:
                await loop.run_in_executor(AFTER_RESPONSE_THREADS, work)
            except Exception:
                logger.exception("work after the response failed")


class LaterWork:
    """The work a request leaves for after its response. Work left once that has run (a stream
    a hang-up cut finishes its metering late) runs at once, on the same threads."""

    def __init__(self) -> None:
        self._work: list[Callable[[], object]] = []
        self._closed = False

    def append(self, work: Callable[[], object]) -> None:
        if not self._closed:
            self._work.append(work)
            return
        done = asyncio.get_running_loop().run_in_executor(AFTER_RESPONSE_THREADS, work)
        _LATE.add(done)
        done.add_done_callback(_late_done)

    def close(self) -> Iterator[Callable[[], object]]:
        """The work left so far, then any left while it runs; later work runs at once."""
        while self._work:
            yield self._work.pop(0)
        self._closed = True


# Late work in flight, held until done (the loop keeps only weak references to futures).
_LATE: set[asyncio.Future[object]] = set()


def _late_done(done: asyncio.Future[object]) -> None:
    _LATE.discard(done)
    if not done.cancelled() and done.exception() is not None:
        logger.error("work after the response failed", exc_info=done.exception())


def invocation_id(scope: Scope) -> str | None:
    """The Lambda request id of the invocation serving this request: Mangum's context, or the
    context Lambda Web Adapter passes as a header."""
    context = scope.get("aws.context")
    if context is not None:
        return str(getattr(context, "aws_request_id", "") or "") or None
    header = Headers(scope=scope).get("x-amzn-lambda-context")
    if header:
        try:
            return str(json.loads(header).get("request_id") or "") or None
        except ValueError:
            return None
    return None


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or as much as was read when it passed `limit` (then True)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then the server's own messages
    (a disconnect, which a streamed response listens for)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
