"""The parts of the request path a profile's time is split into: each function is counted to
the component its file belongs to; a helper's (the standard library, C calls, pydantic, h11,
anything not listed) to the components that called it, in proportion to the time each call
took, so that pydantic validating a body for FastAPI counts to HTTP and the same pydantic
building litellm's response counts to litellm."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from functools import cache
from typing import Any

HTTP = "HTTP and validation"
ADMISSION = "admission"
LITELLM = "litellm"
AFTER_RESPONSE = "after-response work"
LOGGING = "logging and metrics"
EVENT_LOOP = "event loop"
PIPELINE = "the gateway's pipeline (other llm_proxy)"
REST = "the rest"
WAITING = "waiting"

# In the order the report lists them.
ORDER = (HTTP, ADMISSION, LITELLM, AFTER_RESPONSE, LOGGING, EVENT_LOOP, PIPELINE, REST)

# Path marker -> component; the first match wins, so our own modules come before the
# catch-all `/llm_proxy/`, and litellm before the standard library's `/logging/`.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("/llm_proxy/http/", HTTP),
    ("/llm_proxy/pipeline/validate.py", HTTP),
    ("/llm_proxy/pipeline/api_params.py", HTTP),
    ("/llm_proxy/json_bodies.py", HTTP),
    ("/uvicorn/", HTTP),
    ("/starlette/", HTTP),
    ("/fastapi/", HTTP),
    ("/llm_proxy/pipeline/admit.py", ADMISSION),
    ("/llm_proxy/access/", ADMISSION),
    ("/llm_proxy/store/", AFTER_RESPONSE),
    ("/llm_proxy/after_response.py", AFTER_RESPONSE),
    # The usage item and its rollups, made from the record for the write.
    ("/llm_proxy/accounting/usage.py", AFTER_RESPONSE),
    ("/llm_proxy/accounting/rollups.py", AFTER_RESPONSE),
    ("/llm_proxy/accounting/totals.py", AFTER_RESPONSE),
    ("/botocore/", AFTER_RESPONSE),
    ("/boto3/", AFTER_RESPONSE),
    ("/urllib3/", AFTER_RESPONSE),
    ("/llm_proxy/logs.py", LOGGING),
    ("/llm_proxy/accounting/metrics.py", LOGGING),
    ("/aws_lambda_powertools/", LOGGING),
    ("/llm_proxy/", PIPELINE),
    ("/functions/api/", PIPELINE),
    ("/litellm/", LITELLM),
    ("/openai/", LITELLM),
    ("/httpx/", LITELLM),
    ("/httpcore/", LITELLM),
    ("/aiohttp/", LITELLM),
    ("/yarl/", LITELLM),
    ("/multidict/", LITELLM),
    ("/tiktoken/", LITELLM),
    # The standard library's logging: whoever calls it is logging (litellm's debug lines too).
    ("/logging/", LOGGING),
    ("/asyncio/", EVENT_LOOP),
)
# Builtins that wait rather than work: the event loop's poll, idle threads.
# A blocking socket read is a wait for the other side's answer (boto3 waiting for DynamoDB).
WAITS = ("'poll' of", "acquire", "time.sleep", "'select' of", "'recv_into' of")
# Python functions that wait: the loop's select around its poll, and a worker thread waking the
# loop (call_soon_threadsafe). cProfile follows every thread at once (Python 3.12) on one
# stack, so these are also charged the time the other threads run meanwhile.
WAIT_CALLS = (
    ("/selectors.py", "select"),
    ("asyncio/selector_events.py", "_write_to_self"),
)

Key = tuple[str, int, str]
Stats = Mapping[Key, tuple[int, int, float, float, Mapping[Key, Any]]]


def component(key: Key) -> str | None:
    """The component a function belongs to; None for a helper (counted to its callers)."""
    filename, _, function = key
    if filename == "~":
        return WAITING if any(word in function for word in WAITS) else None
    if any(filename.endswith(path) and function == name for path, name in WAIT_CALLS):
        return WAITING
    for marker, name in COMPONENTS:
        if marker in filename:
            return name
    return None


def attribute(stats: Stats) -> dict[str, float]:
    """Self time in seconds by component; a helper's time goes to the components that called
    it, in proportion to the time each call edge took; with no caller that has one, to REST."""

    @cache
    def owners(key: Key, depth: int = 0) -> tuple[tuple[str, float], ...]:
        own = component(key)
        if own is not None:
            return ((own, 1.0),)
        callers = stats[key][4] if key in stats else {}
        total = sum(edge[3] for edge in callers.values())
        if depth > 12 or not callers or total <= 0:
            return ((REST, 1.0),)
        shares: dict[str, float] = defaultdict(float)
        for caller, edge in callers.items():
            for owner, share in owners(caller, depth + 1):
                shares[owner] += share * edge[3] / total
        return tuple(shares.items())

    by_component: dict[str, float] = defaultdict(float)
    for key, (_, _, self_time, _, _) in stats.items():
        for owner, share in owners(key):
            by_component[owner] += self_time * share
    return dict(by_component)


def table(columns: Mapping[str, tuple[Stats, int]]) -> list[str]:
    """One row per component, one column per profile (its stats and the requests or records
    it covers): ms per request and share of the working time; waiting left out."""
    split = {name: attribute(stats) for name, (stats, _) in columns.items()}
    width = max(len(name) for name in ORDER) + 2
    cell = max(22, *(len(name) + 2 for name in columns))
    lines = [f"  {'':<{width}}" + "".join(f"{name:>{cell}}" for name in columns)]

    def row(label: str, values: list[tuple[float, float]]) -> str:
        cells = "".join(f"{f'{ms:.2f} ms {share:5.1f}%':>{cell}}" for ms, share in values)
        return f"  {label:<{width}}{cells}"

    working = {
        name: sum(value for part, value in parts.items() if part != WAITING)
        for name, parts in split.items()
    }
    for part in ORDER:
        values = []
        for name, (_, count) in columns.items():
            value = split[name].get(part, 0.0)
            share = value / working[name] * 100 if working[name] else 0.0
            values.append((value * 1000 / count, share))
        lines.append(row(part, values))
    totals = [(working[name] * 1000 / count, 100.0) for name, (_, count) in columns.items()]
    lines.append(row("total", totals))
    return lines
