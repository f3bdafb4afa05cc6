"""The team and user management API (`/team/*`, `/user/*`, master key only), in LiteLLM's
request and response shapes: a team or user comes back with its limits and its `spend` in the
current budget window.

Deleting a team or user leaves a tombstone (so a key still cached by a container is refused)
and deletes its keys. LiteLLM's fields this gateway does not serve are refused one by one, each
with its reason; one at LiteLLM's empty default asks for nothing and passes."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from llm_proxy.access.budgets import Budget
from llm_proxy.access.key_admin import asks_nothing
from llm_proxy.access.key_record import VirtualKey, duration_s
from llm_proxy.access.principals import SHARED_SETTINGS, TEAM, Principal, Team, User
from llm_proxy.access.virtual_keys import EMPTY
from llm_proxy.errors import (
    TEAM_EXISTS,
    TEAM_NOT_FOUND,
    UNSUPPORTED_PARAMETER,
    USER_EXISTS,
    USER_NOT_FOUND,
    ErrorCode,
)
from llm_proxy.json_bodies import refuse_unencodable_text, refuse_unstorable

if TYPE_CHECKING:
    from llm_proxy.access.key_admin import KeyAdmin
    from llm_proxy.access.principal_store import PrincipalStore


_KEY = "set it on the team's or user's keys (/key/generate)"
_ONE_BUDGET = "use max_budget with budget_duration"
_NOT_SERVED = "this gateway serves no {} (only LLM routes)"
# LiteLLM's fields of both that this gateway cannot honour, and why.
UNSUPPORTED_COMMON: dict[str, str] = {
    "spend": "spend is metered by the gateway from each request's cost; it cannot be set",
    "soft_budget": "a soft budget only raises LiteLLM's alerts, which this gateway does not send",
    "budget_limits": f"several budget windows are served on keys only; {_ONE_BUDGET}",
    "model_max_budget": f"per-model budgets are served on keys only; {_KEY}",
    "budget_fallbacks": f"budget fallbacks are served on keys only; {_KEY}",
    "model_rpm_limit": "per-model limits are not supported; use rpm_limit",
    "model_tpm_limit": "per-model limits are not supported; use tpm_limit",
    "mcp_rpm_limit": _NOT_SERVED.format("MCP servers"),
    "tag_rpm_limit": "per-tag limits are not supported; use rpm_limit",
    "rpm_limit_type": "only best-effort limits are served: rpm_limit and tpm_limit hold as set",
    "tpm_limit_type": "only best-effort limits are served: rpm_limit and tpm_limit hold as set",
    "tpd_limit": "tokens-per-day limits are not supported; use tpm_limit, or max_budget with "
    "budget_duration",
    "max_parallel_requests": f"parallel request limits are served on keys only; {_KEY}",
    "organization_id": "organizations are not supported; use metadata",
    "organizations": "organizations are not supported; use metadata",
    "guardrails": "guardrails are not supported by this gateway",
    "policies": "policies are not supported by this gateway",
    "prompts": "prompt management is not supported by this gateway",
    "object_permission": _NOT_SERVED.format("MCP servers, vector stores or agents"),
    "allowed_vector_store_indexes": _NOT_SERVED.format("vector stores"),
    "allowed_passthrough_routes": _NOT_SERVED.format("pass-through routes"),
    "denied_passthrough_routes": _NOT_SERVED.format("pass-through routes"),
    "access_group_ids": "access groups are not supported; list the models in models",
    "tags": f"tags are served on keys only; {_KEY}",
    "aliases": f"model aliases are served on keys only; {_KEY}",
    "model_aliases": f"model aliases are served on keys only; {_KEY}",
    "config": "litellm settings are the operator's config, never a team's or user's",
    "router_settings": "routing is the operator's config (router_settings), never a team's",
    "permissions": "permissions other than models are not supported",
    "allowed_cache_controls": "cache controls are the operator's config",
    "secret_manager_settings": "secrets are the operator's (the provider-keys secret)",
    "agent_id": "LiteLLM agents are not supported; tag a key's usage with metadata.agent",
    "send_invite_email": "this gateway sends no email",
}
UNSUPPORTED_TEAM: dict[str, str] = {
    **UNSUPPORTED_COMMON,
    **dict.fromkeys(
        ("admins", "members", "members_with_roles", "team_member_permissions"),
        "team members are not served: a key of the team (/key/generate with team_id) is its "
        "member, and only the master key manages teams",
    ),
    **dict.fromkeys(
        (
            "team_member_budget",
            "team_member_budget_duration",
            "team_member_model_max_budget",
            "team_member_rpm_limit",
            "team_member_tpm_limit",
            "team_member_key_duration",
            "default_team_member_models",
        ),
        "per-member settings are not supported; give each developer a user (/user/new) with "
        "its own limits",
    ),
    "disable_global_guardrails": "guardrails are not supported by this gateway",
    "require_trace_id": "trace ids are not required by this gateway",
    "default_estimated_output_tokens": "a request is reserved at its own worst case "
    "(max_tokens, or the model's limit)",
    "default_estimated_output_tokens_per_model": "a request is reserved at its own worst case "
    "(max_tokens, or the model's limit)",
    "enforced_batch_output_expires_after": _NOT_SERVED.format("batches"),
    "enforced_file_expires_after": _NOT_SERVED.format("files"),
}
UNSUPPORTED_USER: dict[str, str] = {
    **UNSUPPORTED_COMMON,
    "teams": "a user belongs to the teams of its keys: make a key with both user_id and "
    "team_id (/key/generate)",
    "team_id": "a user belongs to the teams of its keys: make a key with both user_id and "
    "team_id (/key/generate)",
    "key_alias": f"the key made with a user has no settings of its own; {_KEY}",
    "duration": f"the key made with a user has no settings of its own; {_KEY}",
    "sso_user_id": "single sign-on is not served; JWTs name the user by its user_id",
    "password": "users have no password: they call with a key or their IdP's token",
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PrincipalAdmin:
    """One kind's management: new, info, list, update, delete."""

    record: ClassVar[type[Principal]]
    own: ClassVar[tuple[str, ...]]
    unsupported: ClassVar[dict[str, str]]
    not_found: ClassVar[ErrorCode]
    exists: ClassVar[ErrorCode]

    def __init__(self, keys: KeyAdmin, principals: PrincipalStore) -> None:
        self.keys = keys
        self.principals = principals
        self.table = principals.table

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def id_field(self) -> str:
        return self.record.id_field

    def new(self, fields: dict[str, Any]) -> Principal:
        """A new one, with the id given or a uuid4; a taken id (not a deleted one's) is 400."""
        self.checked(fields)
        now = _now_iso()
        principal = self.record(created_at=now, updated_at=now)
        setattr(principal, self.id_field, fields.pop(self.id_field, None) or str(uuid.uuid4()))
        self._apply(principal, fields)
        self.table.require()
        previous = self.table.get(principal.item_id)
        if previous is not None and not previous.get("deleted"):
            raise self.exists(
                f"{principal.label} already exists; update it with /{self.kind}/update.",
                param=self.id_field,
            )
        try:
            if previous is None:
                self.table.create(principal.to_item())
            else:
                # A deleted one's id, taken again.
                self.table.put(principal.to_item())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            raise self.exists(f"{principal.label} already exists.", param=self.id_field) from None
        self.principals.forget(principal)
        return principal

    def get(self, principal_id: str) -> Principal:
        """The live one with this id; 404 for none or a deleted one."""
        principal = self.principals.read(self.kind, principal_id)
        if principal is None or principal.deleted:
            raise self.not_found(
                f"{self.kind.capitalize()} '{principal_id[:256]}' not found.", param=self.id_field
            )
        return principal

    def info(self, principal_id: str) -> dict[str, Any]:
        principal = self.get(principal_id)
        keys = [self.keys._info(key) for key in self.keys_of(principal)]
        return {
            self.id_field: principal.id,
            f"{self.kind}_info": self.shown(principal),
            "keys": keys,
        }

    def listed(self) -> list[dict[str, Any]]:
        """Every live one, oldest first."""
        self.table.require()
        found = [self.record.from_item(item) for item in self.table.scan_kind(self.kind)]
        live = sorted((p for p in found if not p.deleted), key=lambda p: (p.created_at, p.id))
        return [self.shown(principal) for principal in live]

    def update(self, fields: dict[str, Any]) -> Principal:
        principal = self.get(str(fields.pop(self.id_field)))
        self.checked(fields)
        self._apply(principal, fields)
        principal.updated_at = _now_iso()
        self.table.put(principal.to_item())
        self.principals.forget(principal)
        return principal

    def delete(self, ids: list[str]) -> list[str]:
        """Every one named must exist (404 before anything is deleted, as LiteLLM checks).
        Each becomes a tombstone first, so its keys are refused even where they are cached;
        then its keys are deleted."""
        unique: list[str] = list(dict.fromkeys(ids))
        found = [self.get(principal_id) for principal_id in unique]
        keys = self.keys.store.list()
        for principal in found:
            principal.deleted = True
            principal.updated_at = _now_iso()
            self.table.put(principal.to_item())
            self.principals.forget(principal)
            owned = [key.token for key in keys if self.owns(principal, key)]
            if owned:
                self.keys.store.delete(owned)
        return unique

    def keys_of(self, principal: Principal) -> list[VirtualKey]:
        return [key for key in self.keys.store.list() if self.owns(principal, key)]

    def owns(self, principal: Principal, key: VirtualKey) -> bool:
        return bool(getattr(key, self.id_field) == principal.id)

    def shown(self, principal: Principal) -> dict[str, Any]:
        """LiteLLM's object: its fields and its spend in the current budget window."""
        return {**principal.public(), "spend": self.spend(principal)}

    def spend(self, principal: Principal) -> float:
        budget = Budget(
            principal.counter, principal.label, principal.max_budget, principal.budget_duration
        )
        return self.keys.counters.budget_spend(budget)

    def checked(self, fields: dict[str, Any]) -> None:
        """Only the fields this kind can honour, as text and numbers a table can hold."""
        settable = {*SHARED_SETTINGS, *self.own, self.id_field}
        for name, value in fields.items():
            if name in self.unsupported and not asks_nothing(name, value):
                reason = self.unsupported[name]
                raise UNSUPPORTED_PARAMETER(f"'{name}' is not supported: {reason}.", param=name)
            if name not in self.unsupported and name not in settable:
                raise UNSUPPORTED_PARAMETER(
                    f"'{name}' is not a {self.kind} field; a {self.kind} takes: "
                    f"{', '.join(sorted(settable))}.",
                    param=name,
                )
        refuse_unencodable_text(fields)
        refuse_unstorable(fields)
        if fields.get("budget_duration"):
            duration_s(str(fields["budget_duration"]), "budget_duration")
        for name in self.unsupported:
            fields.pop(name, None)

    def _apply(self, principal: Principal, fields: dict[str, Any]) -> None:
        for name in (*SHARED_SETTINGS, *self.own):
            if name in fields:
                value = fields[name]
                if value is None and name in EMPTY:
                    # LiteLLM's null for a list, a map or a flag: empty, unblocked.
                    value = EMPTY[name]()
                setattr(principal, name, value)


class TeamAdmin(PrincipalAdmin):
    record = Team
    own = ("team_alias",)
    unsupported = UNSUPPORTED_TEAM
    not_found = TEAM_NOT_FOUND
    exists = TEAM_EXISTS


class UserAdmin(PrincipalAdmin):
    record = User
    own = ("user_alias", "user_email", "user_role")
    unsupported = UNSUPPORTED_USER
    not_found = USER_NOT_FOUND
    exists = USER_EXISTS

    def __init__(self, keys: KeyAdmin, principals: PrincipalStore, teams: TeamAdmin) -> None:
        super().__init__(keys, principals)
        self.teams = teams

    def new_with_key(self, fields: dict[str, Any]) -> dict[str, Any]:
        """LiteLLM's `/user/new`: the user, and with `auto_create_key` (its default) a key of
        the user, shown only here."""
        create_key = fields.pop("auto_create_key", True)
        user = self.new(fields)
        made = self.keys.generate({"user_id": user.id}) if create_key else None
        answer = self.shown(user)
        answer["key"] = made["key"] if made else None
        return answer

    def info(self, principal_id: str) -> dict[str, Any]:
        """With the teams its keys belong to (those that exist and are not deleted)."""
        answer = super().info(principal_id)
        named = sorted({key["team_id"] for key in answer["keys"] if key.get("team_id")})
        teams = []
        for team_id in named:
            team = self.principals.read(TEAM, team_id)
            if team is not None and not team.deleted:
                teams.append(self.teams.shown(team))
        return {**answer, "teams": teams}

    def page(self, page: int, size: int) -> dict[str, Any]:
        """LiteLLM's `/user/list` page."""
        users = self.listed()
        return {
            "users": users[(page - 1) * size : page * size],
            "total": len(users),
            "page": page,
            "page_size": size,
            "total_pages": math.ceil(len(users) / size),
        }
