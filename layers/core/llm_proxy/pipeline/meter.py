"""The pipeline's meter step, and the one place a usage record is filled in.

Every path (a JSON answer, a stream, a cache hit, a refusal, a failure) starts its record with
`new_record`, fills it through the functions here, and hands it to `Meter`, which settles the
key's counters, stores the answer in the cache and writes the usage item. Cost follows one
rule for every path: the tokens, and the uses of provider-run tools (web searches), at the price
of the deployment that answered (its configured price, else the model catalogue's), computed by
the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

from llm_proxy.access.limits import Admission
from llm_proxy.accounting.metrics import emit_budget
from llm_proxy.accounting.pricing import cost_usd, web_search_cost
from llm_proxy.accounting.usage import UsageRecord
from llm_proxy.after_response import AfterResponse
from llm_proxy.errors import ProxyError
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.usage import UsageTable
from llm_proxy.store.usage_batch import UsageBatch

if TYPE_CHECKING:
    from llm_proxy.pipeline.model_router import ModelRouter
    from llm_proxy.pipeline.request import GatewayRequest


def new_record(request: GatewayRequest) -> UsageRecord:
    caller = request.caller
    key = caller.key
    return UsageRecord(
        request_id=request.request_id,
        endpoint=request.endpoint,
        key_id=caller.key_id,
        # The team's and user's records where there are (a key's or a JWT's), else the key's
        # own tags: the report's teams and users either way.
        team_id=caller.team.team_id if caller.team else key.team_id if key else None,
        user_id=caller.user.user_id if caller.user else key.user_id if key else None,
        agent=request.agent,
        model_requested=request.model or None,
        stream=request.stream,
    )


def record_answer(
    record: UsageRecord, hidden: Mapping[str, Any], router: ModelRouter | None
) -> None:
    """The deployment that answered, its retries and fallbacks, from litellm's hidden params
    of a response or stream."""
    headers = hidden.get("additional_headers") or {}
    record.deployment_id = hidden.get("model_id")
    deployment = (router.deployments if router else {}).get(str(record.deployment_id), {})
    # The answering deployment's own group: after an alias or a fallback it differs from
    # what was asked for.
    record.model_group = deployment.get("model_name") or headers.get("x-litellm-model-group")
    record.deployment_model = hidden.get("litellm_model_name") or (
        deployment.get("litellm_params", {}).get("model")
    )
    record.provider = hidden.get("custom_llm_provider") or deployment.get("provider")
    record.retries = int(headers.get("x-litellm-attempted-retries") or 0)
    record.fallbacks = int(headers.get("x-litellm-attempted-fallbacks") or 0)


def record_failure(
    record: UsageRecord, error: ProxyError, cause: Exception, router: ModelRouter | None
) -> None:
    """The error the client gets, and what litellm's exception tells about the failed
    attempt: the deployment and how many retries it made before giving up."""
    record.fail(error.status, error.error_type, error.code)
    retries = getattr(cause, "num_retries", None)
    if isinstance(retries, int):
        record.retries = retries
    deployment_id = getattr(cause, "failed_deployment_id", None)
    deployment = (router.deployments if router else {}).get(str(deployment_id))
    if deployment is not None:
        record.deployment_id = str(deployment_id)
        record.model_group = deployment.get("model_name")
        record.deployment_model = deployment["litellm_params"].get("model")
        record.provider = deployment.get("provider")


def record_usage(record: UsageRecord, usage: Any) -> None:
    """Token counts from an answer's (or a stream chunk's) `usage`: chat's prompt and
    completion tokens, or the Responses API's input and output tokens, with the prompt-cache
    reads and writes among them; and the web searches the provider ran."""

    def count(source: Any, *names: str) -> int:
        for name in names:
            value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
            if value:
                return int(value)
        return 0

    record.prompt_tokens = count(usage, "prompt_tokens", "input_tokens")
    record.completion_tokens = count(usage, "completion_tokens", "output_tokens")
    # Prompt-cache reads: Anthropic's count, else OpenAI's (chat or Responses API) details.
    record.cached_tokens = count(usage, "cache_read_input_tokens") or count(
        _field(usage, "prompt_tokens_details") or _field(usage, "input_tokens_details"),
        "cached_tokens",
    )
    record.cache_write_tokens = count(usage, "cache_creation_input_tokens")
    # Anthropic's `server_tool_use` (as litellm's Usage keeps it, and where the Responses API's
    # `web_search_call` items are counted), else where litellm puts Gemini's grounding searches.
    record.web_search_requests = count(
        _field(usage, "server_tool_use"), "web_search_requests"
    ) or count(_field(usage, "prompt_tokens_details"), "web_search_requests")


def _field(source: Any, name: str) -> Any:
    return source.get(name) if isinstance(source, dict) else getattr(source, name, None)


def record_cost(record: UsageRecord, router: ModelRouter | None) -> None:
    """The one cost rule: nothing for a cache hit; else the tokens and the web searches at the
    answering deployment's price."""
    deployment = router.deployments.get(str(record.deployment_id)) if router else None
    if record.cache_hit or deployment is None:
        record.cost_usd = 0.0
        return
    record.cost_usd = cost_usd(
        deployment,
        record.prompt_tokens,
        record.completion_tokens,
        record.cached_tokens,
        record.cache_write_tokens,
    ) + web_search_cost(deployment, record.web_search_requests)


def record_latency(record: UsageRecord, started: float, routed: float | None = None) -> None:
    """The request's latency since `started`, and the provider call's since `routed` (when the
    request was routed)."""
    now = time.perf_counter()
    record.latency_ms = (now - started) * 1000
    if routed is not None:
        record.upstream_ms = (now - routed) * 1000


class Metering(Enum):
    """When a request's metering runs, against its response."""

    # All of it before the response: Lambda under Mangum, where the invocation waits for it
    # anyway, and Lambda freezes the environment once the response is out.
    BEFORE_RESPONSE = "before response"
    # The usage item after the response; the counters and the state a caller's next request
    # must see before it. Where the process outlives the response (uvicorn: `make dev`, a
    # container).
    USAGE_AFTER_RESPONSE = "usage after response"
    # All of it after the response: Lambda with the after-response extension, which holds the
    # invocation until it is done, so the container's next request cannot start before; other
    # containers see it moments later, as a DynamoDB read would anyway.
    ALL_AFTER_RESPONSE = "all after response"


class Meter:
    """Settles the admission's estimates to what was used, writes the state a next request must
    see (a cache entry, a stored response) and writes the usage item, at the time its
    `Metering` says (always before the response where the request gives no `after_response`).
    """

    def __init__(
        self,
        usage: UsageTable,
        counters: CountersTable,
        metering: Metering,
        *,
        batch_wait_s: float = 0.2,
    ) -> None:
        self.usage = usage
        self.counters = counters
        self.metering = metering
        # USAGE_AFTER_RESPONSE: the usage items, written together off the request path.
        self.batch = UsageBatch(usage, batch_wait_s)

    async def __call__(
        self,
        record: UsageRecord,
        admission: Admission | None,
        *,
        state_write: Callable[[], None] | None = None,
        after_response: AfterResponse | None = None,
    ) -> None:
        if after_response is None or self.metering is Metering.BEFORE_RESPONSE:
            await asyncio.to_thread(self._write_usage_and_settle, record, admission, state_write)
            return
        if self.metering is Metering.ALL_AFTER_RESPONSE:
            after_response.add(
                partial(self._write_usage_and_settle, record, admission, state_write)
            )
            return
        if (admission is not None and admission.holds_counters) or state_write is not None:
            await asyncio.to_thread(self._settle, record, admission, state_write)
        self.batch.submit(record)

    def _write_usage_and_settle(
        self,
        record: UsageRecord,
        admission: Admission | None,
        state_write: Callable[[], None] | None,
    ) -> None:
        self.usage.write(record)
        self._settle(record, admission, state_write)

    def _settle(
        self,
        record: UsageRecord,
        admission: Admission | None,
        state_write: Callable[[], None] | None,
    ) -> None:
        if admission is not None and admission.holds_counters:
            # A cache hit used no provider tokens, whatever its answer reports.
            used = 0 if record.cache_hit else record.prompt_tokens + record.completion_tokens
            spend = self.counters.settle(
                admission.reservation,
                used,
                record.cost_usd,
                admission.deployment_items,
                record.deployment_id,
            )
            emit_budget(admission.reservation.budget_owner, admission.reservation.budget, spend)
        if state_write is not None:
            state_write()
