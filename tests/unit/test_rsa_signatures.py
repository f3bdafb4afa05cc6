"""RSA signature verification with the standard library (access.rsa_signatures) against
signatures made by `cryptography`: each JWA RSA algorithm verifies, and every signature that is
not exactly RFC 8017's is refused, including PKCS #1 v1.5 blocks forged with the private
exponent (garbage after the digest, another DigestInfo) and PSS with another salt length."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from llm_proxy.access.rsa_signatures import (
    ALGORITHMS,
    DIGEST_INFO_PREFIXES,
    RsaPublicKey,
    base64url_decode,
    verify,
)

MESSAGE = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZXYifQ"
HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


@pytest.fixture(scope="module")
def private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def odd() -> rsa.RSAPrivateKey:
    """A 2050-bit key: k is 257 octets, PSS's block has 7 leading bits that must be zero
    (emBits = modBits - 1), and s + n always fits in k octets."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2050)


@pytest.fixture(scope="module")
def other() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(private: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = private.public_key().public_numbers()
    return {"kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e)}


def public(private: rsa.RSAPrivateKey) -> RsaPublicKey:
    return RsaPublicKey.from_jwk(jwk(private))


def sign(
    private: rsa.RSAPrivateKey, algorithm: str, message: bytes = MESSAGE, salt: int | None = None
) -> bytes:
    """`cryptography`'s signature for a JWA algorithm (PSS: salt as long as the hash, or `salt`)."""
    digest = HASHES[algorithm[2:]]
    if algorithm.startswith("RS"):
        return private.sign(message, padding.PKCS1v15(), digest)
    pss = padding.PSS(padding.MGF1(digest), digest.digest_size if salt is None else salt)
    return private.sign(message, pss, digest)


def raw_signature(private: rsa.RSAPrivateKey, block: bytes) -> bytes:
    """The private-key operation on any block: what a forger with the key could sign."""
    numbers = private.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    assert len(block) == k
    return pow(int.from_bytes(block), numbers.d, n).to_bytes(k)


def pkcs1_block(k: int, t: bytes) -> bytes:
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


# -- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_each_jwa_rsa_algorithm_verifies_cryptographys_signature(
    private: rsa.RSAPrivateKey, algorithm: str
) -> None:
    assert verify(public(private), algorithm, MESSAGE, sign(private, algorithm))


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "PS512"])
def test_a_key_of_a_size_not_a_multiple_of_8_verifies(
    odd: rsa.RSAPrivateKey, algorithm: str
) -> None:
    assert verify(public(odd), algorithm, MESSAGE, sign(odd, algorithm))


def test_a_4096_bit_key_and_a_long_message_verify() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    message = b"x" * 100_000
    for algorithm in ("RS256", "PS512"):
        assert verify(public(private), algorithm, message, sign(private, algorithm, message))


def test_a_hand_made_pkcs1_block_verifies(private: rsa.RSAPrivateKey) -> None:
    """The forging below is sound: the exact block, signed the same way, passes."""
    key = public(private)
    t = DIGEST_INFO_PREFIXES["sha256"] + hashlib.sha256(MESSAGE).digest()
    signature = raw_signature(private, pkcs1_block(key.size, t))
    assert signature == sign(private, "RS256")
    assert verify(key, "RS256", MESSAGE, signature)


# -- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_tampered_message_or_signature_or_another_key_is_refused(
    private: rsa.RSAPrivateKey, other: rsa.RSAPrivateKey, algorithm: str
) -> None:
    key, signature = public(private), sign(private, algorithm)
    assert not verify(key, algorithm, MESSAGE + b"x", signature)
    tampered = bytearray(signature)
    tampered[len(tampered) // 2] ^= 0x01
    assert not verify(key, algorithm, MESSAGE, bytes(tampered))
    assert not verify(public(other), algorithm, MESSAGE, signature)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256"])
def test_a_signature_of_the_wrong_length_is_refused(
    private: rsa.RSAPrivateKey, algorithm: str
) -> None:
    key, signature = public(private), sign(private, algorithm)
    # A leading zero octet leaves the integer as it was: only the length check refuses it.
    for wrong in (b"\x00" + signature, signature[1:], signature[:-1], b""):
        assert not verify(key, algorithm, MESSAGE, wrong)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256"])
def test_a_signature_not_below_the_modulus_is_refused(
    odd: rsa.RSAPrivateKey, algorithm: str
) -> None:
    key, signature = public(odd), sign(odd, algorithm)
    # s + n is s modulo n, and k octets long: only the range check refuses it.
    over = int.from_bytes(signature) + key.n
    assert not verify(key, algorithm, MESSAGE, over.to_bytes(key.size))
    assert not verify(key, algorithm, MESSAGE, key.n.to_bytes(key.size))
    assert not verify(key, algorithm, MESSAGE, b"\xff" * key.size)


def test_a_pkcs1_block_with_garbage_after_the_digest_is_refused(
    private: rsa.RSAPrivateKey,
) -> None:
    key = public(private)
    t = DIGEST_INFO_PREFIXES["sha256"] + hashlib.sha256(MESSAGE).digest() + b"garbage"
    assert not verify(key, "RS256", MESSAGE, raw_signature(private, pkcs1_block(key.size, t)))


@pytest.mark.parametrize(
    "digest_info",
    [
        # SHA-256's AlgorithmIdentifier without its NULL parameters.
        bytes.fromhex("302f300b0609608648016503040201") + bytes.fromhex("0420"),
        # SHA-512's OID in front of a SHA-256 digest.
        bytes.fromhex("3031300d060960864801650304020305000420"),
    ],
)
def test_a_pkcs1_block_with_another_digest_info_is_refused(
    private: rsa.RSAPrivateKey, digest_info: bytes
) -> None:
    key = public(private)
    t = digest_info + hashlib.sha256(MESSAGE).digest()
    assert not verify(key, "RS256", MESSAGE, raw_signature(private, pkcs1_block(key.size, t)))


def test_a_pkcs1_block_with_short_padding_is_refused(private: rsa.RSAPrivateKey) -> None:
    """Fewer 0xff octets and the room they leave filled before the 00 01: not the block."""
    key = public(private)
    t = DIGEST_INFO_PREFIXES["sha256"] + hashlib.sha256(MESSAGE).digest()
    block = b"\x00\x01" + b"\xff" * 8 + b"\x00" + t
    block = block + b"\x00" * (key.size - len(block))
    assert not verify(key, "RS256", MESSAGE, raw_signature(private, block))


def test_an_rs_signature_does_not_pass_as_ps_nor_a_hash_as_another(
    private: rsa.RSAPrivateKey,
) -> None:
    key = public(private)
    assert not verify(key, "PS256", MESSAGE, sign(private, "RS256"))
    assert not verify(key, "RS256", MESSAGE, sign(private, "PS256"))
    assert not verify(key, "RS384", MESSAGE, sign(private, "RS256"))
    assert not verify(key, "PS512", MESSAGE, sign(private, "PS256"))


@pytest.mark.parametrize("salt", [0, 20, 33, 64])
def test_pss_with_a_salt_other_than_the_hash_length_is_refused(
    private: rsa.RSAPrivateKey, salt: int
) -> None:
    assert not verify(public(private), "PS256", MESSAGE, sign(private, "PS256", salt=salt))


# -- keys -------------------------------------------------------------------------------------


def test_keys_under_2048_bits_are_refused() -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(ValueError, match="1024-bit"):
        public(short)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"kty": "EC"}, "not an RSA key"),
        ({"n": None}, "base64url"),
        ({"e": 65537}, "base64url"),
        ({"e": "AQ"}, "exponent"),  # e = 1
        ({"e": "AAEAAA"}, "exponent"),  # even
        ({"n": "not base64!"}, "base64url"),
        ({"e": "AQAB="}, "base64url"),  # padded
    ],
)
def test_a_jwk_that_cannot_verify_is_refused(
    private: rsa.RSAPrivateKey, change: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        RsaPublicKey.from_jwk({**jwk(private), **change})


def test_base64url_is_read_in_its_canonical_unpadded_form_only() -> None:
    assert base64url_decode("AQAB") == b"\x01\x00\x01"
    assert base64url_decode("_-8") == b"\xff\xef"
    for bad in ("AQAB=", "AQ+B", "A", "AR"):  # padding, '+', an impossible length, stray bits
        with pytest.raises(ValueError):
            base64url_decode(bad)
