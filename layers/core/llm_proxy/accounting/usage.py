"""Usage records: one per request, success or failure, as the usage table stores it (its
strings cut to their bounds), and the request's metrics. The table and its write (with the
daily rollup, retries, dead letters and quarantine) are `store.usage.UsageTable`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from llm_proxy.accounting import metrics
from llm_proxy.accounting.rollups import LABEL_BYTES, cut
from llm_proxy.store.values import number

SECONDS_PER_DAY = 86_400
# Bounds on a usage item's strings, in UTF-8 bytes. Callers choose the agent and the model they
# ask for, so without a bound a request could make its item too large to store (400 KB) or its
# rollup key too long (1,024 bytes), or simply costly to write. The rollup's labels share the
# rollup key's bound; any other string gets FIELD_BYTES.
FIELD_BYTES = 1024
LABEL_FIELDS = frozenset(
    {"agent", "model_requested", "model_group", "key_id", "team_id", "user_id"}
)
# What identifies the item is never cut: a cut request id could meet another request's.
IDENTITY_FIELDS = frozenset({"request_id", "day"})
# Lists the names of the fields that were cut.
TRUNCATED = "truncated"


@dataclass
class UsageRecord:
    request_id: str
    endpoint: str
    key_id: str | None = None
    # The team and the user (developer) the request was made for: their records' ids (a key's
    # or a JWT's), else the key's own `team_id` / `user_id` tags.
    team_id: str | None = None
    user_id: str | None = None
    agent: str | None = None
    model_requested: str | None = None
    model_group: str | None = None
    deployment_id: str | None = None
    deployment_model: str | None = None
    provider: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of the prompt tokens: those read from and written to the provider's prompt cache.
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    # Web searches the provider ran for the answer (its `server_tool_use.web_search_requests`),
    # priced per search and counted in `cost_usd`.
    web_search_requests: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    # The part of the latency spent in the provider call (litellm and the provider), from
    # routing to the answer or the stream's end; the rest is the gateway's own.
    upstream_ms: float | None = None
    status: int = 200
    error_type: str | None = None
    error_code: str | None = None
    cache_hit: bool = False
    # Tokens counted by the gateway because the provider reported none (some streams).
    usage_estimated: bool = False
    retries: int = 0
    fallbacks: int = 0
    started_at: float = field(default_factory=time.time)

    def fail(self, status: int, error_type: str, code: str | None) -> None:
        self.status, self.error_type, self.error_code = status, error_type, code

    def to_item(self, retention_days: int) -> dict[str, Any]:
        started = datetime.fromtimestamp(self.started_at, tz=UTC)
        item: dict[str, Any] = {
            key: number(value, digits=12)
            for key, value in asdict(self).items()
            if value is not None and key != "started_at"
        }
        item["total_tokens"] = self.prompt_tokens + self.completion_tokens
        item["timestamp"] = started.isoformat(timespec="milliseconds")
        item["day"] = started.strftime("%Y-%m-%d")
        item["expires_at"] = int(self.started_at) + retention_days * SECONDS_PER_DAY
        return bounded(item)


def bounded(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item with every string but its identity cut to its bound (`rollups.cut`: the start
    of the value, marked with its size and digest), and the cut fields' names in `truncated`."""
    result: dict[str, Any] = {}
    was_cut: list[str] = []
    for name, value in item.items():
        if isinstance(value, str) and name not in IDENTITY_FIELDS:
            short = cut(value, LABEL_BYTES if name in LABEL_FIELDS else FIELD_BYTES)
            if short != value:
                was_cut.append(name)
            value = short
        result[name] = value
    if was_cut:
        earlier = item.get(TRUNCATED)
        earlier_names = [str(n) for n in earlier] if isinstance(earlier, list) else []
        result[TRUNCATED] = sorted({*earlier_names, *was_cut})
    return result


def emit_metrics(record: UsageRecord) -> None:
    """A request's metrics: per model group, agent and status class, and in total; its error's
    type and code; the provider's share of the latency and the gateway's own."""
    # The group that answered: a bounded set. A request refused before routing names no group,
    # so a caller cannot mint a metric per model name it makes up.
    model = {"model": record.model_group or "unrouted"}
    status_class = f"{record.status // 100}xx"
    failed = record.status >= 400
    metrics.emit(
        {
            "Requests": (MetricUnit.Count, 1),
            "Errors": (MetricUnit.Count, 1 if failed else 0),
            "PromptTokens": (MetricUnit.Count, record.prompt_tokens),
            "CompletionTokens": (MetricUnit.Count, record.completion_tokens),
            "CostUSD": (MetricUnit.NoUnit, record.cost_usd),
            "Latency": (MetricUnit.Milliseconds, record.latency_ms),
        },
        model,
        {},
        {"agent": record.agent or metrics.NONE},
        {"status_class": status_class},
    )
    # What a provider caused: its error or timeout, or its own rate limit (the router's
    # cooldown follows from those).
    provider_failed = record.error_type in ("upstream_error", "timeout_error") or (
        record.error_code in ("provider_rate_limited", "all_deployments_cooling_down")
    )
    # Counted 0 or 1 per request, so a period's Average is a rate.
    detail: dict[str, tuple[MetricUnit, float]] = {
        "ProviderErrors": (MetricUnit.Count, 1 if provider_failed else 0),
        "CacheHits": (MetricUnit.Count, 1 if record.cache_hit else 0),
    }
    if record.upstream_ms is not None:
        detail["UpstreamLatency"] = (MetricUnit.Milliseconds, record.upstream_ms)
        gateway_ms = max(record.latency_ms - record.upstream_ms, 0.0)
        detail["GatewayLatency"] = (MetricUnit.Milliseconds, gateway_ms)
    metrics.emit(detail, model, {})
    if failed:
        metrics.emit(
            {"Errors": (MetricUnit.Count, 1)},
            {"status_class": status_class, "error_type": record.error_type or metrics.NONE},
            {"status": str(record.status), "error_code": record.error_code or str(record.status)},
        )
