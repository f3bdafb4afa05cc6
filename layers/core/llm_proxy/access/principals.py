"""Teams and users (developers): who a key belongs to, with the models, limits and budget they
share across all their keys (LiteLLM's `LiteLLM_TeamTable` and `LiteLLM_UserTable`, in its
field names).

Both live in the keys table beside the keys, as `team#<team_id>` and `user#<user_id>`
(`item_id`); a deleted one stays as a tombstone (`deleted`), so a key that still names it in a
container's cache is refused rather than served without its limits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from llm_proxy.access.key_record import duration_s, lists_every_model, models_allow
from llm_proxy.store.values import number, plain

TEAM, USER = "team", "user"
# The settings teams and users share with keys, in LiteLLM's names.
SHARED_SETTINGS = (
    "models",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "metadata",
    "blocked",
)
# Fields stored as JSON text: any key or number survives as sent.
JSON_FIELDS = ("metadata",)


@dataclass
class Principal:
    """What teams and users have in common: models, limits and a budget per window."""

    kind: ClassVar[str]
    id_field: ClassVar[str]

    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    blocked: bool = False
    deleted: bool = False
    created_at: str = ""
    updated_at: str = ""

    @property
    def id(self) -> str:
        return str(getattr(self, self.id_field))

    @property
    def item_id(self) -> str:
        return item_id(self.kind, self.id)

    @property
    def counter(self) -> str:
        """The prefix of its counters' ids in the counters table."""
        return self.item_id

    @property
    def budget_window_s(self) -> int | None:
        if not self.budget_duration:
            return None
        return duration_s(self.budget_duration, "budget_duration")

    @property
    def has_limits(self) -> bool:
        return bool(self.rpm_limit or self.tpm_limit or self.max_budget is not None)

    @property
    def allows_all(self) -> bool:
        return lists_every_model(self.models)

    def allows(self, model: str) -> bool:
        return models_allow(self.models, model)

    @property
    def label(self) -> str:
        """How refusals name it: "Team 'x'", "User 'y'"."""
        return f"{self.kind.capitalize()} '{self.id}'"

    def to_item(self) -> dict[str, Any]:
        item = {k: number(v) for k, v in self.__dict__.items() if v not in (None, "", [], {})}
        item["token"] = self.item_id
        item["kind"] = self.kind
        item["blocked"] = self.blocked
        for name in JSON_FIELDS:
            item[name] = json.dumps(getattr(self, name), separators=(",", ":"))
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Principal:
        # dataclasses.fields: the stored fields, not the ClassVars `kind` and `id_field`.
        names = [f.name for f in fields(cls)]
        known = {name: plain(item[name]) for name in names if name in item}
        for name in JSON_FIELDS:
            if isinstance(known.get(name), str):
                known[name] = json.loads(known[name])
        return cls(**known)

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "deleted"}


@dataclass
class Team(Principal):
    kind: ClassVar[str] = TEAM
    id_field: ClassVar[str] = "team_id"

    team_id: str = ""
    team_alias: str | None = None


@dataclass
class User(Principal):
    kind: ClassVar[str] = USER
    id_field: ClassVar[str] = "user_id"

    user_id: str = ""
    user_alias: str | None = None
    user_email: str | None = None
    user_role: str | None = None


def item_id(kind: str, principal_id: str) -> str:
    """A team's or user's item in the keys table (a key's is its 64-hex token: never equal)."""
    return f"{kind}#{principal_id}"


def from_item(item: dict[str, Any]) -> Principal | None:
    """The team or user an item of the keys table holds; None for a key's."""
    kind = item.get("kind")
    if kind == TEAM:
        return Team.from_item(item)
    if kind == USER:
        return User.from_item(item)
    return None
