"""OpenAI-shaped errors and the mapping from litellm's exceptions to gateway statuses."""

from __future__ import annotations

import json
import re
from typing import Any

from llm_proxy.logs import logger, redactor


class ProxyError(Exception):
    """An error the client sees as `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}
        # The deployment that failed, when known (read by metering, as on litellm's errors).
        self.failed_deployment_id: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code if self.code is not None else str(self.status),
            }
        }


def late_failure(error: ProxyError) -> ProxyError:
    """A failure once a stream has started: the request was accepted, so whatever status
    litellm gives it, it is the provider's failure (502), or its rate limit."""
    if error.status < 500 and error.status != 429:
        return ProxyError(502, error.message, "upstream_error", code="provider_error")
    return error


# Anthropic's error `type` for each status.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_body(error: ProxyError) -> dict[str, Any]:
    return error.body()


def anthropic_body(error: ProxyError) -> dict[str, Any]:
    """Anthropic's error envelope; the gateway's `code` and `param` ride along."""
    return {
        "type": "error",
        "error": {
            "type": ANTHROPIC_ERROR_TYPES.get(error.status, "api_error"),
            "message": error.message,
            "code": error.code if error.code is not None else str(error.status),
            "param": error.param,
        },
    }


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", param=param, code=code)


def authentication_failed(message: str) -> ProxyError:
    return ProxyError(401, message, "authentication_error", code="invalid_api_key")


def dependency_unavailable(message: str) -> ProxyError:
    return ProxyError(503, message, "service_unavailable", code="dependency_unavailable")


def model_not_found(model: str, available: list[str]) -> ProxyError:
    listed = ", ".join(available) if available else "none"
    return ProxyError(
        404,
        f"Model '{model}' is not configured on this gateway. Available models: {listed}.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


# litellm exception class name -> (status, type, code). Provider-side auth and "not found" are
# the gateway's configuration problem, not the client's, so they surface as 502.
_LITELLM_ERRORS: dict[str, tuple[int, str, str]] = {
    "ContextWindowExceededError": (400, "invalid_request_error", "context_length_exceeded"),
    "ContentPolicyViolationError": (400, "invalid_request_error", "content_policy_violation"),
    "UnsupportedParamsError": (400, "invalid_request_error", "unsupported_parameter"),
    "BadRequestError": (400, "invalid_request_error", "bad_request"),
    "UnprocessableEntityError": (400, "invalid_request_error", "bad_request"),
    "AuthenticationError": (502, "upstream_error", "provider_authentication_failed"),
    "PermissionDeniedError": (502, "upstream_error", "provider_permission_denied"),
    "NotFoundError": (502, "upstream_error", "provider_model_not_found"),
    "RateLimitError": (429, "rate_limit_error", "provider_rate_limited"),
    "RouterRateLimitError": (429, "rate_limit_error", "all_deployments_cooling_down"),
    "Timeout": (504, "timeout_error", "provider_timeout"),
    "APIConnectionError": (502, "upstream_error", "provider_unreachable"),
    "ServiceUnavailableError": (502, "upstream_error", "provider_unavailable"),
    "InternalServerError": (502, "upstream_error", "provider_error"),
    "BadGatewayError": (502, "upstream_error", "provider_error"),
    "APIResponseValidationError": (502, "upstream_error", "provider_bad_response"),
    "JSONSchemaValidationError": (502, "upstream_error", "provider_bad_response"),
    "APIError": (502, "upstream_error", "provider_error"),
}

DEFAULT_RETRY_AFTER_S = 5


def from_litellm(exc: Exception, model: str, redact: Any) -> ProxyError:
    """Translate a litellm/provider exception; `redact` scrubs secrets out of the message."""
    status, error_type, code = 502, "upstream_error", "provider_error"
    for cls in type(exc).__mro__:
        if cls.__name__ in _LITELLM_ERRORS:
            status, error_type, code = _LITELLM_ERRORS[cls.__name__]
            break
    if _caused_by(exc, json.JSONDecodeError):
        # litellm wraps an unparsable provider body as a connection error.
        status, error_type, code = 502, "upstream_error", "provider_bad_response"
    elif status == 502 and _caused_by_name(exc, CONNECT_ERRORS):
        # ...and a refused connection as an internal server error.
        code = "provider_unreachable"
    detail = redact(provider_message(str(exc)))
    headers: dict[str, str] = {}
    if status == 429:
        headers["Retry-After"] = str(_retry_after(exc))
        headers.update(_rate_limit_headers(exc))
    message = f"Model '{model}': {detail}" if detail else f"Model '{model}': provider call failed."
    return ProxyError(status, message, error_type, code=code, headers=headers)


def _rate_limit_headers(exc: Exception) -> dict[str, str]:
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
    unwrapped = _LITELLM_WORDS.sub("", line, count=1)
    try:
        body = json.loads(unwrapped)
    except ValueError:
        return line[:1000]
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:1000] if isinstance(message, str) and message else line[:1000]


_LITELLM_WORDS = re.compile(r"^(?:litellm\.\w+: )?(?:\w+Exception - )?")


# Connection failures as the HTTP clients under litellm name them.
CONNECT_ERRORS = frozenset(
    {"ConnectError", "ConnectTimeout", "ConnectionRefusedError", "ClientConnectorError"}
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not other for other in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(exc))


def _caused_by_name(exc: BaseException, names: frozenset[str]) -> bool:
    return any(type(link).__name__ in names for link in _chain(exc))


def _retry_after(exc: Exception) -> int:
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


# Errors raised by these packages come from a provider call; anything else is our own bug.
PROVIDER_ERROR_PACKAGES = frozenset({"litellm", "openai", "httpx", "httpcore", "aiohttp"})


def as_proxy_error(exc: Exception, model: str) -> ProxyError:
    """A provider failure as the client sees it (logged without secrets); our own bugs re-raise."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, TimeoutError):
        return ProxyError(
            504,
            f"Model '{model}': the provider did not answer in time.",
            "timeout_error",
            code="provider_timeout",
        )
    if type(exc).__module__.split(".", 1)[0] in PROVIDER_ERROR_PACKAGES:
        error = from_litellm(exc, model, redactor.redact)
        logger.warning(
            "provider call failed",
            extra={
                "model": model,
                "status": error.status,
                "error": type(exc).__name__,
                "detail": error.message,
            },
        )
        return error
    raise exc
