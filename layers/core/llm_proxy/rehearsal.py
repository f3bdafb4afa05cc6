"""The snapshot's rehearsal: every path a request takes, run through the app's own routes
before Lambda snapshots the function, so that restored environments start warm.

The rehearsal gateway's deployment is an OpenAI-format double that this process serves on
loopback for the rehearsal's duration: chat completions (JSON and streamed), messages (bridged
to chat), embeddings and count_tokens go through litellm's provider code, the openai SDK's
client and parsers, the stream readers and the gateway's response writers as a real request
does. The Responses API runs on a canned-reply deployment. No provider and no AWS is called.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

from llm_proxy.config import ProxyConfig
from llm_proxy.gateway import Gateway
from llm_proxy.http.app import create_app
from llm_proxy.logs import logger
from llm_proxy.pipeline.model_router import retire
from llm_proxy.settings import ApiSettings

KEY = "sk-snapshot-rehearsal"
# A model of litellm's catalogue: its first request loads the provider-config map that every
# catalogued model uses (about 50 ms of imports); an unknown model name skips it.
CATALOG_MODEL = "openai/gpt-4o-mini"
QUESTION = [{"role": "user", "content": "warm"}]
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"model": "rehearsal", "messages": QUESTION}),
    ("/v1/chat/completions", {"model": "rehearsal", "messages": QUESTION, "stream": True}),
    ("/v1/messages", {"model": "rehearsal", "max_tokens": 8, "messages": QUESTION}),
    (
        "/v1/messages",
        {"model": "rehearsal", "max_tokens": 8, "messages": QUESTION, "stream": True},
    ),
    ("/v1/messages/count_tokens", {"model": "rehearsal", "messages": QUESTION}),
    ("/v1/embeddings", {"model": "rehearsal", "input": "warm"}),
    ("/v1/responses", {"model": "rehearsal-canned", "input": "warm", "store": False}),
    (
        "/v1/responses",
        {"model": "rehearsal-canned", "input": "warm", "store": False, "stream": True},
    ),
]


def config(api_base: str) -> dict[str, Any]:
    free = {"input_cost_per_token": 0, "output_cost_per_token": 0, "api_key": "not-used"}
    return {
        "model_list": [
            {
                "model_name": "rehearsal",
                "litellm_params": {"model": CATALOG_MODEL, "api_base": api_base, **free},
            },
            {
                "model_name": "rehearsal-canned",
                "litellm_params": {"model": CATALOG_MODEL, "mock_response": "warm", **free},
            },
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": KEY},
    }


async def rehearse(app: Any, stop_logging_worker: bool) -> None:
    """Every rehearsed path through a rehearsal gateway's app, then through `app`'s routing."""
    with loopback_upstream() as api_base:
        gateway = Gateway(
            ApiSettings.of(environment="local"), ProxyConfig.model_validate(config(api_base))
        )
        headers = {"Authorization": f"Bearer {KEY}"}
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://snapshot") as client:
            for path, body in REQUESTS:
                response = await client.post(path, json=body, headers=headers)
                if response.status_code != 200:
                    logger.warning("warm-up request failed", extra={"path": path})
        # Its HTTP clients hold connections to a server that is about to go.
        retire(gateway.model_router())
    # The app's own routes, unauthenticated (401 before any lookup): FastAPI prepares each
    # router's routes on the first request that reaches them, per app.
    own = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=own, base_url="http://snapshot") as client:
        await client.get("/health")
        for path in dict.fromkeys(path for path, _ in REQUESTS):
            await client.post(path, json={})
    await GLOBAL_LOGGING_WORKER.flush()
    if stop_logging_worker:
        # It is bound to the loop that last used it: stop it with a loop that is closing.
        await GLOBAL_LOGGING_WORKER.stop()


# --- the loopback double --------------------------------------------------------------------


@contextmanager
def loopback_upstream() -> Iterator[str]:
    """An OpenAI-format upstream on 127.0.0.1, in a thread, for the block; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="rehearsal-upstream", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if self.path.endswith("/embeddings"):
            data = [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}]
            self._json({"object": "list", "data": data, "model": body.get("model"), "usage": usage})
        elif body.get("stream"):
            self._stream(body.get("model"), usage)
        else:
            message = {"role": "assistant", "content": "warm"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._json(
                {**_completion(body.get("model"), "chat.completion", choice), "usage": usage}
            )

    def _json(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, model: Any, usage: dict[str, int]) -> None:
        kind = "chat.completion.chunk"
        chunks = [
            _completion(
                model, kind, {"index": 0, "delta": {"role": "assistant", "content": "warm"}}
            ),
            _completion(model, kind, {"index": 0, "delta": {}, "finish_reason": "stop"}),
            {**_completion(model, kind, None), "usage": usage},
        ]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the rehearsal's requests are not worth a log line each."""


def _completion(model: Any, kind: str, choice: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-rehearsal",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice] if choice is not None else [],
    }
