"""The errors a client can get: `ProxyError` (a status and OpenAI's shape, or Anthropic's
envelope on the Messages API), the catalogue of every error code the gateway answers with (one
`ErrorCode` each, which makes the error: `MODEL_NOT_FOUND(message, param="model")`), and the
mapping from litellm's exceptions to those codes.

The README's error table is tested against the catalogue; no module outside this one makes a
ProxyError with a code of its own (`tests/unit/test_errors.py`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llm_proxy.logs import logger, redactor
from llm_proxy.provider_exceptions import (
    CONNECT_ERRORS,
    caused_by,
    caused_by_name,
    client_text,
    provider_message,
    rate_limit_headers,
    retry_after,
)


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


# The error types, as OpenAI's `error.type` names them (and the gateway's own beside them).
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
RATE_LIMIT = "rate_limit_error"
UPSTREAM = "upstream_error"
TIMEOUT = "timeout_error"
UNAVAILABLE = "service_unavailable"


@dataclass(frozen=True)
class ErrorCode:
    """One entry of the catalogue: a code, the status it is answered with, its type."""

    code: str
    status: int
    type: str

    def __call__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> ProxyError:
        return ProxyError(
            self.status, message, self.type, param=param, code=self.code, headers=headers
        )


# 400: the request cannot be served as it is.
INVALID_VALUE = ErrorCode("invalid_value", 400, INVALID_REQUEST)
INVALID_JSON = ErrorCode("invalid_json", 400, INVALID_REQUEST)
MISSING_BODY = ErrorCode("missing_body", 400, INVALID_REQUEST)
UNSUPPORTED_PARAMETER = ErrorCode("unsupported_parameter", 400, INVALID_REQUEST)
INVALID_NUMBER = ErrorCode("invalid_number", 400, INVALID_REQUEST)
INVALID_TEXT = ErrorCode("invalid_text", 400, INVALID_REQUEST)
MISSING_MODEL = ErrorCode("missing_model", 400, INVALID_REQUEST)
INVALID_MODEL_NAME = ErrorCode("invalid_model_name", 400, INVALID_REQUEST)
INVALID_AGENT_NAME = ErrorCode("invalid_agent_name", 400, INVALID_REQUEST)
METADATA_TOO_LARGE = ErrorCode("metadata_too_large", 400, INVALID_REQUEST)
MAX_TOKENS_TOO_LARGE = ErrorCode("max_tokens_too_large", 400, INVALID_REQUEST)
REQUEST_EXCEEDS_LIMIT = ErrorCode("request_exceeds_limit", 400, INVALID_REQUEST)
RESPONSE_TOO_LARGE_TO_STORE = ErrorCode("response_too_large_to_store", 400, INVALID_REQUEST)
INVALID_CACHE_CONTROL = ErrorCode("invalid_cache_control", 400, INVALID_REQUEST)
INVALID_MESSAGES_REQUEST = ErrorCode("invalid_messages_request", 400, INVALID_REQUEST)
MODEL_NOT_EMBEDDING = ErrorCode("model_not_embedding", 400, INVALID_REQUEST)
INVALID_DURATION = ErrorCode("invalid_duration", 400, INVALID_REQUEST)
KEY_ALIAS_TAKEN = ErrorCode("key_alias_taken", 400, INVALID_REQUEST)
TEAM_EXISTS = ErrorCode("team_exists", 400, INVALID_REQUEST)
USER_EXISTS = ErrorCode("user_exists", 400, INVALID_REQUEST)
INVALID_PERIOD = ErrorCode("invalid_period", 400, INVALID_REQUEST)
INVALID_FORMAT = ErrorCode("invalid_format", 400, INVALID_REQUEST)
SERVER_TOOL_NOT_ENABLED = ErrorCode("server_tool_not_enabled", 400, INVALID_REQUEST)
# ...or the provider refused it (litellm's exceptions, below): its own status, its message.
CONTEXT_LENGTH_EXCEEDED = ErrorCode("context_length_exceeded", 400, INVALID_REQUEST)
CONTENT_POLICY_VIOLATION = ErrorCode("content_policy_violation", 400, INVALID_REQUEST)
BAD_REQUEST = ErrorCode("bad_request", 400, INVALID_REQUEST)
PROVIDER_MODEL_NOT_FOUND = ErrorCode("provider_model_not_found", 404, INVALID_REQUEST)
PROVIDER_REQUEST_TOO_LARGE = ErrorCode("provider_request_too_large", 413, INVALID_REQUEST)
UNPROCESSABLE_REQUEST = ErrorCode("unprocessable_request", 422, INVALID_REQUEST)
# 401, 403: who is calling, and what it may do.
INVALID_API_KEY = ErrorCode("invalid_api_key", 401, AUTHENTICATION)
MODEL_NOT_ALLOWED = ErrorCode("model_not_allowed", 403, PERMISSION)
MASTER_KEY_REQUIRED = ErrorCode("master_key_required", 403, PERMISSION)
# 404, 405, 413: what is not there, or too large.
MODEL_NOT_FOUND = ErrorCode("model_not_found", 404, INVALID_REQUEST)
RESPONSE_NOT_FOUND = ErrorCode("response_not_found", 404, INVALID_REQUEST)
KEY_NOT_FOUND = ErrorCode("key_not_found", 404, INVALID_REQUEST)
TEAM_NOT_FOUND = ErrorCode("team_not_found", 404, INVALID_REQUEST)
USER_NOT_FOUND = ErrorCode("user_not_found", 404, INVALID_REQUEST)
NOT_FOUND = ErrorCode("not_found", 404, INVALID_REQUEST)
METHOD_NOT_ALLOWED = ErrorCode("method_not_allowed", 405, INVALID_REQUEST)
REQUEST_TOO_LARGE = ErrorCode("request_too_large", 413, INVALID_REQUEST)
# 429: a limit, the gateway's or the provider's.
RATE_LIMIT_EXCEEDED = ErrorCode("rate_limit_exceeded", 429, RATE_LIMIT)
BUDGET_EXCEEDED = ErrorCode("budget_exceeded", 429, "budget_exceeded")
PROVIDER_RATE_LIMITED = ErrorCode("provider_rate_limited", 429, RATE_LIMIT)
ALL_DEPLOYMENTS_COOLING_DOWN = ErrorCode("all_deployments_cooling_down", 429, RATE_LIMIT)
# 500: the gateway's own bug.
INTERNAL_ERROR = ErrorCode("internal_error", 500, "internal_error")
# 502: the provider failed, or refused the gateway's side of the call.
PROVIDER_ERROR = ErrorCode("provider_error", 502, UPSTREAM)
PROVIDER_AUTHENTICATION_FAILED = ErrorCode("provider_authentication_failed", 502, UPSTREAM)
PROVIDER_PERMISSION_DENIED = ErrorCode("provider_permission_denied", 502, UPSTREAM)
PROVIDER_UNREACHABLE = ErrorCode("provider_unreachable", 502, UPSTREAM)
PROVIDER_UNAVAILABLE = ErrorCode("provider_unavailable", 502, UPSTREAM)
PROVIDER_BAD_RESPONSE = ErrorCode("provider_bad_response", 502, UPSTREAM)
# 503: a dependency or the gateway's configuration.
DEPENDENCY_UNAVAILABLE = ErrorCode("dependency_unavailable", 503, UNAVAILABLE)
PROVIDER_KEY_MISSING = ErrorCode("provider_key_missing", 503, UNAVAILABLE)
BAD_PROVIDER_KEYS_SECRET = ErrorCode("bad_provider_keys_secret", 503, UNAVAILABLE)
MASTER_KEY_MISSING = ErrorCode("master_key_missing", 503, UNAVAILABLE)
MASTER_KEY_INSECURE = ErrorCode("master_key_insecure", 503, UNAVAILABLE)
JWT_AUTH_NOT_CONFIGURED = ErrorCode("jwt_auth_not_configured", 503, UNAVAILABLE)
KEYS_TABLE_MISSING = ErrorCode("keys_table_missing", 503, UNAVAILABLE)
COUNTERS_TABLE_MISSING = ErrorCode("counters_table_missing", 503, UNAVAILABLE)
ROLLUPS_NOT_CONFIGURED = ErrorCode("rollups_not_configured", 503, UNAVAILABLE)
USAGE_TABLE_MISSING = ErrorCode("usage_table_missing", 503, UNAVAILABLE)
CACHE_TABLE_MISSING = ErrorCode("cache_table_missing", 503, UNAVAILABLE)
RESPONSES_TABLE_MISSING = ErrorCode("responses_table_missing", 503, UNAVAILABLE)
# 504: the provider did not answer in time.
PROVIDER_TIMEOUT = ErrorCode("provider_timeout", 504, TIMEOUT)
# Never sent: what a usage item records for a client that hung up (nginx's 499).
CLIENT_DISCONNECTED = ErrorCode("client_disconnected", 499, "client_closed")

CATALOGUE: dict[str, ErrorCode] = {
    entry.code: entry for entry in list(globals().values()) if isinstance(entry, ErrorCode)
}


def framework_error(status: int, message: str, headers: dict[str, str]) -> ProxyError:
    """An HTTP error the web framework raised that the catalogue has no entry for (none does on
    the gateway's routes today): its status, and the status as its code."""
    return ProxyError(status, message, INVALID_REQUEST, code=str(status), headers=headers)


class DomainError(ValueError):
    """An error of the gateway's own work, whoever asked for it (a report's period that cannot
    be read, a table that is not configured): the scheduled functions fail with it, and the
    HTTP layer answers it with its catalogue entry."""

    def __init__(self, kind: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.param = kind, message, param

    def as_proxy_error(self) -> ProxyError:
        return self.kind(self.message, param=self.param)


def late_failure(error: ProxyError) -> ProxyError:
    """A failure once a stream has started: the request was accepted, so whatever status
    litellm gives it, it is the provider's failure (502), or its rate limit."""
    if error.status < 500 and error.status != 429:
        return PROVIDER_ERROR(error.message)
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


def model_not_found(model: str, available: list[str]) -> ProxyError:
    listed = ", ".join(available) if available else "none"
    return MODEL_NOT_FOUND(
        f"Model '{model}' is not configured on this gateway. Available models: {listed}.",
        param="model",
    )


# litellm exception class name -> its code. A provider's refusal of the request itself (400,
# 404, 413, 422) is the client's to see, with its status; a refusal of the gateway's own
# credentials or permissions (401, 403) is the operator's, so it surfaces as 502, not as a
# reason for the client to drop its key.
_LITELLM_ERRORS: dict[str, ErrorCode] = {
    "ContextWindowExceededError": CONTEXT_LENGTH_EXCEEDED,
    "ContentPolicyViolationError": CONTENT_POLICY_VIOLATION,
    "UnsupportedParamsError": UNSUPPORTED_PARAMETER,
    "BadRequestError": BAD_REQUEST,
    "UnprocessableEntityError": UNPROCESSABLE_REQUEST,
    "AuthenticationError": PROVIDER_AUTHENTICATION_FAILED,
    "PermissionDeniedError": PROVIDER_PERMISSION_DENIED,
    "NotFoundError": PROVIDER_MODEL_NOT_FOUND,
    "RateLimitError": PROVIDER_RATE_LIMITED,
    "RouterRateLimitError": ALL_DEPLOYMENTS_COOLING_DOWN,
    "Timeout": PROVIDER_TIMEOUT,
    "APIConnectionError": PROVIDER_UNREACHABLE,
    "ServiceUnavailableError": PROVIDER_UNAVAILABLE,
    "InternalServerError": PROVIDER_ERROR,
    "BadGatewayError": PROVIDER_ERROR,
    "APIResponseValidationError": PROVIDER_BAD_RESPONSE,
    "JSONSchemaValidationError": PROVIDER_BAD_RESPONSE,
    "APIError": PROVIDER_ERROR,
}

# A provider's refusals by its status, where litellm's exception class does not tell them.
_PROVIDER_REFUSALS: dict[int, ErrorCode] = {
    400: BAD_REQUEST,
    404: PROVIDER_MODEL_NOT_FOUND,
    413: PROVIDER_REQUEST_TOO_LARGE,
    422: UNPROCESSABLE_REQUEST,
}

# The codes a request can only get once its model and parameters were validated: the key's
# limits, and whatever the provider call gave (its usage is reported under the model it asked
# for; `accounting.rollups.model_of`).
PAST_VALIDATION_CODES = frozenset(
    entry.code
    for entry in (
        RATE_LIMIT_EXCEEDED,
        BUDGET_EXCEEDED,
        CLIENT_DISCONNECTED,
        PROVIDER_TIMEOUT,
        PROVIDER_UNREACHABLE,
        PROVIDER_BAD_RESPONSE,
        *_LITELLM_ERRORS.values(),
        *_PROVIDER_REFUSALS.values(),
    )
)

# What the client is told of a failure on the gateway's side of the call (an address, a
# timeout, the gateway's own credentials or account, an answer it could not read): a fixed
# sentence per code, never litellm's or the HTTP client's text, which names hosts, ports and
# objects. The operator reads that text in the log line `as_proxy_error` writes.
_FIXED_MESSAGES: dict[ErrorCode, str] = {
    PROVIDER_UNREACHABLE: "The provider for model '{model}' could not be reached.",
    PROVIDER_TIMEOUT: "The provider for model '{model}' did not answer in time.",
    PROVIDER_BAD_RESPONSE: "The provider for model '{model}' sent an answer that could not be "
    "read.",
    PROVIDER_AUTHENTICATION_FAILED: "The provider for model '{model}' refused the gateway's "
    "credentials; the operator must fix the deployment's key.",
    PROVIDER_PERMISSION_DENIED: "The provider for model '{model}' refused the gateway access "
    "to it; the operator must fix the deployment.",
    PROVIDER_ERROR: "The provider for model '{model}' failed to answer.",
    PROVIDER_UNAVAILABLE: "The provider for model '{model}' is unavailable or overloaded.",
    # The provider's words name the operator's account (its organisation, its tier).
    PROVIDER_RATE_LIMITED: "Rate limit exceeded at the provider for model '{model}'; retry "
    "after {retry_after} seconds.",
    ALL_DEPLOYMENTS_COOLING_DOWN: "Every deployment of model '{model}' is cooling down after "
    "failures; retry after {retry_after} seconds.",
}


def from_litellm(exc: Exception, model: str, redact: Any) -> ProxyError:
    """Translate a litellm/provider exception. A provider's refusal of the caller's request (a
    4xx but for its rate limit) keeps the provider's message (`redact` scrubs secrets out of
    it, `client_text` the gateway's side); any other failure is told in a fixed sentence."""
    kind = PROVIDER_ERROR
    for cls in type(exc).__mro__:
        if cls.__name__ in _LITELLM_ERRORS:
            kind = _LITELLM_ERRORS[cls.__name__]
            break
    if kind in (PROVIDER_ERROR, BAD_REQUEST):
        # litellm raises a 422 as a BadRequestError, a 413 as its generic APIError.
        kind = _PROVIDER_REFUSALS.get(getattr(exc, "status_code", 0), kind)
    if caused_by(exc, json.JSONDecodeError):
        # litellm wraps an unparsable provider body as a connection error.
        kind = PROVIDER_BAD_RESPONSE
    elif kind.status == 502 and caused_by_name(exc, CONNECT_ERRORS):
        # ...and a refused connection as an internal server error.
        kind = PROVIDER_UNREACHABLE
    headers: dict[str, str] = {}
    if kind.status == 429:
        headers["Retry-After"] = str(retry_after(exc))
        headers.update(rate_limit_headers(exc))
    fixed = _FIXED_MESSAGES.get(kind)
    if fixed is not None:
        text = fixed.format(model=model, retry_after=headers.get("Retry-After"))
        return kind(text, headers=headers)
    detail = client_text(redact(provider_message(str(exc))))
    message = f"Model '{model}': {detail}" if detail else f"Model '{model}': provider call failed."
    return kind(message, headers=headers)


# Errors raised by these packages come from a provider call; anything else is our own bug.
PROVIDER_ERROR_PACKAGES = frozenset({"litellm", "openai", "httpx", "httpcore", "aiohttp"})


def as_proxy_error(exc: Exception, model: str) -> ProxyError:
    """A provider failure as the client sees it (logged without secrets); our own bugs re-raise."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, DomainError):
        return exc.as_proxy_error()
    if isinstance(exc, TimeoutError):
        error = PROVIDER_TIMEOUT(_FIXED_MESSAGES[PROVIDER_TIMEOUT].format(model=model))
    elif type(exc).__module__.split(".", 1)[0] in PROVIDER_ERROR_PACKAGES:
        error = from_litellm(exc, model, redactor.redact)
    else:
        raise exc
    # The whole text, for the operator: the client's message leaves the gateway's side out.
    # Logging extras are not scrubbed by the logger's filter, so it is redacted here.
    logger.warning(
        "provider call failed",
        extra={
            "model": model,
            "status": error.status,
            "code": error.code,
            "error": type(exc).__name__,
            "detail": redactor.redact(str(exc))[:LOGGED_DETAIL_CHARS],
        },
    )
    return error


# litellm appends debug dumps (deployments, cooldowns) to its messages: enough to read, bounded.
LOGGED_DETAIL_CHARS = 4000
