"""The Mangum `handler` invoked the way Lambda invokes it, with every event in events/."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY, usage_item

# API Gateway events; the EventBridge ones (scheduled_*.json) are for the scheduled functions.
EVENTS = sorted(
    p
    for p in (REPO / "events").glob("*.json")
    if p.name != "env.json" and not p.name.startswith("scheduled_")
)
LOCAL_KEY = "sk-1234"


def load_event(path: Path) -> dict[str, Any]:
    """The events carry the local stack's key; the test stack has its own strong key."""
    text = path.read_text()
    if path.name != "wrong_key.json":
        text = text.replace(LOCAL_KEY, MASTER_KEY)
    event: dict[str, Any] = json.loads(text)
    return event


def request_id_of(event: dict[str, Any]) -> str:
    return str(event["requestContext"]["requestId"])


def test_every_event_file_is_exercised() -> None:
    names = {path.name for path in EVENTS}
    assert {
        "chat_completion.json",
        "chat_stream.json",
        "list_models.json",
        "health.json",
        "wrong_key.json",
        "http_api_v2_chat_completion.json",
    } <= names


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: p.stem)
def test_handler_answers_every_event(api: ModuleType, aws: dict[str, str], path: Path) -> None:
    event = load_event(path)
    response = api.handler(event, None)

    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    assert headers["x-request-id"] == request_id_of(event)
    body = response["body"]
    if path.stem == "wrong_key":
        assert response["statusCode"] == 401
        assert json.loads(body)["error"]["type"] == "authentication_error"
        return
    assert response["statusCode"] == 200, body
    if path.stem == "health":
        assert json.loads(body) == {"status": "ok"}
    elif path.stem == "list_models":
        assert "demo" in [m["id"] for m in json.loads(body)["data"]]
    elif path.stem == "chat_stream":
        assert headers["content-type"].startswith("text/event-stream")
        assert body.rstrip().endswith("data: [DONE]")
        assert usage_item(aws["UsageTable"], request_id_of(event))["stream"] is True
    else:
        completion = json.loads(body)
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"]["content"]
        item = usage_item(aws["UsageTable"], request_id_of(event))
        assert item["model_requested"] == "demo" and item["status"] == 200
