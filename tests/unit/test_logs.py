from __future__ import annotations

import io
import logging
import re

from llm_proxy.logs import REDACTED, SERVICE, logger, redactor


def test_registered_secrets_never_reach_a_log_line() -> None:
    secret = "sk-live-abcdef0123456789"
    redactor.register([secret, "short"])
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    names = (SERVICE, "LiteLLM", "LiteLLM Router")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        logger.info(f"calling provider with {secret}")
        try:
            raise ValueError(f"provider said: bad key {secret}")
        except ValueError:
            logger.exception("failed")
        logging.getLogger("LiteLLM Router").warning("deployment %s failed", f"key={secret}")
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
    text = sink.getvalue()
    assert secret not in text
    assert f"calling provider with {REDACTED}" in text
    # litellm may mask `key=...` itself before our filter runs; either way no secret.
    assert re.search(r"deployment key=\[?REDACTED\]? failed", text)
    assert "ValueError: provider said: bad key [REDACTED]" in text
    assert redactor.redact("short") == "short"
