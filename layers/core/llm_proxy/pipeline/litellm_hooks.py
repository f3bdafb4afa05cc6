"""The gateway's hooks into litellm, in one place. litellm calls them while its Router serves a
request; they read what the pipeline decided about that request from its scope, which the
provider call sets for its duration (`request_scope`):

- the pre-call check, for the deployment the Router picked, before the call: the deployment's
  own rpm/tpm counters, taken under the request's admission; over them, a RateLimitError moves
  the Router to another deployment or a fallback;
- the deployment filter, before each pick: a deployment this request already tried is left out
  while another of its group is left (litellm's retries may pick a failed one again, and a
  stream that fails before its first chunk is retried by the provider call itself);
- the deployment hook, once the deployment is picked, with the call's arguments: Anthropic
  deployments get what only they understand (`anthropic_native`), the others never see it;
- the fallback check, awaited by the Router before each fallback to another model group: a
  key's model list holds on every deployment a request reaches.

litellm keeps its callbacks process-wide: `register` adds the hooks once per process, and the
Router takes the fallback check when it is built (`model_router.build_router`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from llm_proxy.access.key_record import matches_any
from llm_proxy.access.limits import Admission
from llm_proxy.pipeline.anthropic_native import NativeParts, for_deployment


@dataclass
class Permission:
    """The model groups a request may be served by: in every one of the lists (none: any); the
    fallbacks it skipped are noted."""

    groups: list[frozenset[str]]
    skipped: list[str] = field(default_factory=list)

    def allows(self, group: str) -> bool:
        return all(matches_any(group, names) for names in self.groups)


@dataclass(frozen=True)
class RequestScope:
    """What the hooks need to know about the request being served."""

    admission: Admission | None
    permission: Permission
    native: NativeParts | None = None
    # The deployments this request has been sent to, in order: each one before the last failed.
    tried: list[str] = field(default_factory=list)


_SCOPE: ContextVar[RequestScope | None] = ContextVar("llm_proxy_request_scope", default=None)


@contextmanager
def request_scope(scope: RequestScope) -> Iterator[RequestScope]:
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


class GatewayHooks(CustomLogger):
    async def async_pre_call_check(
        self, deployment: dict[str, Any], parent_otel_span: Any = None
    ) -> dict[str, Any] | None:
        scope = _SCOPE.get()
        admission = scope.admission if scope is not None else None
        deployment_id = _id_of(deployment)
        if scope is not None:
            scope.tried.append(deployment_id)
        limits = admission.deployment_limits.get(deployment_id) if admission else None
        if admission is None or limits is None:
            return None
        item = await asyncio.to_thread(
            admission.counters.admit_deployment,
            deployment_id,
            limits,
            admission.reservation.tokens,
        )
        if limits.tpm:
            admission.deployment_items[deployment_id] = item
        return None

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[Any],
        messages: Any,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[Any]:
        scope = _SCOPE.get()
        if scope is None or not scope.tried:
            return healthy_deployments
        untried = [d for d in healthy_deployments if _id_of(d) not in scope.tried]
        return untried or healthy_deployments

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        scope = _SCOPE.get()
        if scope is None or scope.native is None:
            return None
        return for_deployment(kwargs, scope.native)

    async def fallback_allowed(
        self, *, model: str, request_kwargs: Mapping[str, object], ctx: Any
    ) -> bool:
        scope = _SCOPE.get()
        if scope is None or scope.permission.allows(model):
            return True
        scope.permission.skipped.append(model)
        return False


def _id_of(deployment: Mapping[str, Any]) -> str:
    return str((deployment.get("model_info") or {}).get("id"))


HOOKS = GatewayHooks()


def register() -> None:
    """Once per process: litellm keeps its callbacks process-wide."""
    if HOOKS not in litellm.callbacks:
        litellm.callbacks.append(HOOKS)
