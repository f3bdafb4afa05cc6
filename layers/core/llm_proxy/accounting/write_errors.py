"""What a DynamoDB write's failure means for a usage record: already stored, never writable
as it is (invalid), or worth another try."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

# Errors worth another try: throttling, DynamoDB's own failures, a lost connection.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
    }
)
RETRYABLE_REASONS = frozenset(
    {
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "TransactionConflict",
        "RequestLimitExceeded",
    }
)


def error_name(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


def reasons(exc: Exception) -> list[str]:
    if not isinstance(exc, ClientError):
        return []
    return [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]


def is_duplicate(exc: Exception) -> bool:
    # The Put is the first action: its condition failing means the item is already stored.
    found = reasons(exc)
    return bool(found) and found[0] == "ConditionalCheckFailed"


def invalid_reason(exc: Exception) -> str | None:
    """DynamoDB's (or botocore's) word on why the item can never be written as it is; None for
    an error a retry or a later replay may get past."""
    if isinstance(exc, ParamValidationError):
        return f"ParamValidationError: {exc}"
    if not isinstance(exc, ClientError):
        return None
    if error_name(exc) == "ValidationException":
        return f"ValidationException: {exc.response.get('Error', {}).get('Message', '')}"
    for reason in exc.response.get("CancellationReasons", []):
        if reason.get("Code") == "ValidationError":
            return f"ValidationError: {reason.get('Message', '')}"
    return None


def retryable(exc: Exception) -> bool:
    if isinstance(exc, BotoCoreError):
        return True  # connection refused, timeouts
    if not isinstance(exc, ClientError):
        return False
    if any(reason in RETRYABLE_REASONS for reason in reasons(exc)):
        return True
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return error_name(exc) in RETRYABLE_CODES or status >= 500
