"""The middleware every HTTP request passes through."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_proxy.after_response import AfterResponse, run_here
from llm_proxy.errors import REQUEST_TOO_LARGE
from llm_proxy.http.errors import proxy_error_response, shown_path
from llm_proxy.logs import logger

if TYPE_CHECKING:
    from llm_proxy.lambda_extension import AfterResponseExtension


class RequestContext:
    """Every HTTP request: its id (API Gateway's, else a fresh one) in the request state, as
    the log correlation id and as `x-request-id` on the response; a body larger than the limit
    refused by its Content-Length; one access log line; then the request's after-response work
    (`after_response`), run even when the route failed.

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
        later = AfterResponse()
        scope.setdefault("state", {}).update(request_id=rid, after_response=later)
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
                error = REQUEST_TOO_LARGE(f"Request body is larger than {limit} bytes.")
                await proxy_error_response(scope, rid, error)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": shown_path(scope["path"]),
                    "status": status,
                },
            )
        finally:
            await self._run_after_response_work(scope, later)

    async def _run_after_response_work(self, scope: Scope, later: AfterResponse) -> None:
        invocation = invocation_id(scope)
        if self.extension is not None and invocation:
            for work in later.close():
                self.extension.submit(work)
            self.extension.handed_over(invocation)
            return
        for work in later.close():
            await run_here(work)


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
