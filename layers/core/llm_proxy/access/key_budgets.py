"""A key's per-model budgets, budget windows and budget fallbacks as the key API takes them
(LiteLLM's `model_max_budget`, `budget_limits`, `budget_fallbacks`): checked field by field
and stored in one shape, so that admission (`access.budgets.plan_for`) reads them as they are.

A per-model budget is stored as `{"budget_limit": USD, "time_period": "1d"}`; LiteLLM's
`BudgetConfig` names (`max_budget`, `budget_duration`) are accepted for them."""

from __future__ import annotations

import math
from typing import Any

from llm_proxy.access.key_record import duration_s
from llm_proxy.errors import INVALID_VALUE

# Far above any real use; they bound the key's item (400 KB at most) and each admission.
MAX_MODEL_BUDGETS = 50
MAX_BUDGET_WINDOWS = 10
MAX_FALLBACK_GROUPS = 50
# As many fallbacks as a request's own `fallbacks` may list (`pipeline.request_options`).
MAX_BUDGET_FALLBACKS = 5
MAX_MODEL_NAME = 256
# As a key's max_budget is bounded (`http.schemas.MAX_BUDGET_USD`).
MAX_BUDGET_USD = 1_000_000_000
# LiteLLM's names inside a per-model budget -> the stored ones.
MODEL_BUDGET_NAMES = {
    "budget_limit": "budget_limit",
    "max_budget": "budget_limit",
    "time_period": "time_period",
    "budget_duration": "time_period",
}
WINDOW_NAMES = ("budget_duration", "max_budget")


def normalise(fields: dict[str, Any]) -> None:
    """The three fields in `fields`, checked and in their stored shape (null: none)."""
    if fields.get("model_max_budget") is not None:
        fields["model_max_budget"] = model_max_budget(fields["model_max_budget"])
    if fields.get("budget_limits") is not None:
        fields["budget_limits"] = budget_limits(fields["budget_limits"])
    if fields.get("budget_fallbacks") is not None:
        fields["budget_fallbacks"] = budget_fallbacks(fields["budget_fallbacks"])


def model_max_budget(value: Any) -> dict[str, dict[str, Any]]:
    """{group: {"budget_limit": USD, "time_period": duration (optional: for ever)}}."""
    field = "model_max_budget"
    groups = _mapping(value, field, MAX_MODEL_BUDGETS, "model groups")
    stored: dict[str, dict[str, Any]] = {}
    for group, budget in groups.items():
        where = f"{field}.{group}"
        if not isinstance(budget, dict):
            raise INVALID_VALUE(
                f"'{where}' must be an object such as "
                '{"budget_limit": 10.0, "time_period": "30d"}.',
                param=where,
            )
        entry: dict[str, Any] = {}
        for name, setting in budget.items():
            stored_name = MODEL_BUDGET_NAMES.get(name)
            if stored_name is None:
                raise INVALID_VALUE(
                    f"'{where}.{name}' is not a per-model budget setting: a per-model budget "
                    "takes budget_limit and time_period (or LiteLLM's max_budget and "
                    "budget_duration).",
                    param=f"{where}.{name}",
                )
            if setting is None:
                continue
            if stored_name in entry:
                raise INVALID_VALUE(
                    f"'{where}' names its {stored_name} twice (LiteLLM's name and ours): give one.",
                    param=f"{where}.{name}",
                )
            if stored_name == "budget_limit":
                entry[stored_name] = _usd(setting, f"{where}.{name}")
            else:
                entry[stored_name] = _duration(setting, f"{where}.{name}")
        if "budget_limit" not in entry:
            raise INVALID_VALUE(
                f"'{where}.budget_limit' is required: the most the key may spend on '{group}' "
                "(USD) in each time_period.",
                param=f"{where}.budget_limit",
            )
        stored[group] = entry
    return stored


def budget_limits(value: Any) -> list[dict[str, Any]]:
    """[{"budget_duration": duration, "max_budget": USD}, ...], one window per duration."""
    field = "budget_limits"
    if not isinstance(value, list):
        raise INVALID_VALUE(
            f"'{field}' must be a list such as "
            '[{"budget_duration": "1d", "max_budget": 5.0}, '
            '{"budget_duration": "30d", "max_budget": 50.0}].',
            param=field,
        )
    if len(value) > MAX_BUDGET_WINDOWS:
        raise INVALID_VALUE(
            f"'{field}' may hold at most {MAX_BUDGET_WINDOWS} windows; got {len(value)}.",
            param=field,
        )
    stored: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    for index, window in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(window, dict):
            raise INVALID_VALUE(
                f"'{where}' must be an object with budget_duration and max_budget.", param=where
            )
        for name in window:
            if name not in WINDOW_NAMES:
                raise INVALID_VALUE(
                    f"'{where}.{name}' is not a budget window setting: a window takes "
                    "budget_duration and max_budget.",
                    param=f"{where}.{name}",
                )
        for name in WINDOW_NAMES:
            if window.get(name) is None:
                raise INVALID_VALUE(f"'{where}.{name}' is required.", param=f"{where}.{name}")
        duration = _duration(window["budget_duration"], f"{where}.budget_duration")
        seconds = duration_s(duration, f"{where}.budget_duration")
        if seconds in seen:
            # Each window is one counter, by its length: two of a length would be one budget.
            raise INVALID_VALUE(
                f"'{where}.budget_duration' ({duration!r}) is the same window as "
                f"{seen[seconds]!r}: give each window a different duration.",
                param=f"{where}.budget_duration",
            )
        seen[seconds] = duration
        stored.append(
            {
                "budget_duration": duration,
                "max_budget": _usd(window["max_budget"], f"{where}.max_budget"),
            }
        )
    return stored


def budget_fallbacks(value: Any) -> dict[str, list[str]]:
    """{group: [fallback group, ...]}: the groups tried, in order, when the group's per-model
    budget is spent."""
    field = "budget_fallbacks"
    groups = _mapping(value, field, MAX_FALLBACK_GROUPS, "model groups")
    stored: dict[str, list[str]] = {}
    for group, choices in groups.items():
        where = f"{field}.{group}"
        if not isinstance(choices, list) or not choices:
            raise INVALID_VALUE(
                f"'{where}' must be a non-empty list of model groups, tried in order.",
                param=where,
            )
        if len(choices) > MAX_BUDGET_FALLBACKS:
            raise INVALID_VALUE(
                f"'{where}' may list at most {MAX_BUDGET_FALLBACKS} model groups; got "
                f"{len(choices)}.",
                param=where,
            )
        for choice in choices:
            _model_name(choice, where)
            if choice == group:
                raise INVALID_VALUE(
                    f"'{where}' lists '{group}' itself: a fallback must be another group.",
                    param=where,
                )
        stored[group] = list(choices)
    return stored


def _mapping(value: Any, field: str, most: int, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise INVALID_VALUE(f"'{field}' must be an object keyed by model group.", param=field)
    if len(value) > most:
        raise INVALID_VALUE(
            f"'{field}' may name at most {most} {what}; got {len(value)}.", param=field
        )
    for group in value:
        _model_name(group, field)
    return value


def _model_name(name: Any, field: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_MODEL_NAME:
        raise INVALID_VALUE(
            f"'{field}' must name model groups by their names (1 to {MAX_MODEL_NAME} "
            f"characters); got {str(name)[:40]!r}.",
            param=field,
        )


def _usd(value: Any, field: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_BUDGET_USD
    ):
        raise INVALID_VALUE(
            f"'{field}' must be a number of USD from 0 to {MAX_BUDGET_USD}; got "
            f"{str(value)[:40]!r}.",
            param=field,
        )
    return float(value)


def _duration(value: Any, field: str) -> str:
    """A duration as LiteLLM writes them ("30s", "1h", "30d"), checked (400 invalid_duration)."""
    duration_s(value if isinstance(value, str) else repr(value), field)
    return str(value).strip()
