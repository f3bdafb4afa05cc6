"""Requests to a served gateway as the tests send them: a JSON POST with a key (the master
key unless another is given), and a virtual key made with the master key."""

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


def new_key(url: str, **fields: Any) -> str:
    """A new virtual key's raw value (`/key/generate` with these fields)."""
    response = post(url, "/key/generate", fields)
    assert response.status_code == 200, response.text
    return str(response.json()["key"])
