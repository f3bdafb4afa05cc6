"""Process settings: one pydantic-settings model per Lambda function, each with the variables
that function is given (the seed's `LLM_PROXY__*` names, `OLLAMA_API_BASE`, and what Lambda,
Lambda Web Adapter and Powertools set). This module is the gateway's only reader of its
settings from the environment.

    SharedSettings          what every function may read: the environment, the AWS endpoint,
                            metrics, the provider-keys secret, the usage, rollups and keys
                            tables, usage retention, the dead-letter and quarantine queues,
                            the budget alert share (the api's /spend report and the cost report)
      ApiSettings           the api function (under Mangum, and streamed under Lambda Web
                            Adapter) and the keys function, which serves the same app with the
                            key routes alone
      CostReportSettings    the cost-report function
      UsageReplaySettings   the usage-replay function (its table and queue are required)
    AwsSettings, MetricsSettings
                            parts of SharedSettings that `aws` and `accounting.metrics` read
                            where they are used, with `current()`

The empty-variable rule, for every variable: **an empty variable is unset**, and the field's
default applies (the template declares some variables empty, so that `sam local --env-vars`
can set them). Any other value must parse, or building the settings raises `SettingsError`
naming the variable: `LLM_PROXY__SECRET_TTL_S=abc` fails at init, never falls back. Booleans
take true/false, 1/0, yes/no, on/off, t/f, y/n in any case. Names are case-sensitive, as
Lambda's environment is; no `.env` file or secrets directory is read.

Building one:

    ApiSettings.from_env()           from the process environment, as ApiSettings() (handlers)
    ApiSettings.from_env(mapping)    from that mapping of variables alone (tests, benches)
    ApiSettings.of(secret_id="s")    those fields by name, defaults for the rest, no environment
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, cast

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_BUDGET_ALERT_SHARE = 0.8
DEFAULT_SERVICE = "llm-proxy"
# A value shown in an error is cut to this many characters.
SHOWN_VALUE_CHARS = 80


class SettingsError(ValueError):
    """A variable whose value does not parse, or a required one unset; the message names it."""


def variable(name: str, default: Any = None) -> Any:
    """A field read from the variable `name` (the operator's: README's "Process settings")."""
    return Field(default, validation_alias=name)


def platform_variable(name: str, default: Any = None) -> Any:
    """A field read from a variable that Lambda or Lambda Web Adapter sets, not the operator."""
    return Field(default, validation_alias=name, json_schema_extra={"platform": True})


# Set while a model is built from given values (`from_env(mapping)`, `of`): no environment.
_GIVEN_VALUES_ONLY: ContextVar[bool] = ContextVar("given_values_only", default=False)


@contextmanager
def _given_values_only() -> Iterator[None]:
    token = _GIVEN_VALUES_ONLY.set(True)
    try:
        yield
    finally:
        _GIVEN_VALUES_ONLY.reset(token)


class EnvSettings(BaseSettings):
    """The base of every settings model: the empty-variable rule, errors that name the
    variable, and the three ways to build one (module docstring)."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=False,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _settings_error(type(self), exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,) if _GIVEN_VALUES_ONLY.get() else (init_settings, env_settings)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name -> the variable it is read from."""
        return dict(_variables(cls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings `environ` gives (by default the process environment); with a mapping,
        nothing else is read."""
        if environ is None:
            return cls()
        given = {name: environ[name] for name in cls.variables().values() if environ.get(name)}
        with _given_values_only():
            return cls(**given)

    @classmethod
    def of(cls, **fields: Any) -> Self:
        """Settings with these fields (by field name), defaults for the rest."""
        variables = cls.variables()
        unknown = sorted(set(fields) - set(variables))
        if unknown:
            raise SettingsError(f"{cls.__name__} has no field {', '.join(unknown)}")
        with _given_values_only():
            return cls(**{variables[name]: value for name, value in fields.items()})

    @classmethod
    def current(cls) -> Self:
        """The settings as the process environment has them now, built once per distinct
        value of their variables: for a few settings read where they are used."""
        values = tuple(os.environ.get(name, "") for _, name in _variables(cls))
        return cast(Self, _built(cls, values))


@functools.cache
def _variables(model: type[EnvSettings]) -> tuple[tuple[str, str], ...]:
    return tuple((name, str(field.validation_alias)) for name, field in model.model_fields.items())


@functools.lru_cache(maxsize=64)
def _built(model: type[EnvSettings], values: tuple[str, ...]) -> EnvSettings:
    names = (name for _, name in _variables(model))
    return model.from_env(dict(zip(names, values, strict=True)))


def _settings_error(model: type[EnvSettings], exc: ValidationError) -> SettingsError:
    problems = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"])
        if not name:
            # A rule between variables: its message names them (the values are not shown).
            problems.append(error["msg"].removeprefix("Value error, "))
        elif error["type"] == "missing":
            problems.append(f"{name} must be set")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{name} is not a variable of {model.__name__}")
        else:
            shown = repr(error["input"])
            if len(shown) > SHOWN_VALUE_CHARS:
                shown = shown[: SHOWN_VALUE_CHARS - 3] + "..."
            problems.append(f"{name}={shown}: {error['msg']}")
    return SettingsError(f"{model.__name__}: " + "; ".join(problems))


def _lowered(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class AwsSettings(EnvSettings):
    # boto3 honours AWS_ENDPOINT_URL itself; this one is for `sam local`, which passes only
    # variables that the template declares (empty when deployed).
    aws_endpoint_url: str | None = variable("LLM_PROXY__AWS_ENDPOINT_URL")


class MetricsSettings(EnvSettings):
    # No namespace, no metrics (the template sets one; the local stack does not).
    metrics_namespace: str | None = variable("POWERTOOLS_METRICS_NAMESPACE")
    service_name: str = variable("POWERTOOLS_SERVICE_NAME", DEFAULT_SERVICE)


class SharedSettings(AwsSettings, MetricsSettings):
    # `local` allows the seed's sk-1234 master key; anything else is a deployment.
    environment: str = variable("LLM_PROXY__ENV", "aws")
    secret_id: str | None = variable("LLM_PROXY__SECRET_ID")
    secret_ttl_s: int = variable("LLM_PROXY__SECRET_TTL_S", 300)
    # How long the last good provider-keys secret keeps serving while Secrets Manager is
    # unreachable (readiness says "degraded" meanwhile).
    secret_max_staleness_s: int = variable("LLM_PROXY__SECRET_MAX_STALENESS_S", 86_400)
    usage_table: str | None = variable("LLM_PROXY__USAGE_TABLE")
    usage_retention_days: int = variable("LLM_PROXY__USAGE_RETENTION_DAYS", 90)
    rollups_table: str | None = variable("LLM_PROXY__ROLLUPS_TABLE")
    keys_table: str | None = variable("LLM_PROXY__KEYS_TABLE")
    usage_dead_letter_queue: str | None = variable("LLM_PROXY__USAGE_DLQ_URL")
    # Usage records that can never be written as they are, each with its reason.
    usage_quarantine_queue: str | None = variable("LLM_PROXY__USAGE_QUARANTINE_URL")
    # The share of a key's budget that flags it in a spend report.
    budget_alert_share: float = variable(
        "LLM_PROXY__BUDGET_ALERT_SHARE", DEFAULT_BUDGET_ALERT_SHARE
    )

    @field_validator("environment", mode="before")
    @classmethod
    def _environment_lowered(cls, value: Any) -> Any:
        return _lowered(value)

    @property
    def is_local(self) -> bool:
        return self.environment == "local"


class ApiSettings(SharedSettings):
    """The api function's, and the keys function's: the same app, with the key routes alone
    (`LLM_PROXY__KEY_MANAGEMENT` and the tables it is given tell them apart)."""

    config_path: Path | None = variable("LLM_PROXY__CONFIG_PATH")
    # `config`, `ollama` or `litellm` (config.config_for_mode checks it, naming the variable).
    llm_mode: str = variable("LLM_PROXY__LLM_MODE", "config")
    default_model: str | None = variable("LLM_PROXY__DEFAULT_MODEL")
    litellm_proxy_url: str | None = variable("LLM_PROXY__LITELLM_PROXY_URL")
    ollama_api_base: str = variable("OLLAMA_API_BASE", "http://localhost:11434")
    detailed_debug: bool = variable("LLM_PROXY__DETAILED_DEBUG", False)
    counters_table: str | None = variable("LLM_PROXY__COUNTERS_TABLE")
    cache_table: str | None = variable("LLM_PROXY__CACHE_TABLE")
    # Stored responses of the Responses API (`store`, `previous_response_id`).
    responses_table: str | None = variable("LLM_PROXY__RESPONSES_TABLE")
    responses_retention_days: int = variable("LLM_PROXY__RESPONSES_RETENTION_DAYS", 30)
    # Where a stored response over DynamoDB's item limit keeps its conversation (under
    # `responses/`); without it such a response is refused (400) rather than lost.
    responses_bucket: str | None = variable("LLM_PROXY__RESPONSES_BUCKET")
    # API Gateway's synchronous payload limit.
    max_body_bytes: int = variable("LLM_PROXY__MAX_BODY_BYTES", 6 * 1024 * 1024)
    # API Gateway's integration timeout. Provider calls stop `timeout_margin_ms` sooner, so a
    # client gets the gateway's 504 (metered) rather than API Gateway's own. 0: no deadline.
    api_timeout_ms: int = variable("LLM_PROXY__API_TIMEOUT_MS", 29_000)
    timeout_margin_ms: int = variable("LLM_PROXY__TIMEOUT_MARGIN_MS", 2_000)
    # The HTTP surface: `/openapi.json` and `/docs` only where enabled; the `/key/*` routes
    # where this process manages keys (deployed, a function of its own does).
    openapi: bool = variable("LLM_PROXY__OPENAPI", False)
    key_management: bool = variable("LLM_PROXY__KEY_MANAGEMENT", True)
    # In Lambda, the work after each response runs in an internal extension (lambda_extension)
    # unless this is false; the work then stays before the response.
    after_response_extension: bool = variable("LLM_PROXY__AFTER_RESPONSE_EXTENSION", True)
    # Where the process outlives its responses (uvicorn): how long a usage record may wait
    # for others to be written with it in one transaction (store.usage_batch).
    usage_batch_wait_ms: int = Field(
        200, ge=0, le=5_000, validation_alias="LLM_PROXY__USAGE_BATCH_WAIT_MS"
    )
    # A max_tokens over the model's output limit: served with the limit, or refused (400).
    output_tokens_over_limit: Literal["cap", "refuse"] = variable(
        "LLM_PROXY__OUTPUT_TOKENS_OVER_LIMIT", "cap"
    )
    # The most provider retries a request's own `num_retries` may ask for.
    max_request_retries: int = Field(
        3, ge=0, le=10, validation_alias="LLM_PROXY__MAX_REQUEST_RETRIES"
    )
    # LiteLLM's testing parameters (`mock_response`, ...): `off`; `on` where LLM_PROXY__ENV is
    # `local`; `forced` anywhere (a deployment that means it).
    mock_testing_params: Literal["off", "on", "forced"] = variable(
        "LLM_PROXY__MOCK_TESTING_PARAMS", "off"
    )
    # Developers' JWTs (general_settings.enable_jwt_auth): the IdP's JWKS, and the `aud` and
    # `iss` every token must carry (LiteLLM's names).
    jwt_public_key_url: str | None = variable("JWT_PUBLIC_KEY_URL")
    jwt_audience: str | None = variable("JWT_AUDIENCE")
    jwt_issuer: str | None = variable("JWT_ISSUER")
    # Set by Lambda: the function's name (in Lambda at all), the runtime API's host:port.
    lambda_function_name: str | None = platform_variable("AWS_LAMBDA_FUNCTION_NAME")
    lambda_runtime_api: str | None = platform_variable("AWS_LAMBDA_RUNTIME_API")
    # Set for Lambda Web Adapter (the template's streamed function): where the adapter POSTs
    # before the snapshot and after each restore (snapstart.add_adapter_hooks).
    snapstart_before_checkpoint_path: str | None = platform_variable(
        "AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH"
    )
    snapstart_after_restore_path: str | None = platform_variable(
        "AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH"
    )

    @field_validator("llm_mode", "output_tokens_over_limit", "mock_testing_params", mode="before")
    @classmethod
    def _mode_lowered(cls, value: Any) -> Any:
        return _lowered(value)

    @model_validator(mode="after")
    def _mock_testing_only_local(self) -> Self:
        if self.mock_testing_params == "on" and not self.is_local:
            raise ValueError(
                "LLM_PROXY__MOCK_TESTING_PARAMS=on takes LLM_PROXY__ENV=local; a deployment "
                "that means it sets `forced`"
            )
        return self

    @field_validator("jwt_public_key_url")
    @classmethod
    def _jwks_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("https://", "http://")):
            raise ValueError("must be an https:// (or http://) URL")
        return value

    @property
    def allows_mock_testing_params(self) -> bool:
        return self.mock_testing_params != "off"

    @property
    def provider_deadline_s(self) -> float | None:
        if self.api_timeout_ms <= 0:
            return None
        return max(self.api_timeout_ms - self.timeout_margin_ms, 1_000) / 1000

    @property
    def outlives_response(self) -> bool:
        """Whether the process runs on once a response is sent (uvicorn: `make dev`, a
        container), so after-response work may run there: Lambda freezes the execution
        environment once the invocation's response is out (Lambda Web Adapter), and under
        Mangum the invocation waits for that work anyway (pipeline.meter.Metering; the
        after-response extension changes it, Gateway.meter_in_extension)."""
        return not self.lambda_function_name


class CostReportSettings(SharedSettings):
    # Where the report is written: objects in the bucket, a summary to the topic.
    report_bucket: str | None = variable("LLM_PROXY__REPORT_BUCKET")
    report_topic_arn: str | None = variable("LLM_PROXY__REPORT_TOPIC_ARN")
    # Not a variable: the template grants the function `reports/*` of the bucket only.
    report_prefix: ClassVar[str] = "reports"


class UsageReplaySettings(SharedSettings):
    # Nothing to replay without the table to write and the queue to read.
    usage_table: str = Field(validation_alias="LLM_PROXY__USAGE_TABLE")
    usage_dead_letter_queue: str = Field(validation_alias="LLM_PROXY__USAGE_DLQ_URL")


# Every function's model, by the function's name in functions/.
FUNCTION_SETTINGS: dict[str, type[SharedSettings]] = {
    "api": ApiSettings,
    "keys": ApiSettings,
    "cost_report": CostReportSettings,
    "usage_replay": UsageReplaySettings,
}
