"""An internal Lambda extension: the work a request leaves for after its response (the usage
item, the counters' settlement, the cache write) runs once the response is on its way, while
Lambda keeps the environment thawed until it is done.

Lambda ends an invocation's invoke phase only when the runtime *and* every registered
extension have asked for their next event; the client has its answer by then. So a thread of
this process registers with the Extensions API during init, receives each INVOKE, waits until
the request has handed over its work (`handed_over`, called after the response is sent), does
the work, and only then asks for the next event.

AWS's Extensions API reference
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-extensions-api.html): an internal
extension is started and stopped by the runtime process, so it registers for INVOKE only (a
SHUTDOWN registration is refused), and only before the runtime's first next. At shutdown the
runtime process gets SIGTERM and a short while before SIGKILL: the SIGTERM handler finishes
what is queued then (`finish_on_sigterm`).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from types import FrameType
from typing import Any

from llm_proxy.logs import logger
from llm_proxy.settings import ApiSettings

NAME = "llm-proxy-after-response"
API_VERSION = "2020-01-01"
# How long a request may take to hand over its work when its INVOKE names no deadline.
DEFAULT_WAIT_S = 900.0
# What an internal extension may register for.
EVENTS = ["INVOKE"]

Work = Callable[[], object]


class AfterResponseExtension:
    def __init__(self, runtime_api: str) -> None:
        self.base = f"http://{runtime_api}/{API_VERSION}/extension"
        self._work: queue.Queue[Work] = queue.Queue()
        # Lambda request id -> set once that invocation has handed its work over.
        self._handed_over: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._id = ""

    @classmethod
    def start_in_lambda(cls, settings: ApiSettings) -> AfterResponseExtension | None:
        """Registered and running where the Lambda runtime API is, unless the settings switch
        it off (None then, or when registration fails: the work stays before the response)."""
        runtime_api = settings.lambda_runtime_api
        if not runtime_api or not settings.after_response_extension:
            return None
        extension = cls(runtime_api)
        try:
            extension.register()
        except Exception as exc:
            logger.warning("after-response extension not registered", extra={"error": str(exc)})
            return None
        threading.Thread(target=extension.run, name=NAME, daemon=True).start()
        extension.finish_on_sigterm()
        return extension

    def register(self) -> None:
        request = urllib.request.Request(  # noqa: S310 - the runtime API on the host
            f"{self.base}/register",
            data=json.dumps({"events": EVENTS}).encode(),
            headers={"Lambda-Extension-Name": NAME},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            self._id = response.headers["Lambda-Extension-Identifier"]

    def submit(self, work: Work) -> None:
        """Work for after the response of the request being served."""
        self._work.put(work)

    def handed_over(self, invocation_id: str) -> None:
        """The invocation has sent its response and submitted its work."""
        self._event(invocation_id).set()

    def _event(self, invocation_id: str) -> threading.Event:
        with self._lock:
            return self._handed_over.setdefault(invocation_id, threading.Event())

    def finish_on_sigterm(self) -> bool:
        """At shutdown, the work still queued runs before the process ends: a SIGTERM handler
        (where this is the main thread: Lambda's Python runtime polls for invocations on
        another, so the main thread takes signals) that drains the queue, then hands the
        signal on to the handler it replaced, or ends the process as SIGTERM would."""
        if threading.current_thread() is not threading.main_thread():
            return False
        replaced = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self.drain()
            if callable(replaced):
                replaced(signum, frame)
                return
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def run(self) -> None:
        while True:
            event = self._next_event()
            invocation = str(event.get("requestId", ""))
            deadline_ms = event.get("deadlineMs")
            wait_s = (deadline_ms / 1000 - time.time()) if deadline_ms else DEFAULT_WAIT_S
            if not self._event(invocation).wait(timeout=max(wait_s, 0.0)):
                logger.warning("invocation ended without handing over its work")
            with self._lock:
                self._handed_over.pop(invocation, None)
            self.drain()

    def _next_event(self) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - the runtime API on the host
            f"{self.base}/event/next", headers={"Lambda-Extension-Identifier": self._id}
        )
        # No timeout: Lambda answers when the next event comes, or freezes the environment.
        with urllib.request.urlopen(request) as response:  # noqa: S310
            event: dict[str, Any] = json.loads(response.read())
            return event

    def drain(self) -> None:
        """Run the work queued so far (and any queued meanwhile)."""
        while True:
            try:
                work = self._work.get_nowait()
            except queue.Empty:
                return
            try:
                work()
            except Exception:
                logger.exception("work after the response failed")
