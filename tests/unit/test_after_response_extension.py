"""lambda_extension's after-response extension at shutdown: the work still queued runs on the
runtime's SIGTERM before the process ends (its registration, INVOKE only, is tested under the
loopback Runtime API in tests/integration/test_lambda_extension.py)."""

from __future__ import annotations

import os
import signal
from types import FrameType

from llm_proxy.lambda_extension import AfterResponseExtension


def test_work_queued_at_sigterm_runs_before_the_signal_goes_on() -> None:
    ran: list[str] = []
    passed_on: list[int] = []

    def earlier_handler(signum: int, frame: FrameType | None) -> None:
        passed_on.append(signum)

    original = signal.signal(signal.SIGTERM, earlier_handler)
    try:
        extension = AfterResponseExtension("127.0.0.1:9")
        assert extension.finish_on_sigterm()
        extension.submit(lambda: ran.append("usage item"))
        extension.submit(lambda: ran.append("settlement"))
        os.kill(os.getpid(), signal.SIGTERM)
        assert ran == ["usage item", "settlement"]
        assert passed_on == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)
