"""Replay of the usage dead-letter queue into the usage and rollup tables.

Idempotent by request id: each item is written with its rollup in one transaction guarded by
`attribute_not_exists(request_id)`, so a record replayed twice (SQS delivers at least once)
leaves one item and is counted once. A record that still cannot be written stays in the queue
and comes back after the queue's visibility timeout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llm_proxy.accounting.dead_letters import DeadLetters
from llm_proxy.accounting.usage import Outcome, UsageStore
from llm_proxy.logs import logger


@dataclass
class ReplayResult:
    written: int = 0
    duplicates: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def replay(store: UsageStore, dead_letters: DeadLetters, limit: int = 10_000) -> ReplayResult:
    """Drain the queue (up to `limit` records); each record's message is deleted only once its
    item is stored."""
    result = ReplayResult()
    while result.written + result.duplicates + result.failed < limit:
        letters = dead_letters.receive()
        if not letters:
            break
        done: list[str] = []
        for letter in letters:
            outcome = store.store(letter.item)
            if outcome is Outcome.FAILED:
                result.failed += 1
                continue
            done.append(letter.receipt)
            if outcome is Outcome.WRITTEN:
                result.written += 1
            else:
                result.duplicates += 1
        dead_letters.delete(done)
        if not done:
            break  # a whole batch refused: DynamoDB is still down, try again later
    logger.info("usage dead letters replayed", extra=result.as_dict())
    return result
