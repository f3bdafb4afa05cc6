"""A loopback Lambda Runtime API and Extensions API, enough to run a function under the
runtime's own client (`awslambdaric`): it hands invocations to the runtime and INVOKE events
to extensions, and notes when each side is done with an invocation, which is when Lambda would
freeze the environment.

It keeps the rules AWS's Extensions API reference gives for internal extensions, the only kind
a function's own process can register
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-extensions-api.html):
- they are started and stopped by the runtime process, so they may register for INVOKE only:
  a registration that names SHUTDOWN is refused (403);
- they register during init: once the runtime has asked for its first invocation, a
  registration is refused (403);
- at shutdown they get no event: the runtime process gets SIGTERM, then SIGKILL after a short
  grace period (`shutdown`; AWS gives the runtime 300 ms with internal extensions, 500 ms with
  external ones: the longer is used here, a failure at it is a failure in Lambda too).

With SnapStart (`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`) the runtime client runs the
before-snapshot hooks after init, asks `restore/next` (Lambda snapshots the environment there,
and answers once a restored copy resumes), runs the after-restore hooks, then asks for its
first invocation: `restore/next` is answered at once, in the same process.

`watch(pid)` reads the runtime process's CPU clock (all its threads, ns resolution) when an
invocation is handed over (the thaw), when its response arrives and when it is frozen.
"""

from __future__ import annotations

import ctypes
import json
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RUNTIME = "/2018-06-01/runtime"
EXTENSION = "/2020-01-01/extension"
# What an internal extension may register for.
INTERNAL_EVENTS = frozenset({"INVOKE"})
SHUTDOWN_GRACE_S = 0.5


@dataclass
class Invocation:
    request_id: str
    event: dict[str, Any]
    deadline_ms: int
    handed_at: float = 0.0
    response: bytes | None = None
    responded_at: float = 0.0
    # When each side asked for its next event after this invocation: the freeze is the later.
    runtime_done_at: float = 0.0
    extension_done_at: float = 0.0
    # The runtime process's CPU time (seconds) at the thaw, the response and the freeze.
    thaw_cpu: float = 0.0
    response_cpu: float = 0.0
    freeze_cpu: float = 0.0
    answered: threading.Event = field(default_factory=threading.Event)
    frozen: threading.Event = field(default_factory=threading.Event)

    @property
    def frozen_at(self) -> float:
        return max(self.runtime_done_at, self.extension_done_at)


class RuntimeApi:
    def __init__(self) -> None:
        self.invocations: queue.Queue[Invocation] = queue.Queue()
        self.extension_events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.current: Invocation | None = None
        self.handed: list[Invocation] = []
        self.extension_current: Invocation | None = None
        self.extensions: list[str] = []
        self.refused: list[str] = []
        self.errors: list[bytes] = []
        self.init_done = False
        # Set when the runtime asks restore/next (SnapStart): the snapshot would be taken then.
        self.restore_requested = threading.Event()
        self.restore_cpu = 0.0
        self.cpu: Callable[[], float] = lambda: 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_port}"

    def start(self) -> RuntimeApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def watch(self, pid: int) -> None:
        """Read the CPU clock of process `pid` at each invocation's thaw, response and freeze."""
        self.cpu = process_cpu_clock(pid)

    def invoke(self, event: dict[str, Any], timeout_s: float = 60) -> Invocation:
        invocation = Invocation(
            request_id=str(uuid.uuid4()),
            event=event,
            deadline_ms=int((time.time() + timeout_s) * 1000),
        )
        self.invocations.put(invocation)
        return invocation

    def shutdown(self, process: subprocess.Popen[str]) -> bool:
        """The Shutdown phase: SIGTERM to the runtime process, SIGKILL after the grace period;
        whether the process ended within it."""
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return False
        return True

    def maybe_frozen(self, invocation: Invocation) -> None:
        """Frozen once the runtime, and every extension there is, asked for the next event."""
        done = invocation.runtime_done_at and (invocation.extension_done_at or not self.extensions)
        if done and not invocation.frozen.is_set():
            invocation.freeze_cpu = self.cpu()
            invocation.frozen.set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(
                self, status: int, body: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == f"{RUNTIME}/restore/next":
                    api.init_done = True
                    api.restore_cpu = api.cpu()
                    api.restore_requested.set()
                    self._answer(200, b"")
                elif self.path == f"{RUNTIME}/invocation/next":
                    api.init_done = True
                    if api.current is not None:
                        api.current.runtime_done_at = time.monotonic()
                        api.maybe_frozen(api.current)
                    invocation = api.invocations.get()
                    invocation.handed_at = time.monotonic()
                    invocation.thaw_cpu = api.cpu()
                    api.handed.append(invocation)
                    api.current = invocation
                    if api.extensions:
                        # Extensions register during init, before the runtime's first next:
                        # each gets the INVOKE as the runtime gets the invocation.
                        api.extension_events.put(
                            {
                                "eventType": "INVOKE",
                                "requestId": invocation.request_id,
                                "deadlineMs": invocation.deadline_ms,
                                "invocation": invocation,
                            }
                        )
                    self._answer(
                        200,
                        invocation.event,
                        {
                            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                            "Lambda-Runtime-Invoked-Function-Arn": (
                                "arn:aws:lambda:us-east-1:123456789012:function:api"
                            ),
                            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                        },
                    )
                elif self.path == f"{EXTENSION}/event/next":
                    if api.extension_current is not None:
                        api.extension_current.extension_done_at = time.monotonic()
                        api.maybe_frozen(api.extension_current)
                    event = dict(api.extension_events.get())
                    api.extension_current = event.pop("invocation", None)
                    self._answer(200, event)
                else:
                    self._answer(404, {"message": "no such route"})

            def do_POST(self) -> None:
                body = self._body()
                if self.path == f"{EXTENSION}/register":
                    name = self.headers.get("Lambda-Extension-Name", "")
                    events = set(json.loads(body or b"{}").get("events") or [])
                    problem = _refusal(events, api.init_done)
                    if problem:
                        api.refused.append(name)
                        self._answer(403, {"errorMessage": problem, "errorType": "Forbidden"})
                        return
                    api.extensions.append(name)
                    self._answer(
                        200, {"functionName": "api"}, {"Lambda-Extension-Identifier": name}
                    )
                elif self.path.endswith("/response") and api.current is not None:
                    api.current.response_cpu = api.cpu()
                    api.current.response = body
                    api.current.responded_at = time.monotonic()
                    api.current.answered.set()
                    self._answer(202, {})
                elif self.path.endswith("/error"):  # an invocation's, init's or restore's
                    api.errors.append(body)
                    if api.current is not None:
                        api.current.answered.set()
                    self._answer(202, {})
                else:
                    self._answer(404, {"message": "no such route"})

        return Handler


def _refusal(events: set[str], init_done: bool) -> str:
    """Why an internal extension's registration is refused ("" when it is not)."""
    if init_done:
        return "Extensions register during init, before the runtime's first next."
    if not events or not events <= INTERNAL_EVENTS:
        return f"An internal extension may register for INVOKE only, not {sorted(events)}."
    return ""


def process_cpu_clock(pid: int) -> Callable[[], float]:
    """The CPU time of process `pid`, every thread's, living or ended (Linux's per-process CPU
    clock, which clock_getcpuclockid names)."""
    libc = ctypes.CDLL(None, use_errno=True)
    clock = ctypes.c_int()
    if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError(ctypes.get_errno(), f"no CPU clock for process {pid}")
    clock_id = clock.value
    return lambda: time.clock_gettime(clock_id)
