"""Session affinity: the requests of one agent session go to one deployment of their model
group, so the provider's prompt cache, which only the deployment that saw a prefix holds, keeps
hitting.

The session is named by what the agent sends (`session_of`). The deployment is chosen by
rendezvous (highest-random-weight) hashing of (caller key, model group, session id) over the
group's deployments the Router still offers: every Lambda container makes the same choice with
no shared state, where LiteLLM's own `session_affinity` check keeps its pins in one process's
memory. A deployment the Router leaves out (cooling down) or that already failed this request
is out of the draw, so the session goes on to the next deployment in its own order: affinity
never fails or delays a request.

Configured with LiteLLM's names in `router_settings`: `optional_pre_call_checks:
["session_affinity"]` (every group) or `model_group_affinity_config: {group:
["session_affinity"]}` (listed groups). The gateway makes the choice itself, so the check is
taken out of what the litellm Router gets (`for_router`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_proxy.pipeline.request import GatewayRequest

CHECK = "session_affinity"
# Claude Code's header, read first on every endpoint.
CLAUDE_CODE_HEADER = "x-claude-code-session-id"
# Read after the body's fields: LiteLLM's header, Codex's headers.
OTHER_HEADERS = ("x-litellm-session-id", "session_id", "session-id")
# Where Claude Code's `metadata.user_id` names its session (`user_..._session_<id>`).
SESSION_MARKER = "_session_"
# The longest session id read; a longer value names no session.
MAX_SESSION_ID = 512
TOP = float(2**64)


@dataclass(frozen=True)
class AffinitySettings:
    """Which model groups keep sessions on one deployment."""

    every_group: bool = False
    # model_group_affinity_config: a listed group follows its own list.
    groups: Mapping[str, bool] | None = None

    @classmethod
    def from_router_settings(cls, settings: Mapping[str, Any]) -> AffinitySettings:
        checks = settings.get("optional_pre_call_checks") or ()
        per_group = settings.get("model_group_affinity_config") or {}
        return cls(
            every_group=CHECK in checks,
            groups={str(group): CHECK in (flags or ()) for group, flags in per_group.items()},
        )

    @property
    def enabled(self) -> bool:
        return self.every_group or any((self.groups or {}).values())

    def applies_to(self, group: str) -> bool:
        groups = self.groups or {}
        return groups.get(group, self.every_group)


@dataclass(frozen=True)
class Session:
    """A request's session, as the deployment filter needs it."""

    key_id: str
    session_id: str
    settings: AffinitySettings

    def pick(self, group: str, deployments: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The session's deployment among `deployments`: the highest weight by rendezvous
        hashing (scaled by the deployment's `weight`, as simple-shuffle weighs them)."""
        if not deployments:
            return None
        seed = f"{self.key_id}\0{group}\0{self.session_id}\0".encode()
        return max(deployments, key=lambda deployment: _score(seed, deployment))

    def narrow(
        self, group: str, deployments: list[dict[str, Any]], failed: Collection[str]
    ) -> list[dict[str, Any]]:
        """What the Router may pick from for this session: its deployment among those that
        have not failed this request; all of them where none is left, or affinity is off for
        the group."""
        if not self.settings.applies_to(group):
            return deployments
        chosen = self.pick(group, [d for d in deployments if deployment_id(d) not in failed])
        return deployments if chosen is None else [chosen]


def _score(seed: bytes, deployment: dict[str, Any]) -> float:
    digest = hashlib.sha256(seed + deployment_id(deployment).encode()).digest()
    # A uniform draw in (0, 1), then weight / -ln(draw): the highest wins, in proportion to
    # its weight.
    draw = (int.from_bytes(digest[:8], "big") + 0.5) / TOP
    return _weight(deployment) / -math.log(draw)


def _weight(deployment: dict[str, Any]) -> float:
    weight = (deployment.get("litellm_params") or {}).get("weight")
    try:
        value = float(weight) if weight is not None else 1.0
    except (TypeError, ValueError):
        return 1.0
    return value if value > 0 and math.isfinite(value) else 1.0


def deployment_id(deployment: Mapping[str, Any]) -> str:
    return str((deployment.get("model_info") or {}).get("id"))


def session_of(
    request: GatewayRequest, headers: Mapping[str, str], settings: AffinitySettings
) -> Session | None:
    """The request's session where affinity is on and the request names one."""
    if not settings.enabled or request.api.router_call is None:
        return None
    found = session_id(request.api.name, request.as_sent, headers)
    return None if found is None else Session(request.caller.key_id, found, settings)


def session_id(api: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The first one present: Claude Code's header; the body's `prompt_cache_key` (Codex's
    conversation id) and `metadata.session_id` (OpenAI's APIs); `user` (OpenAI's APIs) or the
    session in Claude Code's `metadata.user_id` (Messages); LiteLLM's and Codex's headers."""
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    openai_api = api in ("chat", "responses")
    candidates = [
        headers.get(CLAUDE_CODE_HEADER),
        body.get("prompt_cache_key") if openai_api else None,
        metadata.get("session_id") if openai_api else None,
        body.get("user") if api != "messages" else _claude_code_session(metadata.get("user_id")),
        *(headers.get(name) for name in OTHER_HEADERS),
    ]
    return next((value for value in candidates if _usable(value)), None)


def _claude_code_session(user_id: Any) -> str | None:
    """The session in Claude Code's `metadata.user_id`: `user_<hash>_account_<id>_session_<id>`,
    or (newer versions) a JSON object with `session_id`."""
    if isinstance(user_id, str) and user_id.startswith("{"):
        try:
            user_id = json.loads(user_id)
        except ValueError:
            return None
    if isinstance(user_id, Mapping):
        found = user_id.get("session_id")
        return found if isinstance(found, str) else None
    if not isinstance(user_id, str) or SESSION_MARKER not in user_id:
        return None
    return user_id.rsplit(SESSION_MARKER, 1)[1]


def _usable(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value.strip()) <= MAX_SESSION_ID


def for_router(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The Router's arguments without LiteLLM's own session check (the gateway chooses; the
    Router's in-memory pins would only disagree between containers). Its other checks stay."""
    kwargs = dict(kwargs)
    checks = kwargs.get("optional_pre_call_checks")
    if checks and CHECK in checks:
        kept = [check for check in checks if check != CHECK]
        if kept:
            kwargs["optional_pre_call_checks"] = kept
        else:
            kwargs.pop("optional_pre_call_checks")
    per_group = kwargs.get("model_group_affinity_config")
    if per_group:
        # A listed group keeps its (maybe empty) list: it still overrides the global checks.
        kwargs["model_group_affinity_config"] = {
            group: [flag for flag in flags or () if flag != CHECK]
            for group, flags in per_group.items()
        }
    return kwargs
