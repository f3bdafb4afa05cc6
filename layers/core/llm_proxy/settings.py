"""Process settings, read once from the environment (the seed's `LLM_PROXY__*` names): one
set for the api, cost-report and replay functions alike, each reading what it needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRUE_VALUES = {"1", "true", "yes", "on"}
DEFAULT_BUDGET_ALERT_SHARE = 0.8


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


@dataclass(frozen=True)
class Settings:
    config_path: Path | None = None
    environment: str = "aws"
    secret_id: str | None = None
    secret_ttl_s: int = 300
    # How long the last good provider-keys secret keeps serving while Secrets Manager is
    # unreachable (readiness says "degraded" meanwhile).
    secret_max_staleness_s: int = 86_400
    usage_table: str | None = None
    keys_table: str | None = None
    counters_table: str | None = None
    cache_table: str | None = None
    # Stored responses of the Responses API (`store`, `previous_response_id`).
    responses_table: str | None = None
    responses_retention_days: int = 30
    usage_retention_days: int = 90
    rollups_table: str | None = None
    usage_dead_letter_queue: str | None = None
    # Usage records that can never be written as they are, each with its reason.
    usage_quarantine_queue: str | None = None
    llm_mode: str = "config"
    default_model: str | None = None
    litellm_proxy_url: str | None = None
    ollama_api_base: str = "http://localhost:11434"
    detailed_debug: bool = False
    # API Gateway's synchronous payload limit.
    max_body_bytes: int = 6 * 1024 * 1024
    # API Gateway's integration timeout. Provider calls stop `timeout_margin_ms` sooner, so a
    # client gets the gateway's 504 (metered) rather than API Gateway's own. 0: no deadline.
    api_timeout_ms: int = 29_000
    timeout_margin_ms: int = 2_000
    # Write a non-streamed answer's usage item after the response is sent. Only where the
    # process outlives the response (uvicorn: `make dev`, a container): Lambda freezes the
    # execution environment once the invocation's response is out (Lambda Web Adapter), and
    # under Mangum the invocation waits for the write anyway, so there it stays inline.
    meter_after_response: bool = True
    # The cost report: where it is written, and the share of a key's budget that flags it.
    report_bucket: str | None = None
    report_topic_arn: str | None = None
    budget_alert_share: float = DEFAULT_BUDGET_ALERT_SHARE
    report_prefix: str = "reports"
    # The HTTP surface: `/openapi.json` and `/docs` only where enabled; the `/key/*` routes
    # where this process manages keys (deployed, a function of its own does).
    openapi: bool = False
    key_management: bool = True

    @property
    def provider_deadline_s(self) -> float | None:
        if self.api_timeout_ms <= 0:
            return None
        return max(self.api_timeout_ms - self.timeout_margin_ms, 1_000) / 1000

    @property
    def is_local(self) -> bool:
        return self.environment == "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        config_path = env.get("LLM_PROXY__CONFIG_PATH")
        return cls(
            config_path=Path(config_path) if config_path else None,
            environment=env.get("LLM_PROXY__ENV", "aws").strip().lower(),
            secret_id=env.get("LLM_PROXY__SECRET_ID") or None,
            secret_ttl_s=int(env.get("LLM_PROXY__SECRET_TTL_S", "300")),
            secret_max_staleness_s=int(env.get("LLM_PROXY__SECRET_MAX_STALENESS_S") or "86400"),
            usage_table=env.get("LLM_PROXY__USAGE_TABLE") or None,
            keys_table=env.get("LLM_PROXY__KEYS_TABLE") or None,
            counters_table=env.get("LLM_PROXY__COUNTERS_TABLE") or None,
            cache_table=env.get("LLM_PROXY__CACHE_TABLE") or None,
            responses_table=env.get("LLM_PROXY__RESPONSES_TABLE") or None,
            responses_retention_days=int(env.get("LLM_PROXY__RESPONSES_RETENTION_DAYS") or "30"),
            usage_retention_days=int(env.get("LLM_PROXY__USAGE_RETENTION_DAYS", "90")),
            rollups_table=env.get("LLM_PROXY__ROLLUPS_TABLE") or None,
            usage_dead_letter_queue=env.get("LLM_PROXY__USAGE_DLQ_URL") or None,
            usage_quarantine_queue=env.get("LLM_PROXY__USAGE_QUARANTINE_URL") or None,
            llm_mode=env.get("LLM_PROXY__LLM_MODE", "config").strip().lower(),
            default_model=env.get("LLM_PROXY__DEFAULT_MODEL") or None,
            litellm_proxy_url=env.get("LLM_PROXY__LITELLM_PROXY_URL") or None,
            ollama_api_base=env.get("OLLAMA_API_BASE", "http://localhost:11434"),
            detailed_debug=_flag(env.get("LLM_PROXY__DETAILED_DEBUG")),
            max_body_bytes=int(env.get("LLM_PROXY__MAX_BODY_BYTES", str(6 * 1024 * 1024))),
            api_timeout_ms=int(env.get("LLM_PROXY__API_TIMEOUT_MS") or "29000"),
            timeout_margin_ms=int(env.get("LLM_PROXY__TIMEOUT_MARGIN_MS") or "2000"),
            meter_after_response=not env.get("AWS_LAMBDA_FUNCTION_NAME"),
            openapi=_flag(env.get("LLM_PROXY__OPENAPI")),
            key_management=_flag(env.get("LLM_PROXY__KEY_MANAGEMENT") or "true"),
            report_bucket=env.get("LLM_PROXY__REPORT_BUCKET") or None,
            report_topic_arn=env.get("LLM_PROXY__REPORT_TOPIC_ARN") or None,
            budget_alert_share=float(
                env.get("LLM_PROXY__BUDGET_ALERT_SHARE") or DEFAULT_BUDGET_ALERT_SHARE
            ),
        )
