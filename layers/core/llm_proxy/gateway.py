"""The api function's parts, wired: settings, the config, the provider-keys secret, the stores
(virtual keys, counters, usage, cache), the router and the request pipeline. The HTTP layer
and the SnapStart hooks use this facade only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_proxy.access.auth import (
    Caller,
    authenticate,
    check_master_key,
    is_master_key,
    presented_key,
)
from llm_proxy.access.key_admin import KeyAdmin
from llm_proxy.access.limits import Limiter
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.accounting.usage import UsageStore
from llm_proxy.config import (
    ProxyConfig,
    apply_environment_variables,
    config_for_mode,
    secret_then_env,
)
from llm_proxy.errors import ProxyError
from llm_proxy.logs import logger, redactor
from llm_proxy.pipeline.anthropic_native import NativeParts
from llm_proxy.pipeline.cache import ResponseCache
from llm_proxy.pipeline.meter import AfterResponse
from llm_proxy.pipeline.pipeline import Pipeline, Stores
from llm_proxy.pipeline.request import Api, GatewayRequest
from llm_proxy.pipeline.router import ModelRouter, RouterCache, configure_litellm
from llm_proxy.pipeline.stored_responses import ResponseStore
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.readiness import Readiness
from llm_proxy.reports.report import Report, spend
from llm_proxy.settings import ApiSettings

DEFAULT_MASTER_KEY_REFERENCE = "os.environ/LLM_PROXY__MASTER_KEY"


class Gateway:
    def __init__(
        self,
        settings: ApiSettings,
        config: ProxyConfig,
        provider_keys: ProviderKeys | None = None,
        *,
        virtual_keys: KeyStore | None = None,
        stores: Stores | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.provider_keys = provider_keys or ProviderKeys(
            settings.secret_id,
            settings.secret_ttl_s,
            max_staleness_s=settings.secret_max_staleness_s,
        )
        self.virtual_keys = virtual_keys or KeyStore(settings.keys_table)
        self.stores = stores or Stores(
            limiter=Limiter(settings.counters_table),
            usage=UsageStore(
                settings.usage_table,
                settings.usage_retention_days,
                rollups_table=settings.rollups_table,
                dead_letter_queue=settings.usage_dead_letter_queue,
                quarantine_queue=settings.usage_quarantine_queue,
            ),
            cache=ResponseCache(settings.cache_table),
            responses=ResponseStore(settings.responses_table, settings.responses_retention_days),
        )
        apply_environment_variables(config)
        configure_litellm(
            config,
            detailed_debug=settings.detailed_debug,
            limits=bool(self.stores.limiter.table_name),
        )
        self.routers = RouterCache(config, self.provider_keys, settings.ollama_api_base)
        self.pipeline = Pipeline(settings, config, self.routers, self.stores)
        self.key_admin = KeyAdmin(self.virtual_keys, self.stores.limiter)
        self._readiness = Readiness(settings, self.provider_keys, self.stores.usage)

    @classmethod
    def from_settings(cls, settings: ApiSettings, default_config: Path) -> Gateway:
        config = config_for_mode(
            settings.llm_mode,
            settings.config_path,
            default_config,
            ollama_api_base=settings.ollama_api_base,
            litellm_proxy_url=settings.litellm_proxy_url,
        )
        gateway = cls(settings, config)
        gateway.warm()
        return gateway

    # -- lifecycle ---------------------------------------------------------------------------

    def warm(self) -> None:
        """Build the router at init when the secret is reachable; otherwise on first request."""
        try:
            look_up_models(self.routers.get())
        except ProxyError as exc:
            logger.warning("router build deferred to the first request", extra={"reason": exc.code})

    @property
    def router_built(self) -> bool:
        return self.routers.built

    def model_router(self) -> ModelRouter:
        """The router as it serves now (built or rebuilt as the secret requires)."""
        return self.routers.get()

    def refresh_after_restore(self) -> None:
        """Forget the snapshot's secret and router; read the secret as it is now and build a
        router with new HTTP clients, or leave both to the first request if that fails."""
        self.provider_keys.reset()
        self.routers.rebuild()
        try:
            self.provider_keys.get(force=True)
            look_up_models(self.routers.get())
        except Exception as exc:  # the first request retries, and answers the error if it stays
            logger.warning("refresh after restore deferred", extra={"error": type(exc).__name__})

    # -- the request path ----------------------------------------------------------------------

    def master_key(self) -> str:
        reference = self.config.general_settings.master_key or DEFAULT_MASTER_KEY_REFERENCE
        if reference.startswith("os.environ/"):
            lookup = secret_then_env(self.provider_keys.get())
            value = lookup(reference.removeprefix("os.environ/"))
        else:
            value = reference
        redactor.register([value])
        return check_master_key(value, local=self.settings.is_local)

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The pipeline's first step: who is calling. A virtual key this container has not
        cached is read from the keys table in a worker thread; the master key and cached keys
        are checked on the loop."""
        master, key = self.master_key(), presented_key(headers)
        lookup = self.virtual_keys.authenticate
        if key and not self.virtual_keys.is_cached(key) and not is_master_key(key, master):
            return await asyncio.to_thread(authenticate, headers, master, lookup)
        return authenticate(headers, master, lookup)

    def request(
        self,
        endpoint: str,
        api: Api,
        caller: Caller,
        body: dict[str, Any],
        request_id: str,
        sent: dict[str, Any] | None = None,
        native: NativeParts | None = None,
    ) -> GatewayRequest:
        return self.pipeline.request(endpoint, api, caller, body, request_id, sent, native)

    async def run(self, request: GatewayRequest, after_response: AfterResponse | None) -> Any:
        return await self.pipeline.run(request, after_response)

    async def check(self, request: GatewayRequest) -> None:
        await self.pipeline.check(request)

    def model_names(self) -> list[str]:
        return self.pipeline.model_names()

    @property
    def stored_responses(self) -> ResponseStore:
        """The Responses API's stored responses (`GET`/`DELETE /v1/responses/{id}`)."""
        return self.stores.responses

    @property
    def cache_enabled(self) -> bool:
        return self.pipeline.cache_settings.enabled

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    @property
    def meter_after_response(self) -> bool:
        """Whether usage items are written after the response (see pipeline.meter.Meter)."""
        return self.pipeline.meter.write_after_response

    @meter_after_response.setter
    def meter_after_response(self, value: bool) -> None:
        self.pipeline.meter.write_after_response = value

    def meter_in_extension(self) -> None:
        """Lambda with the after-response extension: the usage item, the settlement and the
        cache write all wait for the response."""
        self.pipeline.meter.write_after_response = True
        self.pipeline.meter.settle_after_response = True

    # -- operations --------------------------------------------------------------------------

    def readiness(self) -> dict[str, str]:
        return self._readiness.checks()

    def spend_report(self, start: str | None, end: str | None) -> Report:
        return spend(start, end, self.settings)


def look_up_models(router: ModelRouter) -> None:
    """litellm's model lookups for every group, made now rather than by a first request:
    building a router registers its prices with litellm, which empties its lookup caches."""
    for group in {str(d.get("model_name")) for d in router.deployments.values()}:
        router.max_output_tokens(group)
