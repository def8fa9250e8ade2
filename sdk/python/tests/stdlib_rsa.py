"""A test-only RSA key in plain Python, so the SDK's key support is tested
with the standard library alone (the SDK takes a signing function; agents
pass one of the ``cryptography`` package or a KMS). Not for real use: it
makes no attempt at constant time."""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from dataclasses import dataclass

from authagent import SigningKey

# DigestInfo of SHA-256 (RFC 8017 §9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_SMALL_PRIMES = [p for p in range(3, 5000, 2) if all(p % q for q in range(3, math.isqrt(p) + 1, 2))]
_SMALL_PRODUCT = math.prod(_SMALL_PRIMES)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _probably_prime(n: int, rounds: int = 24) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int) -> int:
    while True:
        c = secrets.randbits(bits) | (3 << (bits - 2)) | 1  # the top two bits set: p * q has 2 * bits bits
        if math.gcd(c, _SMALL_PRODUCT) == 1 and math.gcd(c - 1, e) == 1 and _probably_prime(c):
            return c


def _emsa_pkcs1_v15(message: bytes, k: int) -> int:
    t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    return int.from_bytes(b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t, "big")


@dataclass(frozen=True)
class RSAKey:
    n: int
    e: int
    d: int

    @classmethod
    def generate(cls, bits: int = 2048) -> RSAKey:
        e = 65537
        while True:
            p, q = _prime(bits // 2, e), _prime(bits // 2, e)
            if p != q:
                break
        return cls(n=p * q, e=e, d=pow(e, -1, math.lcm(p - 1, q - 1)))

    @property
    def size(self) -> int:
        return (self.n.bit_length() + 7) // 8

    def sign_rs256(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.1)."""
        return pow(_emsa_pkcs1_v15(message, self.size), self.d, self.n).to_bytes(self.size, "big")

    def public_jwk(self) -> dict[str, str]:
        return {"kty": "RSA", "n": _b64url(self.n.to_bytes(self.size, "big")), "e": _b64url(self.e.to_bytes(3, "big"))}

    def signing_key(self, key_id: str | None = None) -> SigningKey:
        return SigningKey(sign=self.sign_rs256, alg="RS256", key_id=key_id, public_jwk=self.public_jwk())


def verify_rs256(jwt: str, jwk: dict[str, str]) -> bool:
    """Checks an RS256 JWT's signature against a public JWK."""
    head, payload, sig = jwt.split(".")
    n, e = int.from_bytes(_unb64url(jwk["n"]), "big"), int.from_bytes(_unb64url(jwk["e"]), "big")
    k = (n.bit_length() + 7) // 8
    return pow(int.from_bytes(_unb64url(sig), "big"), e, n) == _emsa_pkcs1_v15(f"{head}.{payload}".encode(), k)
