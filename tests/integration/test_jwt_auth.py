"""Developers' JWTs (`general_settings.enable_jwt_auth`): tokens signed with keys made here and
published by a JWKS server on loopback, against the gateway under uvicorn, litellm, the
OpenAI-format double and DynamoDB (moto). A valid token is served as its user (and team), held
to their model lists and budgets and metered to them; every token that does not verify is a 401
in OpenAI's envelope that never quotes the token; the master key and virtual keys work as
before."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from llm_proxy.access.budgets import Budget
from llm_proxy.access.principals import Principal, Team, User
from llm_proxy.store.counters import CountersTable

from devstack.server import free_port
from tests.support.agent_clis import client, run_client
from tests.support.configs import MASTER_KEY_FROM_SECRET, deployment, gateway_config, openai_double
from tests.support.jwks import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    Signer,
    jwt_environment,
    new_signer,
    serving_jwks,
)
from tests.support.principal_items import put_principal
from tests.support.stack import MASTER_KEY, usage_item

JWT_SETTINGS = {
    **MASTER_KEY_FROM_SECRET,
    "enable_jwt_auth": True,
    "litellm_jwtauth": {"user_id_jwt_field": "sub", "team_id_jwt_field": "team_id"},
}
CONFIG = gateway_config(
    openai_double(),
    openai_double("other-model"),
    # 0.001 a prompt token, 0.002 a completion token: the double's 6 + 5 tokens cost 0.016, and
    # a reservation of 14 prompt tokens + max_tokens 1 is 0.016 too.
    openai_double(
        "priced", "openai/house-model", input_cost_per_token=0.001, output_cost_per_token=0.002
    ),
    # Claude Code's model and its small one, answered by litellm's mock, priced.
    deployment(
        "claude-sonnet-4-5",
        "openai/house-claude",
        mock_response="Hello from the gateway.",
        input_cost_per_token=0.000001,
        output_cost_per_token=0.000002,
    ),
    router_settings={
        "num_retries": 0,
        "model_group_alias": {"claude-haiku-4-5": "claude-sonnet-4-5"},
    },
    general_settings=JWT_SETTINGS,
)


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with serving_jwks() as server:
        yield server


@pytest.fixture(scope="module")
def signer(jwks: JwksServer) -> Signer:
    return jwks.publish(new_signer("RSA"))


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str], jwks: JwksServer, signer: Signer) -> str:
    return gateway_for(CONFIG, **jwt_environment(jwks))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def chat(url: str, key: str, model: str = "gpt-3.5-turbo", **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **fields},
        timeout=30,
    )


def spend(counters_table: str, owner: Principal, settled: float | None = None) -> float:
    """The owner's spend in its current window, once it is `settled` (the real cost, written
    after the response; else once it is any)."""
    budget = Budget(owner.counter, owner.label, owner.max_budget, owner.budget_duration)
    counters = CountersTable(counters_table)
    deadline = time.monotonic() + 10
    while True:
        spent = counters.budget_spend(budget)
        done = spent > 0 if settled is None else spent == pytest.approx(settled)
        if done or time.monotonic() > deadline:
            return spent
        time.sleep(0.1)


def assert_refused(response: httpx.Response, token: str, words: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert words in error["message"], error["message"]
    # Not the token, nor its payload or signature.
    assert all(part[:16] not in response.text for part in token.split(".")[1:] if part)


# -- served as the user -------------------------------------------------------------------------


def test_a_developers_token_is_served_as_their_user_and_metered_to_them(
    url: str, signer: Signer, aws: dict[str, str]
) -> None:
    user = put_principal(url, User(user_id=unique("dev"), max_budget=5.0))
    answered = chat(url, signer.token(sub=user.id), "priced", max_tokens=1)
    assert answered.status_code == 200, answered.text
    item = usage_item(aws["UsageTable"], answered.headers["x-request-id"])
    assert item["key_id"] == f"jwt:{user.id}" and item["cost_usd"] > 0
    cost = float(item["cost_usd"])
    assert spend(aws["CountersTable"], user, cost) == pytest.approx(cost)


@pytest.fixture(scope="module", autouse=True)
def _more_signers(jwks: JwksServer) -> None:
    """In the JWKS from the start (the gateway's cache holds it 10 minutes): EC and Ed25519
    keys, which it ignores, and an RSA key that names its one algorithm."""
    jwks.publish(new_signer("EC"))
    jwks.publish(new_signer("Ed25519"))
    pinned = new_signer("RSA", kid=f"rs256-only-{uuid.uuid4().hex[:8]}")
    pinned.jwk["alg"] = "RS256"
    jwks.publish(pinned)


def published(jwks: JwksServer, kty: str, alg: str | None = None) -> Signer:
    return next(s for s in jwks.published if s.jwk["kty"] == kty and s.jwk.get("alg") == alg)


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_an_rsa_key_without_alg_verifies_any_rsa_algorithm(
    url: str, signer: Signer, algorithm: str
) -> None:
    user = put_principal(url, User(user_id=unique("dev")))
    assert chat(url, signer.token(sub=user.id, algorithm=algorithm)).status_code == 200


def test_an_rsa_key_naming_its_algorithm_verifies_that_one_only(url: str, jwks: JwksServer) -> None:
    pinned = published(jwks, "RSA", "RS256")
    user = put_principal(url, User(user_id=unique("dev")))
    assert chat(url, pinned.token(sub=user.id)).status_code == 200
    token = pinned.token(sub=user.id, algorithm="PS256")
    assert_refused(chat(url, token), token, "does not match its signing key")


@pytest.mark.parametrize(("kty", "algorithm"), [("EC", "ES256"), ("OKP", "EdDSA")])
def test_ec_and_eddsa_tokens_are_refused_as_unsupported(
    url: str, jwks: JwksServer, kty: str, algorithm: str
) -> None:
    user = put_principal(url, User(user_id=unique("dev")))
    token = published(jwks, kty).token(sub=user.id)
    expected = f"algorithm {algorithm} is not supported: RSA keys (RS256-512, PS256-512) only"
    assert_refused(chat(url, token), token, expected)


# -- every token that does not verify is a 401 --------------------------------------------------


def unsigned(signer: Signer, **claims: Any) -> str:
    """`alg: none`, with the published key's kid."""
    return encoded({"alg": "none", "typ": "JWT", "kid": signer.kid}, claims, b"")


def hs256_with_public_key(signer: Signer, **claims: Any) -> str:
    """HS256 keyed with the JWKS's public key (PEM), the classic algorithm confusion."""
    public = signer.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    return encoded(header, claims, public, sign=True)


def encoded(header: dict[str, Any], claims: dict[str, Any], key: bytes, sign: bool = False) -> str:
    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    now = int(time.time())
    payload = {"aud": "llm-proxy-tests", "iss": "https://idp.example.test/", "exp": now + 300}
    signing_input = (
        f"{part(json.dumps(header).encode())}.{part(json.dumps({**payload, **claims}).encode())}"
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if sign else b""
    return f"{signing_input}.{part(signature)}"


def resigned(signer: Signer, twice: bool = False, **claims: Any) -> str:
    """A token signed by the published key whose payload JSON PyJWT would not write: `sub`
    given twice, or `exp` as a literal too large for a float."""
    header = {"alg": "RS256", "typ": "JWT", "kid": signer.kid}
    now = int(time.time())
    text = json.dumps({"aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, **claims})
    if twice:
        text = text[:-1] + ', "sub": "someone-else"}'
    text = text.replace("Infinity", "1e999")

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(text.encode())}"
    signature = signer.private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{part(signature)}"


REFUSALS: dict[str, tuple[Callable[[Signer, str], str], str]] = {
    "expired": (lambda s, u: s.token(sub=u, lifetime_s=-120), "expired"),
    "not yet valid": (lambda s, u: s.token(sub=u, nbf=int(time.time()) + 300), "not valid yet"),
    "another audience": (lambda s, u: s.token(sub=u, aud="someone-else"), "audience"),
    "another issuer": (lambda s, u: s.token(sub=u, iss="https://evil.example/"), "issuer"),
    "no exp": (lambda s, u: s.token(sub=u, exp=None), "'exp'"),
    "alg none": (lambda s, u: unsigned(s, sub=u), "algorithm"),
    "HS256 keyed with the public key": (
        lambda s, u: hs256_with_public_key(s, sub=u),
        "algorithm",
    ),
    "an algorithm of another key type": (
        lambda s, u: new_signer("EC", kid=s.kid).token(sub=u),
        "ES256 is not supported",
    ),
    "a critical header extension": (
        lambda s, u: s.token(sub=u, headers={"crit": ["exp"]}),
        "critical header extensions",
    ),
    "a claim given twice": (lambda s, u: resigned(s, sub=u, twice=True), "cannot be read"),
    "an exp too large for a number": (lambda s, u: resigned(s, sub=u, exp=1e999), "cannot be read"),
    "an exp that is a string": (lambda s, u: s.token(sub=u, exp="never"), "'exp' claim"),
    "an audience list without ours": (lambda s, u: s.token(sub=u, aud=["a", "b"]), "audience"),
    "another token's signature": (
        lambda s, u: ".".join([*s.token(sub=u).split(".")[:2], s.token().split(".")[2]]),
        "signature",
    ),
    "unknown kid": (lambda s, u: new_signer("RSA").token(sub=u), "not published"),
    "bad signature": (lambda s, u: new_signer("RSA", kid=s.kid).token(sub=u), "signature"),
    "no sub": (lambda s, u: s.token(), "'sub'"),
    "unknown user": (lambda s, u: s.token(sub=unique("nobody")), "Unknown user"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_token_that_does_not_verify_is_refused_as_an_unknown_key(
    url: str, signer: Signer, case: str
) -> None:
    user = put_principal(url, User(user_id=unique("dev")))
    make, words = REFUSALS[case]
    token = make(signer, user.id)
    assert_refused(chat(url, token), token, words)


def test_a_deleted_or_blocked_user_is_refused(url: str, signer: Signer) -> None:
    for state in ({"deleted": True}, {"blocked": True}):
        user = put_principal(url, User(user_id=unique("gone"), **state))
        token = signer.token(sub=user.id)
        assert_refused(chat(url, token), token, "has been")


# -- the user's and the team's models and budgets ------------------------------------------------


def test_the_users_budget_holds_their_requests(url: str, signer: Signer) -> None:
    spent = put_principal(url, User(user_id=unique("dev"), max_budget=0.0))
    refused = chat(url, signer.token(sub=spent.id))
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("budget_exceeded", "budget_exceeded")

    # One request's worst case fits once; what is left after it does not fit another.
    user = put_principal(url, User(user_id=unique("dev"), max_budget=0.016))
    token = signer.token(sub=user.id)
    assert chat(url, token, "priced", max_tokens=1).status_code == 200
    again = chat(url, token, "priced", max_tokens=1)
    assert again.status_code == 400, again.text
    assert f"User '{user.id}' budget" in again.json()["error"]["message"]


def test_the_team_claim_holds_the_teams_models_and_budget_and_meters_the_team(
    url: str, signer: Signer, aws: dict[str, str]
) -> None:
    team = put_principal(url, Team(team_id=unique("team"), models=["gpt-3.5-turbo", "priced"]))
    user = put_principal(url, User(user_id=unique("dev")))
    token = signer.token(sub=user.id, team_id=team.id)

    outside = chat(url, token, "other-model")
    assert outside.status_code == 403, outside.text
    assert outside.json()["error"]["code"] == "model_not_allowed"
    listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert {model["id"] for model in listed.json()["data"]} == {"gpt-3.5-turbo", "priced"}
    answered = chat(url, token, "priced", max_tokens=1)
    assert answered.status_code == 200, answered.text
    cost = float(usage_item(aws["UsageTable"], answered.headers["x-request-id"])["cost_usd"])
    assert cost > 0 and spend(aws["CountersTable"], team, cost) == pytest.approx(cost)
    assert spend(aws["CountersTable"], user, cost) == pytest.approx(cost)

    broke = put_principal(url, Team(team_id=unique("broke"), max_budget=0.0))
    refused = chat(url, signer.token(sub=user.id, team_id=broke.id))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"


def test_a_team_claim_naming_no_team_is_ignored(url: str, signer: Signer) -> None:
    user = put_principal(url, User(user_id=unique("dev")))
    token = signer.token(sub=user.id, team_id=unique("no-such-team"))
    assert chat(url, token, "other-model").status_code == 200


# -- keys with JWT auth on -----------------------------------------------------------------------


def test_the_master_key_and_virtual_keys_work_and_a_token_cannot_manage_keys(
    url: str, signer: Signer
) -> None:
    assert chat(url, MASTER_KEY).status_code == 200
    made = httpx.post(
        f"{url}/key/generate", headers={"Authorization": f"Bearer {MASTER_KEY}"}, json={}
    )
    assert made.status_code == 200, made.text
    assert chat(url, made.json()["key"]).status_code == 200

    user = put_principal(url, User(user_id=unique("dev")))
    token = signer.token(sub=user.id)
    for method, path in (("POST", "/key/generate"), ("GET", "/key/info"), ("GET", "/key/list")):
        refused = httpx.request(
            method, f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, json={}
        )
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["code"] == "master_key_required"


# -- the JWKS ------------------------------------------------------------------------------------


def test_tokens_with_unknown_kids_do_not_refetch_the_jwks_each_time(
    gateway_for: Callable[..., str],
) -> None:
    with serving_jwks() as jwks:
        signer = jwks.publish(new_signer("RSA"))
        url = gateway_for(CONFIG, **jwt_environment(jwks))
        user = put_principal(url, User(user_id=unique("dev")))
        assert chat(url, signer.token(sub=user.id)).status_code == 200
        fetched = jwks.fetches
        for _ in range(5):
            token = new_signer("RSA").token(sub=user.id)
            assert_refused(chat(url, token), token, "not published")
        assert jwks.fetches == fetched


def test_an_unreachable_jwks_is_a_503_at_once_and_keys_still_work(
    gateway_for: Callable[..., str],
) -> None:
    nowhere = {
        **jwt_environment(JwksServer()),
        "JWT_PUBLIC_KEY_URL": f"http://127.0.0.1:{free_port()}/jwks.json",
    }
    url = gateway_for(CONFIG, **nowhere)
    user = put_principal(url, User(user_id=unique("dev")))
    started = time.monotonic()
    answered = chat(url, new_signer("RSA").token(sub=user.id))
    assert time.monotonic() - started < 5
    assert answered.status_code == 503, answered.text
    assert answered.json()["error"]["code"] == "dependency_unavailable"
    assert chat(url, MASTER_KEY).status_code == 200


def test_jwt_auth_without_its_variables_is_a_503_that_names_them(
    gateway_for: Callable[..., str],
) -> None:
    url = gateway_for(CONFIG)
    answered = chat(url, new_signer("RSA").token(sub="dev"))
    assert answered.status_code == 503, answered.text
    error = answered.json()["error"]
    assert error["code"] == "jwt_auth_not_configured"
    assert "JWT_PUBLIC_KEY_URL, JWT_AUDIENCE, JWT_ISSUER" in error["message"]
    assert chat(url, MASTER_KEY).status_code == 200


# -- Claude Code -------------------------------------------------------------------------------


def test_claude_code_with_an_api_key_helper_printing_a_jwt_is_served_as_the_user(
    url: str, signer: Signer, aws: dict[str, str], tmp_path: Path
) -> None:
    claude = client("claude")
    user = put_principal(url, User(user_id=unique("claude-dev")))
    helper = tmp_path / "token.sh"
    helper.write_text(f"#!/bin/sh\necho '{signer.token(sub=user.id)}'\n")
    helper.chmod(0o700)
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"apiKeyHelper": str(helper)}))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANTHROPIC_", "CLAUDE_"))
    }
    done = run_client(
        [claude, "-p", "Say hi", "--model", "claude-sonnet-4-5"],
        {
            **env,
            "ANTHROPIC_BASE_URL": url,
            "HOME": str(tmp_path),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
        tmp_path,
        inherit=False,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Hello from the gateway." in done.stdout
    assert spend(aws["CountersTable"], user) > 0


def test_codex_with_an_auth_command_printing_a_jwt_is_served_as_the_user(
    url: str, signer: Signer, aws: dict[str, str], tmp_path: Path
) -> None:
    """Codex's command-backed provider auth (`model_providers.<id>.auth`: `command`, `args`,
    `timeout_ms`, `refresh_interval_ms`, with `requires_openai_auth = false`)."""
    codex = client("codex")
    user = put_principal(url, User(user_id=unique("codex-dev")))
    helper = tmp_path / "token.sh"
    helper.write_text(f"#!/bin/sh\necho '{signer.token(sub=user.id)}'\n")
    helper.chmod(0o700)
    home = tmp_path / "codex"
    home.mkdir()
    provider = (
        'model_providers.gateway={name="LLM Proxy", base_url="' + url + '/v1", '
        'wire_api="responses", requires_openai_auth=false, '
        'auth={command="' + str(helper) + '", args=[], timeout_ms=5000, '
        "refresh_interval_ms=0}}"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENAI_")}
    done = run_client(
        [
            *(codex, "exec", "--skip-git-repo-check", "-c", "model_provider=gateway"),
            *("-c", provider, "-c", 'web_search="disabled"', "-m", "gpt-3.5-turbo", "Say hi"),
        ],
        {**env, "CODEX_HOME": str(home), "HOME": str(tmp_path)},
        tmp_path,
        inherit=False,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Hello from the upstream double." in done.stdout
    assert spend(aws["CountersTable"], user) > 0
