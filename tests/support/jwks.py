"""An identity provider's JWKS on loopback: signing keys made in the test with `cryptography`
(RSA, EC, Ed25519), their public halves served as `{"keys": [...]}` at `/jwks.json`, and tokens
signed with them. Never an outside IdP."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from devstack.server import BackgroundServer

AUDIENCE = "llm-proxy-tests"
ISSUER = "https://idp.example.test/"


@dataclass
class Signer:
    """A private key of the IdP's, its `kid` and the algorithm it signs with."""

    kid: str
    algorithm: str
    private: Any
    jwk: dict[str, Any]

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        lifetime_s: int = 300,
        algorithm: str | None = None,
        headers: dict[str, Any] | None = None,
        **standard: Any,
    ) -> str:
        """A token signed by this key: `aud`, `iss`, `iat` and `exp` as the gateway expects,
        then `standard` (a value of None removes that claim) and `claims` over them."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "aud": AUDIENCE,
            "iss": ISSUER,
            "iat": now,
            "exp": now + lifetime_s,
        }
        payload.update(standard)
        payload.update(claims or {})
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(
            payload,
            self.private,
            algorithm=algorithm or self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )


def new_signer(kind: str = "RSA", kid: str | None = None) -> Signer:
    """A fresh key pair: `RSA` (RS256), `EC` (P-256, ES256) or `Ed25519` (EdDSA)."""
    kid = kid or f"{kind.lower()}-{uuid.uuid4().hex[:8]}"
    if kind == "RSA":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        algorithm = "RS256"
    elif kind == "EC":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        algorithm = "ES256"
    elif kind == "Ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        algorithm = "EdDSA"
    else:
        raise ValueError(kind)
    # No `alg` on the JWK, as many IdPs publish them: the token's algorithm must fit the type.
    return Signer(kid, algorithm, private, {**jwk, "kid": kid, "use": "sig"})


@dataclass
class JwksServer:
    """The JWKS endpoint: what it publishes, how often it was fetched, and whether it fails."""

    published: list[Signer] = field(default_factory=list)
    fetches: int = 0
    failing: bool = False
    url: str = ""

    def publish(self, signer: Signer) -> Signer:
        self.published.append(signer)
        return signer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.fetches += 1
        if self.failing or scope["path"] != "/jwks.json":
            status, body = (503 if self.failing else 404), b"{}"
        else:
            status = 200
            body = json.dumps({"keys": [signer.jwk for signer in self.published]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextmanager
def serving_jwks() -> Iterator[JwksServer]:
    """A JWKS server on a free loopback port; its `url` is the JWKS URL."""
    jwks = JwksServer()
    server = BackgroundServer(jwks).start()
    jwks.url = f"{server.url}/jwks.json"
    try:
        yield jwks
    finally:
        server.stop()


def jwt_environment(jwks: JwksServer) -> dict[str, str]:
    """The variables that point a gateway at this JWKS, audience and issuer."""
    return {"JWT_PUBLIC_KEY_URL": jwks.url, "JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER}
