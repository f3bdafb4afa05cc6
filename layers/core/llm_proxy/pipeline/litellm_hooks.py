"""The gateway's hooks into litellm, in one place. litellm calls them while its Router serves a
request; they read what the pipeline decided about that request from its scope, which the
provider call sets for its duration (`request_scope`):

- the pre-call check, for the deployment the Router picked, before the call: the deployment's
  own rpm/tpm counters, taken under the request's admission; over them, a RateLimitError moves
  the Router to another deployment or a fallback;
- the deployment filter, before each pick among a group's deployments (those not cooling
  down): in a group of several, one this request already tried (and so saw fail) is left out,
  so a retry goes to another and, once each has failed, the request goes on to the fallbacks
  (litellm's retries would pick a failed one again); a lone deployment is retried as
  `num_retries` says; of what is left, a request of an agent session gets its session's
  deployment (`session_affinity`);
- the deployment hook, once the deployment is picked, with the call's arguments: Anthropic
  deployments get what only they understand (`anthropic_native`), the others never see it;
- the fallback check, awaited by the Router before each fallback to another model group: a
  key's model list holds on every deployment a request reaches, and a stream the client has
  begun to receive is never finished by another deployment.

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
from litellm.litellm_core_utils.routing_common_utils import deployment_ids_failed_in_request

from llm_proxy.access.key_record import matches_any
from llm_proxy.access.limits import Admission
from llm_proxy.pipeline.anthropic_native import NativeParts, for_deployment
from llm_proxy.pipeline.session_affinity import Session, deployment_id


@dataclass
class Permission:
    """The model groups a request may be served by: in every one of the lists (none: any); the
    fallbacks it skipped are noted."""

    groups: list[frozenset[str]]
    skipped: list[str] = field(default_factory=list)

    def allows(self, group: str) -> bool:
        return all(matches_any(group, names) for names in self.groups)


@dataclass
class Attempts:
    """The deployments a request has been sent to, in order (each one before the last failed),
    and whether its stream has begun to reach the client: a fallback then would splice another
    answer into it (litellm's Responses streams fall back mid-stream on their own), so none is
    taken unless `enable_mid_stream_fallback_continuation` is on."""

    tried: list[str] = field(default_factory=list)
    answering: bool = False
    # The newest provider failure: what the request failed with when the Router finds no
    # deployment left to try (it would say "no deployments available").
    last_failure: Exception | None = None


@dataclass(frozen=True)
class RequestScope:
    """What the hooks need to know about the request being served."""

    admission: Admission | None
    permission: Permission
    native: NativeParts | None = None
    attempts: Attempts = field(default_factory=Attempts)
    # The request's agent session (session affinity).
    session: Session | None = None


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
        picked = deployment_id(deployment)
        if scope is not None:
            scope.attempts.tried.append(picked)
        limits = admission.deployment_limits.get(picked) if admission else None
        if admission is None or limits is None:
            return None
        item = await asyncio.to_thread(
            admission.counters.admit_deployment, picked, limits, admission.reservation.tokens
        )
        if limits.tpm:
            admission.deployment_items[picked] = item
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
        if scope is None:
            return healthy_deployments
        left = healthy_deployments
        tried = scope.attempts.tried
        # A lone deployment is retried as num_retries says.
        if tried and len(healthy_deployments) > 1:
            left = [d for d in healthy_deployments if deployment_id(d) not in tried]
        if scope.session is None:
            return left
        return scope.session.narrow(
            model, left, deployment_ids_failed_in_request(request_kwargs or {})
        )

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        scope = _SCOPE.get()
        failure = kwargs.get("exception")
        if scope is not None and isinstance(failure, Exception):
            scope.attempts.last_failure = failure

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
        if scope is None:
            return True
        if scope.attempts.answering:
            return False
        if scope.permission.allows(model):
            return True
        scope.permission.skipped.append(model)
        return False


HOOKS = GatewayHooks()


def register() -> None:
    """Once per process: litellm keeps its callbacks process-wide."""
    if HOOKS not in litellm.callbacks:
        litellm.callbacks.append(HOOKS)
