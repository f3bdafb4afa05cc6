"""What every provider double shares: the reply it gives, the requests it received, the
faults queued for its next requests, and an optional pause between stream chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    # The non-streamed answer, or a stream's final object, where a double keeps it.
    answer: dict[str, Any] | None = None


@dataclass(kw_only=True)
class UpstreamDouble[FaultT]:
    reply: str
    base_url: str = ""
    chunk_delay_s: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[FaultT] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The reply a test may change for itself; `reset` gives the next test this one back.
        self.first_reply = self.reply

    def fail_next(self, fault: FaultT, times: int = 1) -> None:
        self.faults.extend([fault] * times)

    def next_fault(self) -> FaultT | None:
        return self.faults.pop(0) if self.faults else None

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()
        self.chunk_delay_s = 0.0
        self.reply = self.first_reply
