"""What routes take from the request: the gateway, the authenticated caller, the request id
and the hook for work after the response."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from llm_proxy.access.auth import Caller
from llm_proxy.gateway import Gateway
from llm_proxy.pipeline.meter import AfterResponse

# Declared for the OpenAPI schema; the gateway reads and checks the headers itself.
BEARER = HTTPBearer(auto_error=False, description="The master key (or a virtual key).")
API_KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False, description="The same key.")


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def caller(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    _api_key: Annotated[str | None, Security(API_KEY_HEADER)],
) -> Caller:
    # Async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    return await gateway_of(request).authenticate(request.headers)


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
Authenticated = Annotated[Caller, Depends(caller)]


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or uuid.uuid4().hex


def after_response(request: Request) -> AfterResponse | None:
    """Takes work to run once the response is sent (the RequestContext middleware runs it)."""
    later: AfterResponse | None = getattr(request.state, "after_response", None)
    return later
