"""Structured logging (Powertools Logger) with secret redaction on every line.

Every secret value the gateway learns (provider keys, the master key) is registered with the
redactor; a logging filter scrubs them from messages and tracebacks of our own logger and
litellm's, so no key reaches CloudWatch even with detailed debug on.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterable

from aws_lambda_powertools import Logger

SERVICE = "llm-proxy"
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore")
REDACTED = "[REDACTED]"
# Shorter values are not key material and would shred ordinary text.
MIN_SECRET_LENGTH = 8


class Redactor:
    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        # Longest first, so a secret that contains another is removed whole; ordered once per
        # change rather than on every log line.
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def register(self, values: Iterable[str | None]) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH}
        if fresh - self._secrets:
            with self._lock:
                self._secrets = self._secrets | fresh
                self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


redactor = Redactor()


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{''.join(traceback.format_exception(*record.exc_info))}"
            record.exc_info = None
            record.exc_text = None
        record.msg = redactor.redact(message)
        record.args = None
        return True


logger = Logger(service=SERVICE)
_filter = RedactingFilter()
for _name in (SERVICE, *LITELLM_LOGGERS):
    logging.getLogger(_name).addFilter(_filter)


def enable_detailed_debug() -> None:
    """The seed's `--detailed_debug`: verbose litellm and request logging (still redacted)."""
    import litellm

    litellm._turn_on_debug()
    logger.setLevel("DEBUG")
    for name in LITELLM_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
