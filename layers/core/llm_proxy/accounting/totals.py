"""The totals a daily rollup keeps and a report sums: one type for both, so their names are
written once. (The counters table, apart, holds the rate-limit and budget counters.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Self

COST_PLACES = Decimal("0.0000000001")


def money(value: Decimal) -> float:
    return float(value.quantize(COST_PLACES))


@dataclass(kw_only=True)
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    cache_hits: int = 0
    latency_ms_sum: Decimal = field(default_factory=Decimal)
    # Not a sum: the highest latency seen (see `rollups.raise_latency_max`).
    latency_ms_max: Decimal = field(default_factory=Decimal)

    @classmethod
    def added_names(cls) -> tuple[str, ...]:
        """The counters a usage item adds to (an ADD each); all but the maximum."""
        return tuple(f.name for f in fields(Totals) if f.name != "latency_ms_max")

    @classmethod
    def of_usage(cls, item: Mapping[str, Any]) -> Totals:
        """What one usage item adds."""
        return Totals(
            requests=1,
            errors=1 if int(item.get("status", 200)) >= 400 else 0,
            prompt_tokens=int(item.get("prompt_tokens", 0)),
            completion_tokens=int(item.get("completion_tokens", 0)),
            cost_usd=Decimal(item.get("cost_usd", 0)),
            cache_hits=1 if item.get("cache_hit") else 0,
            latency_ms_sum=Decimal(item.get("latency_ms", 0)),
            latency_ms_max=Decimal(item.get("latency_ms", 0)),
        )

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Self:
        """From a DynamoDB item (numbers as Decimals), with any other fields of `cls`."""
        values = {f.name: item[f.name] for f in fields(cls) if f.name in item}
        for total in fields(Totals):
            kind = int if total.type in ("int", int) else Decimal
            values[total.name] = kind(values.get(total.name, 0))
        return cls(**values)

    def add(self, other: Totals) -> None:
        for name in self.added_names():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_ms_max = max(self.latency_ms_max, other.latency_ms_max)

    def as_dict(self) -> dict[str, Any]:
        """The report's figures: sums, with the average latency and total tokens derived."""
        average = self.latency_ms_sum / self.requests if self.requests else Decimal(0)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": money(self.cost_usd),
            "cache_hits": self.cache_hits,
            "latency_ms_avg": round(float(average), 1),
            "latency_ms_max": round(float(self.latency_ms_max), 1),
        }

    @staticmethod
    def columns() -> tuple[str, ...]:
        """`as_dict`'s figures as a row of a table: everything but the derived total."""
        return tuple(name for name in Totals().as_dict() if name != "total_tokens")
