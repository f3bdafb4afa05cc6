"""Run an ASGI app under uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            # A stream whose client is gone must not hold the shutdown open.
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def request_stop(self) -> None:
        self._server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)


def stop_all(servers: list[BackgroundServer]) -> None:
    """Stop many servers at once: each winds down while the others do."""
    for server in servers:
        server.request_stop()
    for server in servers:
        server.stop()


class ServedDouble(Protocol):
    base_url: str

    def app(self) -> Any: ...


@contextmanager
def serving[Double: ServedDouble](double: Double) -> Iterator[Double]:
    """Serve an upstream double on a free loopback port for the duration of the block."""
    server = BackgroundServer(double.app()).start()
    double.base_url = server.url
    try:
        yield double
    finally:
        server.stop()
