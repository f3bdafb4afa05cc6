"""A virtual key's record: its settings and limits as stored (`VirtualKey`), how its secret
is hashed, and LiteLLM's durations."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llm_proxy.errors import INVALID_DURATION
from llm_proxy.store.values import number, plain

# LiteLLM's durations: "30s", "15m", "1h", "7d"; ten years at most.
DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd])\s*$")
MAX_DURATION_S = 3650 * 86_400
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# Stored with a key but never shown: which secrets open it.
SECRET_FIELDS = frozenset({"secret", "previous_secret", "previous_secret_until"})
# Free-form maps and lists, kept as JSON text: any key or number survives as sent.
JSON_FIELDS = ("metadata", "aliases", "model_max_budget", "budget_fallbacks", "budget_limits")


def matches_any(model: str, names: Iterable[str]) -> bool:
    """Whether `model` is one of `names` or inside a wildcard among them, as LiteLLM's key
    model lists have them (`*`, `openai/*`, `bedrock/anthropic.*`): `*` stands for any run of
    characters, nothing else is special."""
    for name in names:
        if model == name:
            return True
        if "*" in name:
            pattern = ".*".join(re.escape(part) for part in name.split("*"))
            if re.fullmatch(pattern, model):
                return True
    return False


def lists_every_model(models: list[str]) -> bool:
    """An empty list, LiteLLM's "all-proxy-models" or a bare "*" allows every model."""
    return not models or "all-proxy-models" in models or "*" in models


def models_allow(models: list[str], model: str) -> bool:
    """Whether a model list (a key's, a team's, a user's) allows `model`."""
    return lists_every_model(models) or matches_any(model, models)


def token_of(raw_key: str) -> str:
    """The stored identity of a key (LiteLLM's `token`)."""
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def duration_s(value: str, field_name: str) -> int:
    match = DURATION.match(value)
    seconds = int(match.group(1)) * SECONDS_PER_UNIT[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_DURATION_S:
        raise INVALID_DURATION(
            f"'{field_name}' must be a duration such as '30s', '15m', '1h' or '30d', at most "
            f"{MAX_DURATION_S // SECONDS_PER_UNIT['d']}d; got {value[:40]!r}.",
            param=field_name,
        )
    return seconds


@dataclass
class VirtualKey:
    token: str
    key_name: str
    key_alias: str | None = None
    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    team_id: str | None = None
    blocked: bool = False
    expires: str | None = None
    # LiteLLM's key aliases: a name the key's caller may ask for -> the model it stands for.
    aliases: dict[str, str] = field(default_factory=dict)
    max_parallel_requests: int | None = None
    user_id: str | None = None
    tags: list[str] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    # LiteLLM's `last_active`: when the key was last used (to the minute), None until then.
    last_active: str | None = None
    # The SHA-256 of the secret that opens the key (None: its token's, never regenerated), and
    # of the one it replaced, while its grace period lasts.
    secret: str | None = None
    previous_secret: str | None = None
    previous_secret_until: str | None = None
    # LiteLLM's per-model budgets: model group -> {"budget_limit": USD, "time_period": "1d"};
    # the groups served instead when one is spent; and budget windows besides max_budget's:
    # [{"budget_duration": "1h", "max_budget": USD}, ...].
    model_max_budget: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget_fallbacks: dict[str, list[str]] = field(default_factory=dict)
    budget_limits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def secrets(self) -> set[str]:
        """The SHA-256 of every secret that may still open the key, and its token."""
        return {self.token, *filter(None, (self.secret, self.previous_secret))}

    def opens(self, secret: str, now: float) -> bool:
        """Whether the secret with this SHA-256 opens the key at `now`."""
        if secret == (self.secret or self.token):
            return True
        until = self.previous_secret_until
        return (
            secret == self.previous_secret
            and bool(until)
            and datetime.fromisoformat(str(until)).timestamp() > now
        )

    @property
    def agent(self) -> str | None:
        agent = self.metadata.get("agent")
        return str(agent) if agent else None

    @property
    def budget_window_s(self) -> int | None:
        if not self.budget_duration:
            return None
        return duration_s(self.budget_duration, "budget_duration")

    def expired(self, now: float) -> bool:
        return bool(self.expires) and datetime.fromisoformat(str(self.expires)).timestamp() <= now

    @property
    def has_limits(self) -> bool:
        return bool(
            self.rpm_limit
            or self.tpm_limit
            or self.max_budget is not None
            or self.max_parallel_requests
            or self.model_max_budget
            or self.budget_limits
        )

    def resolve(self, model: str) -> str:
        """The model a request for `model` is served by: the key's alias for it, if any (as
        LiteLLM applies a key's `aliases`; the key's model list then holds for what it names)."""
        return self.aliases.get(model, model)

    @property
    def allows_all(self) -> bool:
        return lists_every_model(self.models)

    def allows(self, model: str) -> bool:
        return models_allow(self.models, model)

    def to_item(self) -> dict[str, Any]:
        item = {k: number(v) for k, v in self.__dict__.items() if v not in (None, "", [], {})}
        item["blocked"] = self.blocked
        # Free-form maps are kept as JSON text: any key or number survives as sent.
        item["metadata"] = json.dumps(self.metadata, separators=(",", ":"))
        for name in JSON_FIELDS[1:]:
            if getattr(self, name):
                item[name] = json.dumps(getattr(self, name), separators=(",", ":"))
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> VirtualKey:
        known = {name: plain(item[name]) for name in cls.__dataclass_fields__ if name in item}
        for name in JSON_FIELDS:
            if isinstance(known.get(name), str):
                known[name] = json.loads(known[name])
        return cls(**known)

    def public(self) -> dict[str, Any]:
        """What the API shows: every field but nothing that could be used as the key."""
        return {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in SECRET_FIELDS
        }
