"""Who is calling: the master key or a virtual key, from the request headers."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llm_proxy.access.key_record import VirtualKey
from llm_proxy.access.principals import Principal, Team, User
from llm_proxy.errors import (
    INVALID_API_KEY,
    MASTER_KEY_INSECURE,
    MASTER_KEY_MISSING,
)

# Keys printed in public docs (the seed's `sk-1234` among them) must never guard a deployment.
PUBLICLY_KNOWN_KEYS = frozenset(
    {"sk-1234", "sk-12345", "sk-your-openai-key", "sk-master", "sk-admin", "changeme", "password"}
)
MIN_DEPLOYED_KEY_LENGTH = 16


MASTER = "master"


@dataclass(frozen=True)
class Caller:
    key_id: str
    # The virtual key's metadata and limits; None for the master key.
    key: VirtualKey | None = None
    # The agent the `x-agent` header names: honoured only where the key has no agent of its own.
    claimed_agent: str | None = None
    # The team and the user (developer) the request is made for: the key's, or a JWT's.
    team: Team | None = None
    user: User | None = None

    @property
    def owners(self) -> list[Principal]:
        return [owner for owner in (self.team, self.user) if owner is not None]

    def refusal(self, model: str) -> str | None:
        """Why the caller may not use `model` (its key's, team's or user's model list), or
        None when it may."""
        if self.key is not None and not self.key.allows(model):
            return f"This key may not use model '{model}'. Allowed: {', '.join(self.key.models)}."
        for owner in self.owners:
            if not owner.allows(model):
                return (
                    f"{owner.label} may not use model '{model}'. Allowed: "
                    f"{', '.join(owner.models)}."
                )
        return None

    def allows(self, model: str) -> bool:
        return self.refusal(model) is None

    @property
    def allows_all(self) -> bool:
        lists = [self.key, *self.owners]
        return all(holder is None or holder.allows_all for holder in lists)

    @property
    def agent(self) -> str | None:
        """The key's own agent, which no request can change."""
        return self.key.agent if self.key is not None else None

    @property
    def is_master(self) -> bool:
        return self.key is None and self.key_id == MASTER


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `Authorization: Bearer`, else Anthropic's `x-api-key`, else
    Azure OpenAI's `api-key` (the Azure OpenAI SDK's)."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in ("x-api-key", "api-key"):
        if key := headers.get(name, "").strip():
            return key
    return None


def check_master_key(master_key: str | None, *, local: bool) -> str:
    """The master key this process may serve with, or a 503 that says how to fix it."""
    if not master_key:
        raise MASTER_KEY_MISSING(
            "No master key is configured: set general_settings.master_key "
            "(for example os.environ/LLM_PROXY__MASTER_KEY in the provider-keys secret)."
        )
    if not local and (
        master_key in PUBLICLY_KNOWN_KEYS or len(master_key) < MIN_DEPLOYED_KEY_LENGTH
    ):
        raise MASTER_KEY_INSECURE(
            "Refusing to serve: the master key is a publicly known or short value. Set a strong "
            f"LLM_PROXY__MASTER_KEY (at least {MIN_DEPLOYED_KEY_LENGTH} characters) in the "
            "provider-keys secret."
        )
    return master_key


def is_master_key(key: str, master_key: str) -> bool:
    return hmac.compare_digest(key.encode(), master_key.encode())


def authenticate(
    headers: Mapping[str, str], master_key: str, virtual_key: Callable[[str], VirtualKey]
) -> Caller:
    key = presented_key(headers)
    if key is None:
        raise INVALID_API_KEY(
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
    claimed = headers.get("x-agent") or None
    if is_master_key(key, master_key):
        return Caller(key_id=MASTER, claimed_agent=claimed)
    found = virtual_key(key)
    return Caller(key_id=found.token, key=found, claimed_agent=claimed)
