"""Loaded at start-up by a gateway the ablation bench starts with this directory on its
PYTHONPATH: skips the litellm steps named in LLM_PROXY_BENCH_SKIP, to measure what each costs.
Never on the path of anything but that bench's gateways."""

from __future__ import annotations

import os
from typing import Any

SKIP = {name for name in os.environ.get("LLM_PROXY_BENCH_SKIP", "").split(",") if name}

if SKIP:
    from litellm.litellm_core_utils.litellm_logging import Logging

    def _nothing(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    async def _nothing_async(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    if "litellm-cost" in SKIP:
        # The gateway prices each request itself; litellm's cost goes unused.
        Logging._response_cost_calculator = _nothing
        Logging.response_cost_calculator = _nothing  # type: ignore[method-assign]
        Logging._response_cost_calculator_async = _nothing_async  # type: ignore[method-assign]
    if "litellm-success-logging" in SKIP:
        # The standard logging payload and the callbacks, which the gateway does not use.
        Logging.async_success_handler = _nothing_async  # type: ignore[method-assign]
        Logging.success_handler = _nothing  # type: ignore[method-assign]
        Logging.handle_sync_success_callbacks_for_async_calls = _nothing  # type: ignore[method-assign]
