"""Daily rollups computed in memory from usage items: what the gateway's ADDs and latency
maxima (`llm_proxy.store.rollups`) make of them, for synthetic report data and for
checking the real write path against."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llm_proxy.accounting.rollups import Rollup, RollupKey, key_of
from llm_proxy.accounting.totals import Totals


def aggregate(items: Iterable[Mapping[str, Any]]) -> list[Rollup]:
    """The rollups these usage items produce."""
    rows: dict[RollupKey, Rollup] = {}
    for item in items:
        key = key_of(item)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Rollup(
                key.day, key.model, key.key_id, key.agent, key.team_id, key.user_id
            )
        row.add(Totals.of_usage(item))
    return list(rows.values())
