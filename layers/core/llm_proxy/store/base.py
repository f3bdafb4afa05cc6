"""The base of every table class: its name, whether it is configured, its boto3 access, and
the one rule for a table that is not configured."""

from __future__ import annotations

from typing import Any, ClassVar

from llm_proxy import aws
from llm_proxy.errors import DomainError, ErrorCode


class Table:
    """One DynamoDB table, named by a setting that may be unset (`enabled` is False).

    A table that is not configured is never called: reads find nothing and writes are skipped,
    except operations that cannot answer correctly without the table, which call `require()`
    and raise a DomainError with the class's `missing` code (a 503 to an HTTP client) and
    `missing_message`. Which is which is each operation's to say, in its docstring: a key
    that cannot be found is an unknown key (401), a stored response a 404, a cache lookup a
    miss; managing keys, admitting a key with limits, reading rollups for a report and
    replaying usage require their table.

    The boto3 accessors (`resource()`, `client()`) require the table too, so no table name
    never means an AWS call."""

    # The environment variable that names the table, and what `require()` raises without it;
    # `missing_message` may name the variable as `{variable}`.
    variable: ClassVar[str]
    missing: ClassVar[ErrorCode]
    missing_message: ClassVar[str]

    def __init__(self, table_name: str | None) -> None:
        self.table_name = table_name

    @property
    def enabled(self) -> bool:
        return bool(self.table_name)

    def require(self) -> str:
        """The table's name; a DomainError for an operation that cannot answer without it."""
        if not self.table_name:
            raise DomainError(self.missing, self.missing_message.format(variable=self.variable))
        return self.table_name

    def resource(self) -> Any:
        """The boto3 resource table (items in Python values, numbers as Decimal)."""
        return aws.resource_table(self.require())

    def client(self, max_attempts: int | None = None) -> Any:
        """The low-level DynamoDB client (items in attribute values, `values.attribute`);
        `max_attempts=1` for an operation that retries with its own backoff."""
        self.require()
        # Called as the SnapStart warm-up calls it: `aws.client` caches by its arguments.
        if max_attempts is None:
            return aws.client("dynamodb")
        return aws.client("dynamodb", max_attempts=max_attempts)
