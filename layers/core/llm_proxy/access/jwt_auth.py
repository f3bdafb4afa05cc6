"""Developers' identity from the company's IdP: `Authorization: Bearer <jwt>`, verified against
the IdP's published keys (a JWKS), made as the user (and team) its claims name. LiteLLM's names:
`general_settings.enable_jwt_auth`, `litellm_jwtauth.user_id_jwt_field` / `team_id_jwt_field`,
and the variables `JWT_PUBLIC_KEY_URL`, `JWT_AUDIENCE`, `JWT_ISSUER`.

A token (RFC 7519, in the JWS compact form of RFC 7515) is accepted only when it is three
base64url parts with a strict JSON header and payload, its `kid` is in the JWKS, it is signed by
that RSA key with RS256-512 or PS256-512 (never an algorithm the token picks against the key: no
`none`, no HMAC keyed with a public key), its `aud` and `iss` are the configured ones, and it is
within `exp` (and `nbf`), with LEEWAY_S for clocks that differ. Anything else is a 401 like an
unknown key's. Signatures are checked with the standard library (access.rsa_signatures): EC and
Ed25519 keys are not supported, and every common IdP signs with RS256 by default.

The JWKS is fetched with a short timeout, kept for JWKS_TTL_S, and fetched again sooner only
for a `kid` it does not have (a rotated key), at most once per UNKNOWN_KID_REFETCH_S: tokens
with made-up `kid`s cannot make the gateway hammer the IdP."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from llm_proxy.access import rsa_signatures
from llm_proxy.access.auth import Caller
from llm_proxy.access.principal_store import PrincipalStore
from llm_proxy.access.rsa_signatures import RsaPublicKey, base64url_decode
from llm_proxy.errors import (
    DEPENDENCY_UNAVAILABLE,
    INVALID_API_KEY,
    JWT_AUTH_NOT_CONFIGURED,
    ProxyError,
)
from llm_proxy.logs import logger

if TYPE_CHECKING:
    from llm_proxy.config import GeneralSettings
    from llm_proxy.settings import ApiSettings

ALGORITHMS = frozenset(rsa_signatures.ALGORITHMS)
# LiteLLM's other asymmetric algorithms: named as unsupported rather than as not accepted.
UNSUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "EdDSA"})

# Clock skew allowed on `exp` and `nbf`.
LEEWAY_S = 30
JWKS_TTL_S = 600.0
UNKNOWN_KID_REFETCH_S = 30.0
# A failed fetch answers 503 at once for this long, instead of every request waiting on it.
FETCH_FAILURE_BACKOFF_S = 5.0
FETCH_TIMEOUT_S = 3.0
MAX_JWKS_BYTES = 1024 * 1024
# The longest user or team id a claim may carry.
MAX_ID_CHARS = 256

# Three base64url parts (the signature empty for `alg: none`, which is refused later).
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def looks_like_jwt(value: str) -> bool:
    """Whether a presented bearer value is a JWT rather than a key (`sk-...`)."""
    return not value.startswith("sk-") and JWT_SHAPE.fullmatch(value) is not None


class KeySet:
    """The JWKS at `url`, as this container has it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> dict[str, Any]:
        """The JWK published under `kid` (a 401 when none is; a 503 when the JWKS cannot be
        fetched and none is known)."""
        with self._lock:
            now = time.monotonic()
            fetched = self._fetched_at
            stale = fetched is None or now - fetched > JWKS_TTL_S
            unknown = kid not in self._keys
            if stale or (unknown and now - (fetched or 0.0) > UNKNOWN_KID_REFETCH_S):
                self._refresh(now)
            found = self._keys.get(kid)
        if found is None:
            raise INVALID_API_KEY("Invalid token: its signing key (kid) is not published.")
        return found

    def _refresh(self, now: float) -> None:
        if self._failed_at is not None and now - self._failed_at < FETCH_FAILURE_BACKOFF_S:
            if self._fetched_at is None:
                raise _unavailable()
            return
        try:
            self._keys = fetch_jwks(self.url)
        except Exception as exc:
            self._failed_at = now
            logger.warning(
                "the JWKS cannot be fetched", extra={"url": self.url, "error": type(exc).__name__}
            )
            if self._fetched_at is None:
                raise _unavailable() from None
            return  # the keys fetched before still verify
        self._fetched_at, self._failed_at = now, None


def _unavailable() -> ProxyError:
    return DEPENDENCY_UNAVAILABLE(
        "The identity provider's keys (JWT_PUBLIC_KEY_URL) cannot be read."
    )


def fetch_jwks(url: str) -> dict[str, dict[str, Any]]:
    """The RSA signing keys of the JWKS at `url`, by `kid` (keys of other types, for encryption
    or without a `kid` left out)."""
    with httpx.Client(timeout=FETCH_TIMEOUT_S) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("the JWKS is too large")
    keys = httpx.Response(200, content=body).json().get("keys")
    if not isinstance(keys, list):
        raise ValueError("the JWKS has no 'keys' list")
    return {
        str(key["kid"]): key
        for key in keys
        if isinstance(key, dict)
        and key.get("kid")
        and key.get("kty") == "RSA"
        and key.get("use", "sig") == "sig"
    }


def verifier_key(jwk: Mapping[str, Any], algorithm: str) -> RsaPublicKey:
    """The JWK as a key for `algorithm`, which must be its own `alg` where it names one."""
    if jwk.get("alg", algorithm) != algorithm:
        raise INVALID_API_KEY("Invalid token: its algorithm does not match its signing key.")
    try:
        return RsaPublicKey.from_jwk(jwk)
    except ValueError as exc:
        logger.warning("a JWKS key cannot be used", extra={"kid": jwk.get("kid"), "why": str(exc)})
        raise INVALID_API_KEY("Invalid token: its signing key cannot be used.") from None


def refused(reason: str) -> ProxyError:
    """A 401 that says why (never the token itself)."""
    return INVALID_API_KEY(f"Invalid token: {reason}.")


def json_object(part: str) -> dict[str, Any]:
    """A header or payload: base64url of a UTF-8 JSON object, strictly (no member given twice,
    no NaN, Infinity or number too large for a float)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) != len(pairs):
            raise ValueError("a member is given twice")
        return found

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(
            decoded(part).decode(),
            object_pairs_hook=no_duplicates,
            parse_float=finite,
            parse_constant=no_constant,
        )
    except (ValueError, RecursionError):
        raise refused("it cannot be read") from None
    if not isinstance(value, dict):
        raise refused("it cannot be read")
    return value


def decoded(part: str) -> bytes:
    try:
        return base64url_decode(part)
    except ValueError:
        raise refused("it cannot be read") from None


def checked_algorithm(header: Mapping[str, Any]) -> str:
    algorithm = header.get("alg")
    if not isinstance(algorithm, str):
        algorithm = None  # a list or object: not an algorithm's name, nor hashable
    if algorithm in UNSUPPORTED_ALGORITHMS:
        raise refused(
            f"algorithm {algorithm} is not supported: RSA keys (RS256-512, PS256-512) only"
        )
    if algorithm not in ALGORITHMS:
        raise refused(
            f"its algorithm is not accepted (RSA ones only: {', '.join(sorted(ALGORITHMS))})"
        )
    # RFC 7515 section 4.1.11: extensions the token marks critical must be understood; none is.
    if "crit" in header:
        raise refused("it names critical header extensions (crit), which are not supported")
    return algorithm


def check_claims(claims: Mapping[str, Any], audience: str, issuer: str) -> None:
    """`exp` (required), `nbf`, `iat`, `aud` (a string, or a list holding ours) and `iss` (RFC 7519
    section 4.1), the times with LEEWAY_S either way."""
    for name in ("exp", "aud", "iss"):
        if name not in claims:
            raise refused(f"it has no '{name}' claim")
    now = time.time()
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise refused(f"its '{name}' claim is not a number")
    if claims["exp"] <= now - LEEWAY_S:
        raise refused("it has expired")
    if "nbf" in claims and claims["nbf"] > now + LEEWAY_S:
        raise refused("it is not valid yet (nbf)")
    if "iat" in claims and claims["iat"] > now + LEEWAY_S:
        raise refused("it was issued in the future (iat)")
    aud = claims["aud"]
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise refused("it is for another audience (aud)")
    if claims["iss"] != issuer:
        raise refused("it is from another issuer (iss)")


class JwtAuth:
    """`enable_jwt_auth` as this gateway is configured: verifies tokens, builds their caller."""

    def __init__(self, general: GeneralSettings, settings: ApiSettings) -> None:
        self.enabled = general.enable_jwt_auth
        self.user_field = general.litellm_jwtauth.user_id_jwt_field
        self.team_field = general.litellm_jwtauth.team_id_jwt_field
        self.audience, self.issuer = settings.jwt_audience, settings.jwt_issuer
        url = settings.jwt_public_key_url
        self.keys = KeySet(url) if url else None

    def accepts(self, presented: str | None) -> bool:
        """Whether the presented value is a JWT for this gateway to verify."""
        return self.enabled and presented is not None and looks_like_jwt(presented)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once it passes every check (module docstring)."""
        keys, audience, issuer = self.keys, self.audience, self.issuer
        if keys is None or not audience or not issuer:
            unset = [
                name
                for name, value in (
                    ("JWT_PUBLIC_KEY_URL", keys),
                    ("JWT_AUDIENCE", audience),
                    ("JWT_ISSUER", issuer),
                )
                if not value
            ]
            raise JWT_AUTH_NOT_CONFIGURED(
                "JWT auth is enabled (general_settings.enable_jwt_auth) but "
                f"{', '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set."
            )
        parts = token.split(".")
        if len(parts) != 3:
            raise refused("it cannot be read")
        header_part, payload_part, signature_part = parts
        header = json_object(header_part)
        algorithm, kid = checked_algorithm(header), header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise refused("its header names no signing key (kid)")
        key = verifier_key(keys.key(kid), algorithm)
        signing_input = f"{header_part}.{payload_part}".encode()
        if not rsa_signatures.verify(key, algorithm, signing_input, decoded(signature_part)):
            raise refused("its signature does not verify")
        claims = json_object(payload_part)
        check_claims(claims, audience, issuer)
        return claims

    def caller(
        self, token: str, principals: PrincipalStore, claimed_agent: str | None = None
    ) -> Caller:
        """The caller a verified token makes: its user (one made with /user/new, else 401) and
        its team where the team claim names an existing one. Reads the JWKS and the keys table
        on a miss: call it in a worker thread."""
        claims = self.verify(token)
        user_id = claim_id(claims, self.user_field)
        if user_id is None:
            raise INVALID_API_KEY(
                f"Invalid token: it has no '{self.user_field}' claim naming a user."
            )
        team_id = claim_id(claims, self.team_field) if self.team_field else None
        owners = principals.owners(team_id, user_id)
        if owners.user is None:
            raise INVALID_API_KEY(
                f"Unknown user '{user_id}': the token's '{self.user_field}' claim names no user "
                "of this gateway (POST /user/new)."
            )
        return Caller(
            key_id=f"jwt:{user_id}",
            claimed_agent=claimed_agent,
            team=owners.team,
            user=owners.user,
        )


def claim_id(claims: Mapping[str, Any], field: str) -> str | None:
    """A user or team id from a claim: a non-empty string (or a number) of sane length."""
    value = claims.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
        return value
    return None
