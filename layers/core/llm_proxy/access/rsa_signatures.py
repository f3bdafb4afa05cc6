"""RSA signature verification with the standard library alone, for JWTs' RS256-512 and PS256-512
(JWA, RFC 7518 sections 3.3 and 3.5). The gateway only ever verifies with an IdP's public key,
so `cryptography` (and its bundled OpenSSL) stays out of the Lambda layers.

Both schemes follow RFC 8017 (PKCS #1 v2.2) step by step:
- RSASSA-PKCS1-v1_5-VERIFY (section 8.2.2): the signature is exactly k octets, s < n, m = s^e
  mod n, and the expected EMSA-PKCS1-v1_5 block (section 9.2, with the DigestInfo prefixes of
  its note 1) is *encoded* and compared byte for byte; the padding is never parsed, so a block
  with anything after the digest or another DigestInfo cannot pass.
- RSASSA-PSS-VERIFY (section 8.1.2) with EMSA-PSS-VERIFY (section 9.1.2) and MGF1 (appendix
  B.2.1) over the same hash, the salt as long as the hash (RFC 7518 section 3.5).

A JWK's `n` and `e` are Base64urlUInt values (RFC 7518 section 6.3.1); keys under 2048 bits are
refused (RFC 7518 sections 3.3 and 3.5 require at least 2048)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MIN_KEY_BITS = 2048
# Bounds the work a published key can ask of each verification.
MAX_KEY_BITS = 16384

# RFC 8017 section 9.2 note 1: DER of DigestInfo up to the digest itself.
DIGEST_INFO_PREFIXES = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def base64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 section 2), in its one canonical spelling only."""
    if not BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise ValueError("not canonical base64url")
    return raw


@dataclass(frozen=True)
class RsaPublicKey:
    n: int
    e: int

    @property
    def size(self) -> int:
        """k: the modulus's length in octets."""
        return (self.n.bit_length() + 7) // 8

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> RsaPublicKey:
        """The key of an RSA JWK (ValueError, saying why, for one that cannot verify)."""
        if jwk.get("kty") != "RSA":
            raise ValueError("not an RSA key")
        n, e = jwk.get("n"), jwk.get("e")
        if not isinstance(n, str) or not isinstance(e, str):
            raise ValueError("'n' and 'e' must be base64url strings")
        key = cls(int.from_bytes(base64url_decode(n)), int.from_bytes(base64url_decode(e)))
        bits = key.n.bit_length()
        if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
            raise ValueError(f"a {bits}-bit modulus (from {MIN_KEY_BITS} to {MAX_KEY_BITS})")
        # e = 1 would make every message's block its own signature.
        if key.e < 3 or key.e % 2 == 0 or key.e >= key.n:
            raise ValueError("an unusable public exponent")
        return key

    def representative(self, signature: bytes) -> int | None:
        """RSAVP1 (section 5.2.2) after the length check: m = s^e mod n, or None when the
        signature is not k octets or s is not below n."""
        if len(signature) != self.size:
            return None
        s = int.from_bytes(signature)
        if s >= self.n:
            return None
        return pow(s, self.e, self.n)


def verify_pkcs1_v1_5(key: RsaPublicKey, hash_name: str, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 section 8.2.2)."""
    m = key.representative(signature)
    if m is None:
        return False
    k = key.size
    t = DIGEST_INFO_PREFIXES[hash_name] + hashlib.new(hash_name, message).digest()
    if k < len(t) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(m.to_bytes(k), expected)


def verify_pss(key: RsaPublicKey, hash_name: str, message: bytes, signature: bytes) -> bool:
    """RSASSA-PSS-VERIFY (RFC 8017 section 8.1.2), salt length = hash length."""
    m = key.representative(signature)
    if m is None:
        return False
    em_bits = key.n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    if m.bit_length() > 8 * em_len:  # I2OSP: "integer too large"
        return False
    return emsa_pss_verify(message, m.to_bytes(em_len), em_bits, hash_name)


def emsa_pss_verify(message: bytes, em: bytes, em_bits: int, hash_name: str) -> bool:
    """EMSA-PSS-VERIFY (RFC 8017 section 9.1.2), steps 2 to 14, with sLen = hLen."""
    m_hash = hashlib.new(hash_name, message).digest()
    h_len = s_len = len(m_hash)
    em_len = len(em)
    if em_len < h_len + s_len + 2 or em[-1] != 0xBC:
        return False
    masked_db, h = em[: em_len - h_len - 1], em[em_len - h_len - 1 : -1]
    zero_bits = 8 * em_len - em_bits
    if masked_db[0] >> (8 - zero_bits):
        return False
    db_mask = mgf1(h, len(masked_db), hash_name)
    db = bytearray(a ^ b for a, b in zip(masked_db, db_mask, strict=True))
    db[0] &= 0xFF >> zero_bits
    padding = em_len - h_len - s_len - 2
    if any(db[:padding]) or db[padding] != 0x01:
        return False
    salt = bytes(db[-s_len:])
    expected = hashlib.new(hash_name, b"\x00" * 8 + m_hash + salt).digest()
    return hmac.compare_digest(h, expected)


def mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    """MGF1 (RFC 8017 appendix B.2.1)."""
    mask = b""
    counter = 0
    while len(mask) < length:
        mask += hashlib.new(hash_name, seed + counter.to_bytes(4)).digest()
        counter += 1
    return mask[:length]


Verifier = Callable[[RsaPublicKey, str, bytes, bytes], bool]

# JWA (RFC 7518 sections 3.3 and 3.5): each algorithm's scheme and hash.
ALGORITHMS: dict[str, tuple[Verifier, str]] = {
    "RS256": (verify_pkcs1_v1_5, "sha256"),
    "RS384": (verify_pkcs1_v1_5, "sha384"),
    "RS512": (verify_pkcs1_v1_5, "sha512"),
    "PS256": (verify_pss, "sha256"),
    "PS384": (verify_pss, "sha384"),
    "PS512": (verify_pss, "sha512"),
}


def verify(key: RsaPublicKey, algorithm: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is `key`'s signature of `message` under the JWA `algorithm` (one of
    ALGORITHMS; KeyError for any other)."""
    scheme, hash_name = ALGORITHMS[algorithm]
    return scheme(key, hash_name, message, signature)
