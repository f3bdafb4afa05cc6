"""Request bodies of the team and user management API (`/team/*`, `/user/*`), with LiteLLM's
field names, bounded as a key's are (`schemas.KeyFields`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llm_proxy.http.schemas import (
    MAX_BUDGET_USD,
    MAX_RPM,
    MAX_TPM,
    ModelName,
    blank_budget,
    bounded_metadata,
)

# A team's or user's id: no '#' (the keys table's separator), no control characters.
PRINCIPAL_ID_PATTERN = r"^[^#\x00-\x1f\x7f]{1,256}$"
PrincipalId = Annotated[str, Field(pattern=PRINCIPAL_ID_PATTERN)]
# LiteLLM's user roles (a label here: only the master key manages anything).
UserRole = Literal["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"]


class PrincipalFields(BaseModel):
    """What a team's or user's body shares with a key's. Other fields pass through to the
    admin, which refuses each by name with its reason (`access.team_admin.UNSUPPORTED_TEAM`,
    `UNSUPPORTED_USER`)."""

    model_config = ConfigDict(extra="allow")
    models: list[ModelName] | None = Field(default=None, max_length=1000)
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(default=None, ge=1, le=MAX_RPM)
    tpm_limit: int | None = Field(default=None, ge=1, le=MAX_TPM)
    metadata: dict[str, Any] | None = None
    blocked: bool | None = None

    _blank_budget = field_validator("max_budget", mode="before")(blank_budget)
    _bounded_metadata = field_validator("metadata")(bounded_metadata)


def _blank_as_none(value: Any) -> Any:
    # LiteLLM reads a blank id as none given (one is generated).
    return None if isinstance(value, str) and not value.strip() else value


class TeamNewRequest(PrincipalFields):
    team_id: PrincipalId | None = None
    team_alias: str | None = Field(default=None, max_length=256)

    _blank_id = field_validator("team_id", mode="before")(_blank_as_none)


class TeamUpdateRequest(PrincipalFields):
    team_id: PrincipalId
    team_alias: str | None = Field(default=None, max_length=256)


class TeamDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team_ids: list[PrincipalId] = Field(min_length=1, max_length=100)


class UserFields(PrincipalFields):
    user_alias: str | None = Field(default=None, max_length=256)
    user_email: str | None = Field(default=None, max_length=256)
    user_role: UserRole | None = None


class UserNewRequest(UserFields):
    user_id: PrincipalId | None = None
    # LiteLLM's default: a key of the new user comes back with it.
    auto_create_key: bool = True

    _blank_id = field_validator("user_id", mode="before")(_blank_as_none)


class UserUpdateRequest(UserFields):
    user_id: PrincipalId


class UserDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: list[PrincipalId] = Field(min_length=1, max_length=100)
