"""Teams and users as the request path reads them: through this container's cache of the keys
table, both in one BatchGetItem on a miss, trusted for KEY_CACHE_TTL_S like a key (a change or
deletion takes effect within that on every container)."""

from __future__ import annotations

from dataclasses import dataclass

from llm_proxy.access.principals import TEAM, USER, Principal, Team, User, from_item, item_id
from llm_proxy.access.timed_cache import TimedCache
from llm_proxy.errors import DEPENDENCY_UNAVAILABLE, INVALID_API_KEY, DomainError, ProxyError
from llm_proxy.store.keys import KeysTable

PRINCIPAL_CACHE_TTL_S = 30.0
PRINCIPAL_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Owners:
    """The team and the user a request is made for (None: none, or one with no record)."""

    team: Team | None = None
    user: User | None = None


class PrincipalStore:
    def __init__(self, table: KeysTable) -> None:
        self.table = table
        self._cache: TimedCache[Principal] = TimedCache(PRINCIPAL_CACHE_SIZE)

    def is_cached(self, team_id: str | None, user_id: str | None) -> bool:
        """Whether `owners` can answer without a read."""
        wanted = _wanted(team_id, user_id)
        return not self.table.enabled or all(
            self._cache.get(name, PRINCIPAL_CACHE_TTL_S)[0] for name in wanted
        )

    def owners(self, team_id: str | None, user_id: str | None) -> Owners:
        """The team and user named (one read for both on a miss). One that has no record is
        None: a name on a key, no more; a deleted or blocked one refuses the request (401)."""
        wanted = _wanted(team_id, user_id)
        if not wanted or not self.table.enabled:
            return Owners()
        found: dict[str, Principal | None] = {}
        missing = []
        for name in wanted:
            fresh, principal = self._cache.get(name, PRINCIPAL_CACHE_TTL_S)
            if fresh:
                found[name] = principal
            else:
                missing.append(name)
        if missing:
            found |= self._read(missing)
        for principal in found.values():
            if principal is not None and principal.deleted:
                raise INVALID_API_KEY(f"{principal.label} has been deleted.")
            if principal is not None and principal.blocked:
                raise INVALID_API_KEY(f"{principal.label} has been blocked.")
        team = found.get(item_id(TEAM, team_id)) if team_id else None
        user = found.get(item_id(USER, user_id)) if user_id else None
        return Owners(
            team if isinstance(team, Team) else None, user if isinstance(user, User) else None
        )

    def read(self, kind: str, principal_id: str) -> Principal | None:
        """The team or user with this id, read now (not through the cache: management sees a
        team made a moment ago); None where there is none of this kind. Requires the table."""
        self.table.require()
        found = from_item(self.table.get(item_id(kind, principal_id)) or {})
        return found if found is not None and found.kind == kind else None

    def forget(self, principal: Principal) -> None:
        self._cache.pop(principal.item_id)

    def _read(self, names: list[str]) -> dict[str, Principal | None]:
        try:
            items = self.table.get_many(names)
        except (ProxyError, DomainError):
            raise
        except Exception as exc:
            raise DEPENDENCY_UNAVAILABLE(
                f"The keys table cannot be read ({type(exc).__name__})."
            ) from None
        read: dict[str, Principal | None] = dict.fromkeys(names)
        for item in items:
            read[str(item["token"])] = from_item(item)
        for name, principal in read.items():
            self._cache.put(name, principal)
        return read


def _wanted(team_id: str | None, user_id: str | None) -> list[str]:
    return [item_id(kind, name) for kind, name in ((TEAM, team_id), (USER, user_id)) if name]
