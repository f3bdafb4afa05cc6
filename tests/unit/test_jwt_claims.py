"""A JWT's header and payload read strictly, and its registered claims checked (access.jwt_auth):
each refusal is the 401 `invalid_api_key` with its reason."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import pytest
from llm_proxy.access.jwt_auth import LEEWAY_S, check_claims, checked_algorithm, json_object
from llm_proxy.errors import ProxyError

AUDIENCE, ISSUER = "gateway", "https://idp.example.test/"


def part(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(ProxyError) as raised:
        call(*args)
    assert (raised.value.status, raised.value.code) == (401, "invalid_api_key")
    return raised.value.message


def claims(**changed: Any) -> dict[str, Any]:
    found = {"aud": AUDIENCE, "iss": ISSUER, "exp": time.time() + 60, **changed}
    return {name: value for name, value in found.items() if value is not None}


def test_a_json_object_is_read() -> None:
    assert json_object(part('{"alg": "RS256", "n": 1.5}')) == {"alg": "RS256", "n": 1.5}


@pytest.mark.parametrize(
    "text",
    [
        '{"alg": "RS256", "alg": "none"}',
        '{"exp": NaN}',
        '{"exp": Infinity}',
        '{"exp": 1e999}',
        '["alg"]',
        '"RS256"',
        "{",
        "[" * 100_000,
    ],
)
def test_a_part_that_is_not_one_strict_json_object_cannot_be_read(text: str) -> None:
    assert "cannot be read" in refusal(json_object, part(text))


@pytest.mark.parametrize("raw", ["eyJhbGciOiJSUzI1NiJ9=", "eyJ+", "\u00e9", ""])
def test_a_part_that_is_not_canonical_base64url_cannot_be_read(raw: str) -> None:
    assert "cannot be read" in refusal(json_object, raw)


def test_invalid_utf8_cannot_be_read() -> None:
    raw = base64.urlsafe_b64encode(b'{"a": "\xff"}').rstrip(b"=").decode()
    assert "cannot be read" in refusal(json_object, raw)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (
            {"alg": "ES256"},
            "algorithm ES256 is not supported: RSA keys (RS256-512, PS256-512) only",
        ),
        ({"alg": "EdDSA"}, "algorithm EdDSA is not supported"),
        ({"alg": "none"}, "not accepted"),
        ({"alg": "HS256"}, "not accepted"),
        ({"alg": ["RS256"]}, "not accepted"),
        ({}, "not accepted"),
        ({"alg": "RS256", "crit": ["b64"]}, "critical header extensions"),
    ],
)
def test_only_rsa_algorithms_without_critical_extensions_pass(
    header: dict[str, Any], words: str
) -> None:
    assert words in refusal(checked_algorithm, header)


def test_each_rsa_algorithm_passes() -> None:
    for algorithm in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        assert checked_algorithm({"alg": algorithm}) == algorithm


def test_claims_within_their_times_and_for_this_gateway_pass() -> None:
    now = time.time()
    check_claims(claims(), AUDIENCE, ISSUER)
    check_claims(claims(aud=["other", AUDIENCE]), AUDIENCE, ISSUER)
    # Other claims are no reason to refuse.
    check_claims(claims(iat=int(now), sub=1, scope=["a"], jti={"a": 1}), AUDIENCE, ISSUER)
    # The leeway either way: just expired, and not quite valid yet.
    check_claims(claims(exp=int(now) - LEEWAY_S + 5, nbf=now + LEEWAY_S - 5), AUDIENCE, ISSUER)


@dataclass(frozen=True)
class FromNow:
    """A time this many seconds from when the test runs (not from when it was collected)."""

    seconds: float


@pytest.mark.parametrize(
    ("changed", "words"),
    [
        ({"exp": None}, "no 'exp' claim"),
        ({"aud": None}, "no 'aud' claim"),
        ({"iss": None}, "no 'iss' claim"),
        ({"exp": FromNow(-LEEWAY_S - 5)}, "expired"),
        ({"nbf": FromNow(LEEWAY_S + 60)}, "not valid yet"),
        ({"exp": "9999999999"}, "'exp' claim is not a number"),
        ({"exp": True}, "'exp' claim is not a number"),
        ({"nbf": "soon"}, "'nbf' claim is not a number"),
        ({"iat": "today"}, "'iat' claim is not a number"),
        ({"iat": FromNow(LEEWAY_S + 60)}, "issued in the future"),
        ({"aud": "other"}, "another audience"),
        ({"aud": ["other"]}, "another audience"),
        ({"aud": {AUDIENCE: True}}, "another audience"),
        ({"iss": "https://evil.example/"}, "another issuer"),
    ],
)
def test_claims_that_do_not_hold_are_refused(changed: dict[str, Any], words: str) -> None:
    now = time.time()
    changed = {
        name: now + value.seconds if isinstance(value, FromNow) else value
        for name, value in changed.items()
    }
    assert words in refusal(check_claims, claims(**changed), AUDIENCE, ISSUER)
