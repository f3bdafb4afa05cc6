"""The api function's parts, wired: settings, the config, the provider-keys secret, the stores
(virtual keys, counters, usage, cache), the router and the request pipeline.

The facade of the core: the HTTP layer imports nothing else from it but the errors and the
after-response work (a layout test holds it to that). Its vocabulary (`Caller`, `Inbound`,
`Answer`, `ApiName`) is re-exported here for that reason."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from llm_proxy.access.auth import (
    Caller,
    authenticate,
    check_master_key,
    is_master_key,
    presented_key,
)
from llm_proxy.access.jwt_auth import JwtAuth
from llm_proxy.access.key_admin import KeyAdmin
from llm_proxy.access.principal_store import PrincipalStore
from llm_proxy.access.team_admin import TeamAdmin, UserAdmin
from llm_proxy.access.virtual_keys import KeyStore
from llm_proxy.config import (
    ProxyConfig,
    apply_environment_variables,
    config_for_mode,
    secret_then_env,
)
from llm_proxy.errors import ProxyError
from llm_proxy.logs import logger, redactor
from llm_proxy.model_info import model_info
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.meter import Metering
from llm_proxy.pipeline.model_router import CurrentRouter, ModelRouter, configure_litellm
from llm_proxy.pipeline.pipeline import Pipeline, Stores
from llm_proxy.pipeline.request import Answer, Inbound
from llm_proxy.pipeline.response_items import (
    ItemsQuery,
    cancelled,
    check_response_id,
    input_items,
)
from llm_proxy.pipeline.responses import spec_response
from llm_proxy.provider_keys import ProviderKeys
from llm_proxy.readiness import Readiness
from llm_proxy.reports.render import Rendered, check_format, rendered
from llm_proxy.reports.report import spend
from llm_proxy.settings import ApiSettings
from llm_proxy.store.answer_cache import AnswerCache
from llm_proxy.store.counters import CountersTable
from llm_proxy.store.stored_responses import StoredResponse, StoredResponses
from llm_proxy.store.usage import UsageTable

__all__ = ["Answer", "ApiName", "Caller", "Gateway", "Inbound", "ItemsQuery"]

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
        self.principals = PrincipalStore(self.virtual_keys.table)
        self.jwt = JwtAuth(config.general_settings, settings)
        self.stores = stores or Stores(
            counters=CountersTable(settings.counters_table),
            usage=UsageTable(
                settings.usage_table,
                settings.usage_retention_days,
                rollups_table=settings.rollups_table,
                dead_letter_queue=settings.usage_dead_letter_queue,
                quarantine_queue=settings.usage_quarantine_queue,
            ),
            cache=AnswerCache(settings.cache_table),
            responses=StoredResponses(
                settings.responses_table,
                settings.responses_retention_days,
                bucket=settings.responses_bucket,
            ),
        )
        apply_environment_variables(config)
        configure_litellm(config, detailed_debug=settings.detailed_debug)
        self.routers = CurrentRouter(config, self.provider_keys, settings.ollama_api_base)
        self.pipeline = Pipeline(settings, config, self.routers, self.stores)
        self.key_admin = KeyAdmin(self.virtual_keys, self.stores.counters, self.principals)
        self.team_admin = TeamAdmin(self.key_admin, self.principals)
        self.user_admin = UserAdmin(self.key_admin, self.principals, self.team_admin)
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
        are checked on the loop. With JWT auth on, a JWT is a developer's token: verified (the
        JWKS and the user read in a worker thread), the request is made as its user."""
        master, key = self.master_key(), presented_key(headers)
        if key and self.jwt.accepts(key) and not is_master_key(key, master):
            claimed = headers.get("x-agent") or None
            return await asyncio.to_thread(self.jwt.caller, key, self.principals, claimed)
        lookup = self.virtual_keys.authenticate
        if key and not self.virtual_keys.is_cached(key) and not is_master_key(key, master):
            caller = await asyncio.to_thread(authenticate, headers, master, lookup)
        else:
            caller = authenticate(headers, master, lookup)
        return await self.with_owners(caller)

    async def with_owners(self, caller: Caller) -> Caller:
        """The caller with its key's team and user (read in a worker thread on a miss)."""
        key = caller.key
        if key is None or not (key.team_id or key.user_id):
            return caller
        principals, named = self.principals, (key.team_id, key.user_id)
        if principals.is_cached(*named):
            owners = principals.owners(*named)
        else:
            owners = await asyncio.to_thread(principals.owners, *named)
        return replace(caller, team=owners.team, user=owners.user)

    async def serve(self, api: ApiName, inbound: Inbound) -> Answer:
        """An API request through the pipeline: its answer, or a ProxyError."""
        return await self.pipeline.run(APIS[api], inbound)

    def models_for(self, caller: Caller) -> list[str]:
        """The models the caller may ask for."""
        names = self.pipeline.model_names()
        return [name for name in names if caller.allows(name)]

    def model_info_for(self, caller: Caller) -> list[dict[str, Any]]:
        """LiteLLM's model info of the models the caller may use."""
        return model_info(self.pipeline.routers.get(), self.models_for(caller))

    async def stored_response(self, response_id: str, caller: Caller) -> dict[str, Any]:
        """A stored response of the Responses API, the caller's own (404 otherwise)."""
        stored = await asyncio.to_thread(self._stored, response_id, caller)
        return spec_response(stored.response, {})

    async def delete_stored_response(self, response_id: str, caller: Caller) -> None:
        check_response_id(response_id)
        await asyncio.to_thread(self.stores.responses.delete, response_id, caller.key_id)

    async def cancel_stored_response(self, response_id: str, caller: Caller) -> dict[str, Any]:
        """OpenAI's cancel of the caller's stored response (404 for another key's)."""
        stored = await asyncio.to_thread(self._stored, response_id, caller)
        return spec_response(cancelled(stored), {})

    async def stored_input_items(
        self, response_id: str, caller: Caller, query: ItemsQuery
    ) -> dict[str, Any]:
        """A page of the input items of the caller's stored response."""
        stored = await asyncio.to_thread(self._stored, response_id, caller)
        return input_items(stored, query)

    def _stored(self, response_id: str, caller: Caller) -> StoredResponse:
        check_response_id(response_id)
        return self.stores.responses.get(response_id, caller.key_id)

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    def meter_in_extension(self) -> None:
        """Lambda with the after-response extension: the usage item, the settlement and the
        cache write all wait for the response."""
        self.pipeline.meter.metering = Metering.ALL_AFTER_RESPONSE

    # -- operations --------------------------------------------------------------------------

    def readiness(self) -> tuple[int, dict[str, Any]]:
        return self._readiness.answer()

    async def spend_report(self, start: str | None, end: str | None, output: str) -> Rendered:
        """The rollups' report of a period (yesterday by default), as `output` asks."""
        check_format(output)
        report = await asyncio.to_thread(spend, start, end, self.settings)
        return rendered(report, output)


def look_up_models(router: ModelRouter) -> None:
    """litellm's model lookups for every group, made now rather than by a first request:
    building a router registers its prices with litellm, which empties its lookup caches."""
    for group in {str(d.get("model_name")) for d in router.deployments.values()}:
        router.max_output_tokens(group)
