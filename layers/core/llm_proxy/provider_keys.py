"""Provider keys: one JSON object in Secrets Manager, read through Powertools Parameters."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)

from llm_proxy import aws
from llm_proxy.errors import (
    BAD_PROVIDER_KEYS_SECRET,
    DEPENDENCY_UNAVAILABLE,
    ProxyError,
)
from llm_proxy.logs import logger, redactor

DEFAULT_MAX_STALENESS_S = 86_400
# While the secret cannot be read, one read is tried at most this often (or every `ttl_s`
# when that is shorter): every request trying would add the failed call's timeouts to each.
STALE_RETRY_S = 30


class ProviderKeys:
    """The secret's key/value pairs, cached per container for `ttl_s` seconds.

    When Secrets Manager cannot be reached, the last value read keeps serving, with a warning
    and `stale` set, for up to `max_staleness_s` after that read; past it, requests get 503.
    Ages are wall-clock time, so a value restored from a SnapStart snapshot is as old as the
    read that made it."""

    def __init__(
        self,
        secret_id: str | None,
        ttl_s: int,
        client: Any = None,
        *,
        max_staleness_s: int = DEFAULT_MAX_STALENESS_S,
    ) -> None:
        self.secret_id = secret_id
        self.ttl_s = ttl_s
        self.max_staleness_s = max_staleness_s
        self._client = client
        self._provider: SecretsProvider | None = None
        self._last_good: dict[str, str] | None = None
        self._read_at = 0.0
        self._stale_since: float | None = None
        # When the cached value next needs a read: after the TTL, or the retry wait when stale.
        self._next_read = 0.0

    @property
    def stale(self) -> bool:
        """Whether the value served is the last good one, kept because a read failed."""
        return self._stale_since is not None

    @property
    def stale_since(self) -> float | None:
        """When (epoch seconds) the first failed read made the value stale; None when fresh."""
        return self._stale_since

    def reset(self) -> None:
        """Forget the client and the cache; the next read makes a client and reads the secret.
        The last good value stays, as the fallback for a read that fails."""
        self._provider = None
        self._next_read = 0.0

    def get(self, force: bool = False) -> dict[str, str]:
        if not self.secret_id:
            return {}
        now = time.time()
        cached = None if force else self._cached(now)
        if cached is not None:
            return cached
        try:
            value = self._read(self.secret_id)
        except TransformParameterError:
            raise _not_a_json_object() from None
        except GetParameterError as exc:
            return self._last_good_or_503(_cause(exc), now)
        if not isinstance(value, dict):
            raise _not_a_json_object()
        keys = {str(k): str(v) for k, v in value.items() if v is not None}
        redactor.register(keys.values())
        if self.stale:
            logger.info("provider-keys secret readable again")
        self._last_good, self._read_at, self._stale_since = keys, now, None
        self._next_read = now + self.ttl_s
        return keys

    def _cached(self, now: float) -> dict[str, str] | None:
        """The value to serve without a read: within the TTL, or between retries while stale
        (and not older than `max_staleness_s`)."""
        if self._last_good is None or now >= self._next_read:
            return None
        if self.stale and now - self._read_at > self.max_staleness_s:
            return None
        return self._last_good

    def _read(self, secret_id: str) -> Any:
        if self._provider is None:
            client = self._client or aws.client("secretsmanager")
            self._provider = SecretsProvider(boto3_client=client)
        return self._provider.get(secret_id, transform="json", force_fetch=True)

    def _last_good_or_503(self, cause: str, now: float) -> dict[str, str]:
        age = now - self._read_at
        if self._last_good is None or age > self.max_staleness_s:
            logger.error("provider-keys secret unreadable", extra={"cause": cause})
            raise DEPENDENCY_UNAVAILABLE(
                f"The provider-keys secret cannot be read from Secrets Manager ({cause}). "
                "Retry shortly; if it persists, check the secret id and the function's access."
            ) from None
        if self._stale_since is None:
            self._stale_since = now
        self._next_read = now + min(self.ttl_s, STALE_RETRY_S)
        logger.warning(
            "provider-keys secret unreadable; serving the last good value",
            extra={"cause": cause, "age_s": round(age), "max_staleness_s": self.max_staleness_s},
        )
        return self._last_good


def _not_a_json_object() -> ProxyError:
    return BAD_PROVIDER_KEYS_SECRET(
        "The provider-keys secret is not a JSON object of NAME: value pairs."
    )


def _cause(exc: BaseException) -> str:
    """The AWS error code (ResourceNotFoundException, AccessDeniedException...) or class name."""
    original = exc.__cause__ or exc.__context__ or exc
    code = getattr(original, "response", {}).get("Error", {}).get("Code")
    return str(code or type(original).__name__)
