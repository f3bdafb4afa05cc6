"""Checks on any JSON body a caller sends, whatever the endpoint: what parses as JSON here but
no provider or table can take."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from llm_proxy.errors import INVALID_NUMBER, INVALID_TEXT


def refuse_non_finite(body: Any, path: str = "") -> None:
    """NaN and Infinity parse as JSON numbers here but are not JSON: no provider takes them.
    Nor a subnormal number (below the smallest normal float, not 0): it has lost precision
    already, and a provider's or a table's conversion may refuse it."""
    for name, value in numbers(body, path):
        refuse_unusable(name, value)


def refuse_unusable(name: str, value: float | int) -> None:
    if not isinstance(value, float):
        return
    if not math.isfinite(value):
        raise INVALID_NUMBER(f"'{name}' is not a finite number.", param=name)
    if value != 0 and abs(value) < sys.float_info.min:
        raise INVALID_NUMBER(
            f"'{name}' is too close to 0 to be a usable number; send 0 or a normal number.",
            param=name,
        )


# The numbers DynamoDB stores: 0, or magnitudes from 1E-130 to below 1E+126, with up to 38
# significant digits.
STORABLE_MIN, STORABLE_BELOW = Decimal("1E-130"), Decimal("1E+126")
STORABLE_DIGITS = 38


def refuse_unstorable(body: Any, path: str = "") -> None:
    """Numbers kept in a table as sent (a key's budget, its metadata) must be numbers DynamoDB
    stores, or the write fails after the request was accepted."""
    for name, value in numbers(body, path):
        refuse_unusable(name, value)
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        magnitude = abs(number)
        if number != 0 and not STORABLE_MIN <= magnitude < STORABLE_BELOW:
            raise INVALID_NUMBER(
                f"'{name}' is out of range: a number is 0 or between 1e-130 and 1e126 in size.",
                param=name,
            )
        if len(number.as_tuple().digits) > STORABLE_DIGITS:
            raise INVALID_NUMBER(f"'{name}' has more than {STORABLE_DIGITS} digits.", param=name)


def numbers(body: Any, path: str = "") -> Iterator[tuple[str, float | int]]:
    """Every number in a parsed JSON body (booleans are not), with its path (`a.b[0]`)."""
    if isinstance(body, float | int) and not isinstance(body, bool):
        yield path or "body", body
    elif isinstance(body, dict):
        for name, value in body.items():
            yield from numbers(value, f"{path}.{name}" if path else str(name))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            yield from numbers(value, f"{path}[{index}]")


def refuse_unencodable_text(body: dict[str, Any]) -> None:
    """Lone surrogates parse as JSON but cannot be sent on to any provider."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise INVALID_TEXT(
            "The request contains text that is not valid Unicode (a lone surrogate)."
        ) from None
