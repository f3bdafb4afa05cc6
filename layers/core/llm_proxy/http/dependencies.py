"""What routes take from the request: the gateway, the authenticated caller (the master key
alone, on the routes that declare it), the request id, and the request's after-response
work; and the request as the pipeline takes it."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from llm_proxy.after_response import AfterResponse
from llm_proxy.errors import INVALID_VALUE, MASTER_KEY_REQUIRED, ProxyError
from llm_proxy.gateway import Caller, Gateway, Inbound

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
    gateway = gateway_of(request)
    who = await gateway.authenticate(request.headers)
    refuse_repeated_query(request)
    later = after_response(request)
    if who.key is not None and later is not None and gateway.virtual_keys.used(who.key_id):
        # The key's `last_active`, after the response: not a write per request.
        later.add(partial(gateway.virtual_keys.touch, who.key_id))
    return who


# Query parameters a route takes as a list (the Responses API's `include`).
LIST_QUERY_PARAMS = frozenset({"include", "include[]"})


def refuse_repeated_query(request: Request) -> None:
    """A query parameter given more than once, where the route takes one value: refused, not
    silently answered for the last (checked once the key is, as every request error is)."""
    counts = Counter(name for name, _ in request.query_params.multi_items())
    repeated = sorted({name for name, count in counts.items() if count > 1} - LIST_QUERY_PARAMS)
    if repeated:
        name = repeated[0][:100]
        raise INVALID_VALUE(f"Query parameter '{name}' is given more than once.", param=name)


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
Authenticated = Annotated[Caller, Depends(caller)]


async def master_key_only(who: Authenticated) -> Caller:
    """Declared on the routers that only the master key may use (`/key/*`, `/team/*`, `/user/*`,
    `/spend/*`)."""
    if not who.is_master:
        raise MASTER_KEY_REQUIRED("Only the master key may use this route.")
    return who


MasterKey = Depends(master_key_only)


async def key_refusal(request: Request) -> ProxyError | None:
    """What the route's key check answers the request (None: the key may use the route, or the
    route takes no key). FastAPI reads a body before a route's dependencies; a body it cannot
    read is answered after this, so that the key is checked first, as for everything else."""
    needs = set(dependency_calls(getattr(request.scope.get("route"), "dependant", None)))
    if caller not in needs:
        return None
    try:
        who = await gateway_of(request).authenticate(request.headers)
        if master_key_only in needs:
            await master_key_only(who)
    except ProxyError as refusal:
        return refusal
    return None


def dependency_calls(dependant: Dependant | None) -> Iterator[Any]:
    """Every dependency a route's dependant calls, its own dependencies' included."""
    for dependency in getattr(dependant, "dependencies", None) or ():
        yield dependency.call
        yield from dependency_calls(dependency)


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or uuid.uuid4().hex


def after_response(request: Request) -> AfterResponse | None:
    """The request's after-response work (the RequestContext middleware runs it)."""
    later: AfterResponse | None = getattr(request.state, "after_response", None)
    return later


def inbound(request: Request, who: Caller, body: BaseModel, model: str | None = None) -> Inbound:
    """The request as the pipeline takes it: the body with the fields the client set, and the
    model where the path names it (Azure OpenAI's deployment)."""
    fields = body.model_dump(exclude_unset=True)
    if model is not None:
        fields["model"] = model
    return Inbound(
        endpoint=request.url.path,
        caller=who,
        body=fields,
        headers=request.headers,
        request_id=request_id(request),
        after_response=after_response(request),
    )
