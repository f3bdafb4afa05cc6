"""API Gateway's events as the app is given them.

API Gateway routes a request on the host it was called at (`requestContext.domainName`); the
app sees that host, not the client's `Host` header, which is the client's to choose and which
Mangum cannot even read where its port is not a number (it reads the part after a colon with
`int()`, failing the invocation before the app answers)."""

from __future__ import annotations

from typing import Any


def with_routed_host(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its Host header the domain API Gateway routed on (where the event
    names one); every other event as it came."""
    context = event.get("requestContext")
    domain = context.get("domainName") if isinstance(context, dict) else None
    if not isinstance(domain, str) or not domain:
        return event
    routed = dict(event)
    for field, value in (("headers", domain), ("multiValueHeaders", [domain])):
        headers = event.get(field)
        if isinstance(headers, dict):
            kept = {name: v for name, v in headers.items() if name.lower() != "host"}
            routed[field] = {**kept, "Host": value}
    return routed
