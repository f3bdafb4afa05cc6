"""Requests to a served gateway as the tests send them: a JSON POST with a key (the master
key unless another is given), and a virtual key, team or user made with the master key."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.stack import MASTER_KEY


def post(url: str, path: str, body: Any, key: str = MASTER_KEY, **headers: str) -> httpx.Response:
    """`body` as JSON (text or bytes as they are), with the key as a bearer token."""
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(
        f"{url}{path}",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
        timeout=30,
    )


def admin(url: str, method: str, path: str, key: str = MASTER_KEY, **kwargs: Any) -> httpx.Response:
    """Any request with the key (the master key unless another is given) as a bearer token;
    `kwargs` as httpx takes them (`json`, `params`)."""
    return httpx.request(
        method, f"{url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs
    )


def get(url: str, path: str, key: str = MASTER_KEY, **params: str) -> httpx.Response:
    return httpx.get(
        f"{url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def managed(response: httpx.Response) -> dict[str, Any]:
    """A management route's answer, which must be a 200."""
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def generated(url: str, **fields: Any) -> dict[str, Any]:
    """`/key/generate`'s answer for these fields: the raw key (`key`), its token and fields."""
    return managed(post(url, "/key/generate", fields))


def new_key(url: str, **fields: Any) -> str:
    """A new virtual key's raw value (`/key/generate` with these fields)."""
    return str(generated(url, **fields)["key"])


def new_team(url: str, team_id: str, **fields: Any) -> str:
    """A team made with `/team/new`; deleted at once with `deleted=True`."""
    return _new_principal(url, "team", team_id, fields)


def new_user(url: str, user_id: str, **fields: Any) -> str:
    """A user made with `/user/new` (no key of its own); deleted at once with `deleted=True`."""
    return _new_principal(url, "user", user_id, {"auto_create_key": False, **fields})


def _new_principal(url: str, kind: str, name: str, fields: dict[str, Any]) -> str:
    deleted = fields.pop("deleted", False)
    response = post(url, f"/{kind}/new", {f"{kind}_id": name, **fields})
    assert response.status_code == 200, response.text
    if deleted:
        gone = post(url, f"/{kind}/delete", {f"{kind}_ids": [name]})
        assert gone.status_code == 200, gone.text
    return name
