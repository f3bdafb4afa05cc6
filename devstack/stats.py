"""Summaries of timing samples, and ratios between them, as the benches report them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples_ms),
        "p99": percentile(samples_ms, 99),
        "mean": statistics.fmean(samples_ms),
        "min": min(samples_ms),
    }


def ratio(value: float, baseline: float) -> float:
    """value / baseline; NaN without a positive baseline."""
    return value / baseline if baseline > 0 else math.nan
