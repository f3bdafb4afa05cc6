"""Rate limits and budgets that hold across every container: counters in DynamoDB
(`store.counters.CountersTable`), changed only by conditional atomic updates (never
read-modify-write), in TTL'd windows.

A request reserves its estimate when admitted (tokens against tpm, cost against the budget)
and the reservation is settled to the real figures when the request is metered, so concurrent
requests cannot all pass a check that only one of them fits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llm_proxy.access.key_record import VirtualKey
from llm_proxy.errors import (
    RATE_LIMIT_EXCEEDED,
    ProxyError,
)

if TYPE_CHECKING:
    # store.counters imports this module.
    from llm_proxy.store.counters import CountersTable

MINUTE_S = 60
# How long a request may hold one of its key's parallel slots: Lambda's longest invocation, so
# no request still running loses its slot, and one a crashed container left frees after it.
PARALLEL_SLOT_LEASE_S = 900


@dataclass(frozen=True)
class Limits:
    """What one counter item may hold in its window."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass
class Reservation:
    """What an admission added to the counters, to be settled when the request is metered."""

    # The key's minute counters whose tokens (a tpm limit) are settled to the real count.
    minute_items: list[str] = field(default_factory=list)
    tokens: int = 0
    # Every spend counter it reserved `cost` on, the key's own (`spend_item`) among them.
    spend_items: list[str] = field(default_factory=list)
    spend_item: str | None = None
    cost: Decimal = Decimal(0)
    # The key's budget, and what its budget metric is named after (its alias, else its agent).
    budget: Decimal | None = None
    budget_owner: str | None = None
    # The key's in-flight counter and this request's slot in it (max_parallel_requests),
    # released when the request is metered.
    parallel_item: str | None = None
    parallel_slot: str | None = None


def window_end(now: float, window_s: int) -> int:
    return int(now // window_s + 1) * window_s


def over_limit(who: str, limits: Limits, old: dict[str, Any], now: float) -> ProxyError:
    reset_s = max(1, math.ceil(window_end(now, MINUTE_S) - now))
    used_requests, used_tokens = int(old.get("n", 0)), int(old.get("tokens", 0))
    headers = {"Retry-After": str(reset_s)}
    broken = []
    if limits.rpm:
        headers |= {
            "x-ratelimit-limit-requests": str(limits.rpm),
            "x-ratelimit-remaining-requests": str(max(limits.rpm - used_requests, 0)),
            "x-ratelimit-reset-requests": f"{reset_s}s",
        }
        if used_requests >= limits.rpm:
            broken.append(f"{limits.rpm} requests per minute")
    if limits.tpm:
        headers |= {
            "x-ratelimit-limit-tokens": str(limits.tpm),
            "x-ratelimit-remaining-tokens": str(max(limits.tpm - used_tokens, 0)),
            "x-ratelimit-reset-tokens": f"{reset_s}s",
        }
        if not broken or used_tokens >= limits.tpm:
            broken.append(f"{limits.tpm} tokens per minute")
    return RATE_LIMIT_EXCEEDED(
        f"{who} is over its rate limit ({' and '.join(broken)}); retry in {reset_s} s.",
        headers=headers,
    )


def parallel_item(key: VirtualKey) -> str:
    return f"key#{key.token}#parallel"


def parallel_limit_reached(key: VirtualKey) -> ProxyError:
    """As LiteLLM's rate limiter words it for max_parallel_requests."""
    limit = key.max_parallel_requests
    return RATE_LIMIT_EXCEEDED(
        f"Rate limit exceeded for api_key: {key.token}. Limit type: max_parallel_requests. "
        f"Current limit: {limit}, Remaining: 0.",
        headers={"Retry-After": "1"},
    )


@dataclass
class Admission:
    """One request's admission, visible to litellm's pre-call check through the request's
    scope (`pipeline.litellm_hooks`): the deployments it takes counters on are added to the
    reservation."""

    counters: CountersTable
    reservation: Reservation
    deployment_limits: dict[str, Limits]
    # Deployment id -> its minute counter, for deployments with a tpm limit to settle.
    deployment_items: dict[str, str] = field(default_factory=dict)

    @property
    def holds_counters(self) -> bool:
        """Whether settling it writes anything (a key or deployment with limits)."""
        reservation = self.reservation
        return bool(
            reservation.minute_items
            or reservation.spend_items
            or reservation.parallel_item
            or self.deployment_items
        )
