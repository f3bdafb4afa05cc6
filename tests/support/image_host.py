"""A loopback host serving images, which records every fetch: for the tests that check the
gateway never fetches a URL a client names. litellm's own guard refuses loopback hosts, so it
is lifted while the host serves, to see that no fetch is made at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import litellm
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from devstack.server import BackgroundServer


@contextmanager
def image_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """The host's base URL, and the names fetched from it."""
    fetched: list[str] = []
    images = FastAPI()

    @images.get("/{name}")
    async def image(name: str) -> Response:
        fetched.append(name)
        return Response(b"", media_type="image/png")

    monkeypatch.setattr(litellm, "user_url_validation", False)
    server = BackgroundServer(images).start()
    try:
        yield server.url, fetched
    finally:
        server.stop()
