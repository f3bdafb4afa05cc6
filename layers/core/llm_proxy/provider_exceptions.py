"""What a provider's exception (litellm's, or its HTTP client's under it) tells the gateway:
the provider's own message, less what litellm adds of the gateway's side; its cause; and when
to retry. `errors.from_litellm` makes the client's error of it."""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_RETRY_AFTER_S = 5


# What litellm and the HTTP clients under it add of the gateway's side to a provider's text:
# object reprs (`<ssl.SSLContext object at 0x7f...>`), URLs, addresses with their ports, and
# litellm's advice to its own callers.
_REPRS = re.compile(
    r"<[^<>]*\bat 0x[0-9a-fA-F]+>|\b0x[0-9a-fA-F]{6,}\b|\s*Handle with `litellm\.\w+`\.?"
)
_URLS = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)\]]+")
_ADDRESSES = re.compile(
    r"\(\s*'[^']*',\s*\d{1,5}\s*\)"  # a socket address, ('10.0.0.1', 8080)
    r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"
    r"|\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\](?::\d{1,5})?"
    r"|\b(?:localhost|[\w-]+(?:\.[\w-]+)+):\d{1,5}\b"
)
_SPACES = re.compile(r"\s{2,}")


def client_text(text: str) -> str:
    """A provider's message with what litellm adds of the gateway's side taken out."""
    text = _ADDRESSES.sub("[address]", _URLS.sub("[url]", _REPRS.sub("", text)))
    return _SPACES.sub(" ", text).strip()


def rate_limit_headers(exc: Exception) -> dict[str, str]:
    """A deployment's own `x-ratelimit-*` figures, passed on to the client."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if not hasattr(headers, "items"):
        return {}
    return {
        str(name).lower(): str(value)
        for name, value in headers.items()
        if str(name).lower().startswith("x-ratelimit-")
    }


def provider_message(text: str) -> str:
    """The provider's own message where litellm wraps the provider's error body in its words
    ("litellm.BadRequestError: OpenAIException - {...}"), else litellm's first line (it
    appends multi-line debug dumps: deployment ids, cooldown lists)."""
    line = text.strip().split("\n", 1)[0].strip()
    unwrapped = _LITELLM_WORDS.sub("", line, count=1) or line
    try:
        body = json.loads(unwrapped)
    except ValueError:
        return unwrapped[:1000]
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:1000] if isinstance(message, str) and message else unwrapped[:1000]


# "litellm.NotFoundError: NotFoundError: OpenAIException - <the provider's body>", and the
# openai SDK's "Error code: 404 - <...>" inside it.
_LITELLM_WORDS = re.compile(
    r"^(?:litellm\.\w+: )?(?:\w+Error: )?(?:\w+Exception(?: \w+Error)? - )?"
    r"(?:Error code: \d+ - )?"
)


# Connection failures as the HTTP clients under litellm name them.
CONNECT_ERRORS = frozenset(
    {"ConnectError", "ConnectTimeout", "ConnectionRefusedError", "ClientConnectorError"}
)


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not other for other in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in chain(exc))


def caused_by_name(exc: BaseException, names: frozenset[str]) -> bool:
    return any(type(link).__name__ in names for link in chain(exc))


def retry_after(exc: Exception) -> int:
    # litellm keeps the provider's real headers apart; some providers' `response` is synthetic.
    sources: tuple[Any, ...] = (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    )
    for headers in sources:
        if not hasattr(headers, "items"):
            continue
        value = {str(name).lower(): v for name, v in headers.items()}.get("retry-after")
        if value:
            try:
                return max(1, int(float(value)))
            except ValueError:
                continue
    cooldown = getattr(exc, "cooldown_time", None)
    if isinstance(cooldown, int | float) and cooldown > 0:
        return max(1, int(cooldown + 0.999))
    return DEFAULT_RETRY_AFTER_S
