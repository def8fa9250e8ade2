"""DPoP (RFC 9449) without the real server: the proofs, and the nonce
retries against a throwaway HTTP server in this process that plays an
issuer with nonces on and an API behind a guard (a stand-in for the retry
logic only; tests/test_end_to_end.py runs against the real one)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from authagent import AuthAgentClient, AuthAgentError, SigningKey, Token, dpop_proof, jwk_thumbprint
from stdlib_rsa import RSAKey, verify_rs256


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def parts(jwt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, payload, _ = jwt.split(".")
    return json.loads(unb64url(head)), json.loads(unb64url(payload))


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa() -> RSAKey:
    return RSAKey.generate()


def keys(rsa: RSAKey) -> list[tuple[SigningKey, Callable[[str, dict[str, str]], bool]]]:
    """A key of each algorithm there is a signer for, and a verifier of a
    JWT by the public JWK in its header: the plain-Python RSA key always,
    the cryptography package's ES256, EdDSA and PS256 keys when it is
    installed (it is no dependency of the SDK)."""
    out: list[tuple[SigningKey, Callable[[str, dict[str, str]], bool]]] = [(rsa.signing_key(), verify_rs256)]
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa as crsa
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    except ImportError:
        return out

    def verifier(check: Callable[[dict[str, str], bytes, bytes], None]) -> Callable[[str, dict[str, str]], bool]:
        def verify(jwt: str, jwk: dict[str, str]) -> bool:
            head, payload, sig = jwt.split(".")
            try:
                check(jwk, unb64url(sig), f"{head}.{payload}".encode())
                return True
            except InvalidSignature:
                return False

        return verify

    def number(s: str) -> int:
        return int.from_bytes(unb64url(s), "big")

    def es256(jwk: dict[str, str], sig: bytes, data: bytes) -> None:
        public = ec.EllipticCurvePublicNumbers(number(jwk["x"]), number(jwk["y"]), ec.SECP256R1()).public_key()
        public.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")), data, ec.ECDSA(hashes.SHA256()))

    def eddsa(jwk: dict[str, str], sig: bytes, data: bytes) -> None:
        ed25519.Ed25519PublicKey.from_public_bytes(unb64url(jwk["x"])).verify(sig, data)

    def ps256(jwk: dict[str, str], sig: bytes, data: bytes) -> None:
        public = crsa.RSAPublicNumbers(number(jwk["e"]), number(jwk["n"])).public_key()
        public.verify(sig, data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())

    out += [
        (SigningKey.generate("ES256"), verifier(es256)),
        (SigningKey.generate("EdDSA"), verifier(eddsa)),
        (SigningKey.generate("PS256"), verifier(ps256)),
    ]
    return out


def test_a_proof_carries_the_public_key_and_the_claims_and_verifies(rsa: RSAKey) -> None:
    for key, verify in keys(rsa):
        now = time.time()
        proof = dpop_proof(key, method="POST", url="https://api.example/v1/items?page=2#top", access_token="the-access-token", nonce="n-1")
        header, claims = parts(proof)
        assert verify(proof, header["jwk"]), f"{key.alg}: the signature verifies with the header's jwk"
        assert set(header) == {"typ", "alg", "jwk"}
        assert header["typ"] == "dpop+jwt" and header["alg"] == key.alg
        assert key.public_jwk is not None
        members = {"EC": {"kty", "crv", "x", "y"}, "OKP": {"kty", "crv", "x"}, "RSA": {"kty", "n", "e"}}[key.public_jwk["kty"]]
        assert set(header["jwk"]) == members, "public members only: no d, kid, alg or use"
        assert all(header["jwk"][m] == key.public_jwk[m] for m in members)
        assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce"}
        assert claims["htm"] == "POST"
        assert claims["htu"] == "https://api.example/v1/items", "no query, no fragment"
        assert abs(claims["iat"] - now) < 5
        assert len(unb64url(claims["jti"])) >= 16, "at least 128 random bits"
        assert claims["ath"] == ath("the-access-token")
        assert claims["nonce"] == "n-1"
        another = dpop_proof(key, method="POST", url="https://api.example/v1/items")
        assert set(parts(another)[1]) == {"jti", "htm", "htu", "iat"}, "no ath or nonce unless given"
        assert parts(another)[1]["jti"] != claims["jti"]
    other = RSAKey.generate().public_jwk()
    assert not verify_rs256(dpop_proof(rsa.signing_key(), method="GET", url="https://a.example/"), other), "another key does not verify it"


def test_keys_a_proof_cannot_use(rsa: RSAKey) -> None:
    with pytest.raises(ValueError, match="public_jwk"):
        dpop_proof(SigningKey(sign=rsa.sign_rs256, alg="RS256"), method="GET", url="https://a.example/")
    leaked = SigningKey(sign=rsa.sign_rs256, alg="RS256", public_jwk={**rsa.public_jwk(), "d": "secret"})
    with pytest.raises(ValueError, match="private"):
        dpop_proof(leaked, method="GET", url="https://a.example/")
    with pytest.raises(ValueError):
        dpop_proof(SigningKey(sign=rsa.sign_rs256, alg="RS256", public_jwk={"kty": "oct", "k": "x"}), method="GET", url="https://a.example/")
    with pytest.raises(TypeError):
        AuthAgentClient("https://auth.example", dpop="yes").authenticate(agent_id="bot", agent_secret="s")  # type: ignore[arg-type]


def test_the_thumbprint_is_rfc_7638s() -> None:
    """RFC 7638 §3.1's example key and thumbprint."""
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


class FakeIssuer:
    """An HTTP server in this process: /api/agent-auth and /oauth2/token
    answer use_dpop_nonce (400) to a proof without the nonce it wants, and
    /api/items 401 with a WWW-Authenticate DPoP challenge."""

    def __init__(self) -> None:
        self.nonce = "nonce-1"
        self.always = False
        self.seen: list[dict[str, Any]] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def handle_any(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                proof = self.headers.get("DPoP")
                header, claims = parts(proof) if proof else (None, None)
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    fields = json.loads(raw or "{}")
                else:
                    fields = dict(p.split("=", 1) for p in raw.split("&") if "=" in p)
                issuer.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "proof": proof,
                        "header": header,
                        "claims": claims,
                        "fields": fields,
                        "body": raw,
                    }
                )
                fresh = claims is not None and claims.get("nonce") == issuer.nonce and not issuer.always
                nonce = {"DPoP-Nonce": issuer.nonce}
                if self.path in ("/api/agent-auth", "/oauth2/token"):
                    if proof and not fresh:
                        return self.answer(400, {"error": "use_dpop_nonce", "error_description": "Authorization server requires nonce in DPoP proof"}, nonce)
                    token = {"access_token": f"at-{len(issuer.seen)}", "token_type": "DPoP" if proof else "Bearer", "expires_in": 3600, "scope": "profile", "refresh_token": "rt"}
                    return self.answer(200, {"success": True, "data": token} if self.path == "/api/agent-auth" else token, nonce)
                if self.path.startswith("/api/items"):
                    if not fresh:
                        challenge = 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof", algs="ES256 EdDSA PS256 RS256"'
                        return self.answer(401, {"error": "use_dpop_nonce"}, {**nonce, "WWW-Authenticate": challenge})
                    return self.answer(200, {"ok": True, "body": raw}, {})
                self.answer(404, {"error": "invalid_request"}, {})

            do_GET = do_POST = do_PUT = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self, nonce: str) -> None:
        self.nonce, self.always, self.seen = nonce, False, []


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeIssuer]:
    f = FakeIssuer()
    yield f
    f.server.shutdown()
    f.server.server_close()


def test_a_token_request_is_retried_once_with_the_nonce_and_a_new_assertion(fake: FakeIssuer, rsa: RSAKey) -> None:
    fake.reset("nonce-a")
    key = rsa.signing_key("bot-1")
    client = AuthAgentClient(fake.base)
    token = client.authenticate(agent_id="bot", key=key, dpop=True)
    assert token.token_type == "DPoP" and token.dpop_bound and token.dpop_key is key, "dpop=True with key=: the agent's own key"
    assert "dpop_key" not in repr(token)
    first, second = fake.seen
    assert "nonce" not in first["claims"] and second["claims"]["nonce"] == "nonce-a"
    assert first["claims"]["jti"] != second["claims"]["jti"]
    assert first["fields"]["client_assertion"] != second["fields"]["client_assertion"], "a retry never replays an assertion"
    for r in fake.seen:
        assert r["claims"]["htm"] == "POST" and r["claims"]["htu"] == fake.base + "/api/agent-auth"
        assert "ath" not in r["claims"], "no ath at the token endpoint"
        assert r["header"]["jwk"] == rsa.public_jwk()
        assert verify_rs256(r["proof"], r["header"]["jwk"]) and verify_rs256(r["fields"]["client_assertion"], rsa.public_jwk())

    # The nonce is kept for the origin: the next proof carries it at once.
    client.authenticate(agent_id="bot", key=key, dpop=True)
    assert len(fake.seen) == 3 and fake.seen[2]["claims"]["nonce"] == "nonce-a"


def test_a_guarded_api_gets_the_dpop_scheme_and_a_proof_and_a_retry_never_bearer(fake: FakeIssuer, rsa: RSAKey) -> None:
    fake.reset("nonce-api")
    own = rsa.signing_key()
    client = AuthAgentClient(fake.base)
    token = client.authenticate(agent_id="bot", agent_secret="s", dpop=own)
    assert token.token_type == "DPoP" and token.dpop_key is own, "a separate key for an agent with a secret"
    fake.seen = []
    resp = client.fetch(token, fake.base + "/api/items?page=2", method="post", body=b"hello", headers={"Content-Type": "text/plain"})
    assert resp.status == 200 and resp.json()["body"] == "hello"
    assert len(fake.seen) == 1, "the nonce the issuer gave is for this origin"
    fake.nonce = "nonce-api-2"
    assert client.fetch(token, fake.base + "/api/items").status == 200
    assert len(fake.seen) == 3, "a stale nonce: one retry with the new one"
    for r in fake.seen:
        assert r["authorization"] == f"DPoP {token.access_token}"
        assert r["claims"]["ath"] == ath(token.access_token)
        assert r["claims"]["htu"] == fake.base + "/api/items"
    assert fake.seen[0]["claims"]["htm"] == "POST" and fake.seen[0]["body"] == "hello"
    assert fake.seen[1]["claims"]["nonce"] == "nonce-api" and fake.seen[2]["claims"]["nonce"] == "nonce-api-2"
    assert fake.seen[2]["claims"]["htm"] == "GET"

    # The profile endpoint gets the same; a bound token without its key is a TypeError, never Bearer.
    keyless = Token(access_token=token.access_token, token_type="DPoP", expires_in=60, expires_at=time.time() + 60)
    before = len(fake.seen)
    with pytest.raises(TypeError, match="needs the key"):
        client.fetch(keyless, fake.base + "/api/items")
    with pytest.raises(TypeError, match="needs the key"):
        client.get_profile(keyless)
    assert len(fake.seen) == before

    # A bearer token carries no proof.
    bearer = client.authenticate(agent_id="bot", agent_secret="s")
    assert bearer.token_type == "Bearer" and bearer.dpop_key is None
    assert client.fetch(bearer, fake.base + "/api/items").status == 401
    assert fake.seen[-1]["authorization"] == f"Bearer {bearer.access_token}" and fake.seen[-1]["claims"] is None


def test_one_retry_only(fake: FakeIssuer, rsa: RSAKey) -> None:
    fake.reset("nonce-b")
    fake.always = True
    client = AuthAgentClient(fake.base, dpop=rsa.signing_key())
    with pytest.raises(AuthAgentError) as err:
        client.authenticate(agent_id="bot", agent_secret="s")
    assert err.value.error == "use_dpop_nonce" and err.value.status == 400
    assert len(fake.seen) == 2
    token = Token(access_token="at", token_type="DPoP", expires_in=60, dpop_key=rsa.signing_key())
    assert client.fetch(token, fake.base + "/api/items").status == 401
    assert len(fake.seen) == 4


def test_refresh_proves_the_bound_key_and_dpop_false_opts_out(fake: FakeIssuer, rsa: RSAKey) -> None:
    fake.reset("nonce-c")
    client_key, own = rsa.signing_key("client"), RSAKey.generate().signing_key("own")
    client = AuthAgentClient(fake.base, dpop=client_key)
    token = client.authenticate(agent_id="bot", agent_secret="s", dpop=own)
    assert token.dpop_key is own, "the call's dpop beats the client's"
    refreshed = client.refresh(token, client_id="public-app")
    assert refreshed.token_type == "DPoP" and refreshed.dpop_key is own
    last = fake.seen[-1]
    assert last["fields"]["grant_type"] == "refresh_token" and last["fields"]["client_id"] == "public-app"
    assert last["header"]["jwk"]["n"] == (own.public_jwk or {})["n"], "the bound key, not the client's"
    by_string = client.refresh("rt", client_id="public-app")
    assert by_string.dpop_key is client_key and fake.seen[-1]["header"]["jwk"]["n"] == rsa.public_jwk()["n"]

    fake.seen = []
    plain = client.authenticate(agent_id="bot", agent_secret="s", dpop=False)
    assert plain.token_type == "Bearer" and fake.seen[0]["claims"] is None


def test_dpop_true_without_a_key_generates_one_per_client(fake: FakeIssuer) -> None:
    """With the cryptography package (no dependency of the SDK)."""
    pytest.importorskip("cryptography")
    fake.reset("nonce-d")
    client = AuthAgentClient(fake.base, dpop=True)
    a = client.authenticate(agent_id="bot", agent_secret="s")
    b = client.authenticate(agent_id="bot", agent_secret="s")
    assert a.dpop_key is not None and a.dpop_key is b.dpop_key and a.dpop_key.alg == "ES256"
    assert fake.seen[-1]["header"]["jwk"]["kty"] == "EC"
    assert AuthAgentClient(fake.base, dpop=True).authenticate(agent_id="bot", agent_secret="s").dpop_key is not a.dpop_key
