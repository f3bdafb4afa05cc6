"""Provider keys: one JSON object in Secrets Manager, read through Powertools Parameters."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)

from . import aws
from .errors import ProxyError, dependency_unavailable
from .logs import logger, redactor


class ProviderKeys:
    """The secret's key/value pairs, cached per container for `ttl_s` seconds."""

    def __init__(self, secret_id: str | None, ttl_s: int) -> None:
        self.secret_id = secret_id
        self.ttl_s = ttl_s
        self._provider: SecretsProvider | None = None

    def get(self, force: bool = False) -> dict[str, str]:
        if not self.secret_id:
            return {}
        if self._provider is None:
            self._provider = SecretsProvider(boto3_client=aws.client("secretsmanager"))
        try:
            value: Any = self._provider.get(
                self.secret_id, transform="json", max_age=self.ttl_s, force_fetch=force
            )
        except TransformParameterError:
            raise ProxyError(
                503,
                "The provider-keys secret is not a JSON object of NAME: value pairs.",
                "service_unavailable",
                code="bad_provider_keys_secret",
            ) from None
        except GetParameterError as exc:
            logger.error("provider-keys secret unreachable", extra={"cause": type(exc.__cause__ or exc).__name__})
            raise dependency_unavailable(
                "Secrets Manager is unreachable: the provider-keys secret cannot be read. "
                "Retry shortly."
            ) from None
        if not isinstance(value, dict):
            raise ProxyError(
                503,
                "The provider-keys secret is not a JSON object of NAME: value pairs.",
                "service_unavailable",
                code="bad_provider_keys_secret",
            )
        keys = {str(k): str(v) for k, v in value.items() if v is not None}
        redactor.register(keys.values())
        return keys
