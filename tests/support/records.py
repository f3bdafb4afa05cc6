"""Records the tests make by hand: usage records and virtual keys, with defaults for what a
test does not care about."""

from __future__ import annotations

import uuid
from typing import Any

from llm_proxy.access.key_record import VirtualKey
from llm_proxy.accounting.usage import UsageRecord


def usage_record(**fields: Any) -> UsageRecord:
    """A usage record of a chat completion under a request id of its own, unless `fields`
    say otherwise."""
    if "request_id" not in fields:
        fields["request_id"] = uuid.uuid4().hex
    fields.setdefault("endpoint", "/v1/chat/completions")
    return UsageRecord(**fields)


def virtual_key(token: str | None = None, **fields: Any) -> VirtualKey:
    """A virtual key under `token` (a fresh one by default), named `sk-<token>` unless
    `fields` name it otherwise."""
    token = uuid.uuid4().hex if token is None else token
    return VirtualKey(**{"token": token, "key_name": f"sk-{token}", **fields})
