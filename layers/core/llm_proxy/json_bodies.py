"""Checks on any JSON body a caller sends, whatever the endpoint: what parses as JSON here but
no provider or table can take."""

from __future__ import annotations

import json
import math
from typing import Any

from llm_proxy.errors import INVALID_NUMBER, INVALID_TEXT


def refuse_non_finite(body: Any, path: str = "") -> None:
    """NaN and Infinity parse as JSON numbers here but are not JSON: no provider takes them."""
    if isinstance(body, float) and not math.isfinite(body):
        raise INVALID_NUMBER(f"'{path or 'body'}' is not a finite number.", param=path or None)
    if isinstance(body, dict):
        for name, value in body.items():
            refuse_non_finite(value, f"{path}.{name}" if path else str(name))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            refuse_non_finite(value, f"{path}[{index}]")


def refuse_unencodable_text(body: dict[str, Any]) -> None:
    """Lone surrogates parse as JSON but cannot be sent on to any provider."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise INVALID_TEXT(
            "The request contains text that is not valid Unicode (a lone surrogate)."
        ) from None
