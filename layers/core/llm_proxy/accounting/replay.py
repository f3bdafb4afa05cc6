"""Replay of the usage dead-letter queue into the usage and rollup tables.

Idempotent by request id: each item is written with its rollup in one transaction guarded by
`attribute_not_exists(request_id)`, so a record replayed twice (SQS delivers at least once)
leaves one item and is counted once. A record DynamoDB refuses as invalid is repaired and
written, or else quarantined with its reason, as is a message that is no usage item; either
way it leaves the queue, so no bad letter holds the good ones back. A record that cannot be
written for now (DynamoDB down) stays in the queue and comes back after the queue's
visibility timeout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llm_proxy.accounting.dead_letters import DeadLetters
from llm_proxy.logs import logger
from llm_proxy.store.usage import Outcome, Stored, UsageTable


@dataclass
class ReplayResult:
    written: int = 0
    duplicates: int = 0
    # Left in the queue: DynamoDB refused them for now, or SQS refused their quarantine.
    failed: int = 0
    quarantined: int = 0

    @property
    def taken(self) -> int:
        return self.written + self.duplicates + self.failed + self.quarantined

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def replay(store: UsageTable, dead_letters: DeadLetters, limit: int = 10_000) -> ReplayResult:
    """Drain the queue (up to `limit` records); each record's message is deleted only once its
    item is stored or quarantined."""
    result = ReplayResult()
    while result.taken < limit:
        letters = dead_letters.receive()
        if not letters:
            break
        done: list[str] = []
        unavailable = 0
        for letter in letters:
            if letter.item is None:
                stored = Stored(Outcome.INVALID, letter.problem)
            else:
                stored = store.store(letter.item)
            if stored.outcome is Outcome.WRITTEN:
                result.written += 1
            elif stored.outcome is Outcome.DUPLICATE:
                result.duplicates += 1
            elif stored.outcome is Outcome.FAILED:
                result.failed += 1
                unavailable += 1
                continue
            elif store.quarantine(stored.reason, item=letter.item, body=letter.body):
                result.quarantined += 1
            else:
                # No quarantine took it: it stays, and the queue's redrive policy moves it on.
                result.failed += 1
                continue
            done.append(letter.receipt)
        dead_letters.delete(done)
        if unavailable == len(letters):
            break  # a whole batch refused for now: DynamoDB is still down, try again later
    logger.info("usage dead letters replayed", extra=result.as_dict())
    return result
