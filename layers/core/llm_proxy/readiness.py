"""`/health/readiness`: the state of each dependency, as an anonymous caller may see it."""

from __future__ import annotations

import time
from typing import Any

from llm_proxy.errors import ProxyError
from llm_proxy.logs import logger
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.settings import SharedSettings
from llm_proxy.store.usage import UsageTable

NOT_CONFIGURED = "not configured"
UNREACHABLE = "unreachable"
DEGRADED = "degraded"
# The route needs no key: at most one probe of AWS per this many seconds in a container.
READINESS_TTL_S = 30.0


class Readiness:
    def __init__(self, settings: SharedSettings, provider_keys: ProviderKeys, usage: UsageTable):
        self.settings = settings
        self.provider_keys = provider_keys
        self.usage = usage
        self._last: tuple[float, dict[str, str]] | None = None

    def checks(self) -> dict[str, str]:
        """Each dependency: ok, not configured, degraded (the last good secret serves while
        Secrets Manager is unreachable) or unreachable. AWS error codes go to the log only."""
        now = time.monotonic()
        if self._last is None or now - self._last[0] > READINESS_TTL_S:
            self._last = (now, self._probe())
        return dict(self._last[1])

    def _probe(self) -> dict[str, str]:
        checks = {"config": "ok", "secret": NOT_CONFIGURED, "usage_table": NOT_CONFIGURED}
        if self.settings.secret_id:
            try:
                self.provider_keys.get(force=True)
                checks["secret"] = DEGRADED if self.provider_keys.stale else "ok"
            except ProxyError as exc:
                checks["secret"] = UNREACHABLE
                logger.warning("readiness: secret", extra={"reason": exc.message})
        if self.settings.usage_table:
            try:
                self.usage.ping()
                checks["usage_table"] = "ok"
            except Exception as exc:
                checks["usage_table"] = UNREACHABLE
                logger.warning("readiness: usage table", extra={"error": type(exc).__name__})
        return checks

    def answer(self) -> tuple[int, dict[str, Any]]:
        """`/health/readiness`'s status and body: 503 while a dependency is unreachable."""
        checks = self.checks()
        if any(value == UNREACHABLE for value in checks.values()):
            return 503, {"status": "not ready", "checks": checks}
        degraded = any(value == DEGRADED for value in checks.values())
        return 200, {"status": "degraded" if degraded else "ready", "checks": checks}
