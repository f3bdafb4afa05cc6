"""The usage replay Lambda function: writes the usage dead-letter queue's records into the
usage and rollup tables, idempotently by request id; records that can never be written go to
the quarantine queue with their reason. Run on a schedule, or invoked by hand after an
incident (`{"limit": N}` caps the records one run takes)."""

from __future__ import annotations

from typing import Any

from llm_proxy.accounting.dead_letters import DeadLetters
from llm_proxy.accounting.replay import replay
from llm_proxy.settings import UsageReplaySettings
from llm_proxy.store.usage import UsageTable


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    # Per invocation; without LLM_PROXY__USAGE_TABLE and LLM_PROXY__USAGE_DLQ_URL it fails,
    # naming them.
    settings = UsageReplaySettings.from_env()
    store = UsageTable(
        settings.usage_table,
        settings.usage_retention_days,
        rollups_table=settings.rollups_table,
        quarantine_queue=settings.usage_quarantine_queue,
    )
    limit = int((event or {}).get("limit") or 10_000)
    return replay(store, DeadLetters(settings.usage_dead_letter_queue), limit).as_dict()
