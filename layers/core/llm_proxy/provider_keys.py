"""Provider keys: one JSON object in Secrets Manager, read through Powertools Parameters."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)

from llm_proxy import aws
from llm_proxy.errors import ProxyError, dependency_unavailable
from llm_proxy.logs import logger, redactor


class ProviderKeys:
    """The secret's key/value pairs, cached per container for `ttl_s` seconds."""

    def __init__(self, secret_id: str | None, ttl_s: int, client: Any = None) -> None:
        self.secret_id = secret_id
        self.ttl_s = ttl_s
        self._client = client
        self._provider: SecretsProvider | None = None

    def reset(self) -> None:
        """Forget the cached value and client; the next read makes both again."""
        self._provider = None

    def get(self, force: bool = False) -> dict[str, str]:
        if not self.secret_id:
            return {}
        if self._provider is None:
            client = self._client or aws.client("secretsmanager")
            self._provider = SecretsProvider(boto3_client=client)
        try:
            value: Any = self._provider.get(
                self.secret_id, transform="json", max_age=self.ttl_s, force_fetch=force
            )
        except TransformParameterError:
            raise _not_a_json_object() from None
        except GetParameterError as exc:
            cause = _cause(exc)
            logger.error("provider-keys secret unreadable", extra={"cause": cause})
            raise dependency_unavailable(
                f"The provider-keys secret cannot be read from Secrets Manager ({cause}). "
                "Retry shortly; if it persists, check the secret id and the function's access."
            ) from None
        if not isinstance(value, dict):
            raise _not_a_json_object()
        keys = {str(k): str(v) for k, v in value.items() if v is not None}
        redactor.register(keys.values())
        return keys


def _not_a_json_object() -> ProxyError:
    return ProxyError(
        503,
        "The provider-keys secret is not a JSON object of NAME: value pairs.",
        "service_unavailable",
        code="bad_provider_keys_secret",
    )


def _cause(exc: BaseException) -> str:
    """The AWS error code (ResourceNotFoundException, AccessDeniedException...) or class name."""
    original = exc.__cause__ or exc.__context__ or exc
    code = getattr(original, "response", {}).get("Error", {}).get("Code")
    return str(code or type(original).__name__)
