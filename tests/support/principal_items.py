"""A team or user made through the served gateway's own routes (`/team/new`, `/user/new`, then
`/team/update` or `/user/update` to block it, `/team/delete` or `/user/delete` to delete it),
as a `Principal` the test can name and read counters of."""

from __future__ import annotations

from llm_proxy.access.principals import Principal

from tests.support.gateway_http import post

# What the routes set themselves, or only through update and delete.
NOT_NEW = frozenset({"created_at", "updated_at", "blocked", "deleted"})


def put_principal(url: str, principal: Principal) -> Principal:
    kind, name = principal.kind, principal.id
    fields = {
        field: value
        for field, value in principal.public().items()
        if field not in NOT_NEW and value not in (None, [], {})
    }
    if kind == "user":
        fields["auto_create_key"] = False
    answered = post(url, f"/{kind}/new", fields)
    assert answered.status_code == 200, answered.text
    if principal.blocked:
        blocked = post(url, f"/{kind}/update", {f"{kind}_id": name, "blocked": True})
        assert blocked.status_code == 200, blocked.text
    if principal.deleted:
        gone = post(url, f"/{kind}/delete", {f"{kind}_ids": [name]})
        assert gone.status_code == 200, gone.text
    return principal
