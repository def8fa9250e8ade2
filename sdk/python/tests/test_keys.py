"""An agent with a key, no secret: assertions and what the client sends,
without a server (a recording transport stands in for it)."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from typing import Any

import pytest

from authagent import CLIENT_ASSERTION_TYPE, AuthAgentClient, SigningKey, client_assertion, ecdsa_der_to_raw
from stdlib_rsa import RSAKey, verify_rs256

ISSUER = "https://auth.example"


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def parts(jwt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, payload, _ = jwt.split(".")
    return json.loads(unb64url(head)), json.loads(unb64url(payload))


@pytest.fixture(scope="module")
def rsa() -> RSAKey:
    return RSAKey.generate()


class Recording(AuthAgentClient):
    """A client whose transport records each request and answers as the
    issuer would, without a network."""

    def __init__(self) -> None:
        super().__init__(ISSUER)
        self.seen: list[dict[str, Any]] = []

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        if headers.get("Content-Type") == "application/x-www-form-urlencoded":
            fields = dict(urllib.parse.parse_qsl(body.decode())) if body else {}
        else:
            fields = json.loads(body) if body else {}
        self.seen.append({"method": method, "url": url, "headers": headers, "body": fields})
        path = url[len(ISSUER) :]
        token = {"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "scope": "profile"}
        answers: dict[str, Any] = {
            "/oauth2/token": {**token, "refresh_token": "rt"},
            "/oauth2/introspect": {"active": True, "sub": "bot"},
            "/oauth2/revoke": None,
            "/api/agent-auth": {"success": True, "data": {**token, "redirect_to": "https://site.example/cb?code=c"}},
            "/api/agents/keys": {"success": True, "data": {"agent_id": "bot", "token_endpoint_auth_method": "private_key_jwt", "kids": ["bot-2"]}},
            "/api/register-agent": {"success": True, "data": {"agent_id": "bot", "token_endpoint_auth_method": "private_key_jwt", "kids": ["bot-1"]}},
        }
        answer = answers[path]
        return 200, {}, b"" if answer is None else json.dumps(answer).encode()


def test_an_assertion_verifies_and_carries_the_claims(rsa: RSAKey) -> None:
    key = rsa.signing_key("bot-1")
    now = time.time()
    a = client_assertion(key, client_id="bot", audience=ISSUER + "/oauth2/token")
    assert verify_rs256(a, rsa.public_jwk())
    assert not verify_rs256(a, RSAKey.generate().public_jwk()), "another key does not verify it"
    header, claims = parts(a)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "bot-1"}
    assert claims["iss"] == claims["sub"] == "bot"
    assert claims["aud"] == ISSUER + "/oauth2/token"
    assert abs(claims["iat"] - now) < 5 and claims["exp"] - claims["iat"] == 60
    assert len(claims["jti"]) >= 22
    assert "kid" not in parts(client_assertion(rsa.signing_key(), client_id="bot", audience=ISSUER))[0]


def test_the_public_jwk_and_set(rsa: RSAKey) -> None:
    key = rsa.signing_key("bot-1")
    assert key.jwks() == {"keys": [{**rsa.public_jwk(), "kid": "bot-1", "alg": "RS256", "use": "sig"}]}
    assert "public_jwk" not in repr(key) and "sign=" not in repr(key)
    leaked = SigningKey(sign=rsa.sign_rs256, alg="RS256", public_jwk={**rsa.public_jwk(), "d": "secret"})
    with pytest.raises(ValueError, match="private"):
        leaked.jwks()
    with pytest.raises(ValueError):
        SigningKey(sign=rsa.sign_rs256).jwks()  # no public_jwk
    for alg in ("HS256", "none", "ES384"):
        with pytest.raises(ValueError):
            SigningKey(sign=rsa.sign_rs256, alg=alg)
    with pytest.raises(TypeError):
        SigningKey(sign=b"not callable", alg="RS256")  # type: ignore[arg-type]


def test_every_request_carries_a_new_assertion_for_its_endpoint(rsa: RSAKey) -> None:
    key = rsa.signing_key("bot-1")
    client = Recording()
    agent = client.register_agent(agent_id="bot", jwks=key.jwks(), model_name="m", owner_name="O", owner_email="o@example.com")
    assert agent.token_endpoint_auth_method == "private_key_jwt" and agent.kids == ["bot-1"]
    assert client.seen[0]["body"]["jwks"] == key.jwks() and "agent_secret" not in client.seen[0]["body"]

    client.authenticate(agent_id="bot", key=key, scope="data:read")
    client.authenticate(agent_id="bot", key=key)
    assert client.approve("req-1", agent_id="bot", key=key, client_id="site") == "https://site.example/cb?code=c"
    assert client.introspect("at", client_id="bot", key=key).active
    client.revoke("at", client_id="bot", key=key)
    client.refresh("rt", client_id="bot", key=key)
    assert client.replace_keys({"keys": []}, agent_id="bot", key=key).kids == ["bot-2"]

    sent = client.seen[1:]
    assert [(r["method"], r["url"][len(ISSUER) :]) for r in sent] == [
        ("POST", "/api/agent-auth"),
        ("POST", "/api/agent-auth"),
        ("POST", "/api/agent-auth"),
        ("POST", "/oauth2/introspect"),
        ("POST", "/oauth2/revoke"),
        ("POST", "/oauth2/token"),
        ("PUT", "/api/agents/keys"),
    ]
    jtis = set()
    for r in sent:
        body = r["body"]
        assert "Authorization" not in r["headers"], r["url"]
        assert "agent_secret" not in body and "client_secret" not in body
        assert body["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        assert body.get("agent_id", body.get("client_id")) == "bot"
        assert verify_rs256(body["client_assertion"], rsa.public_jwk())
        header, claims = parts(body["client_assertion"])
        assert header["kid"] == "bot-1"
        assert claims["aud"] == r["url"], "aud is the endpoint the assertion goes to"
        jtis.add(claims["jti"])
    assert len(jtis) == len(sent), "a new jti each time"
    assert sent[0]["body"]["scope"] == "data:read"
    assert sent[2]["body"]["request_id"] == "req-1" and sent[2]["body"]["client_id"] == "site"
    assert sent[5]["body"]["grant_type"] == "refresh_token"
    assert sent[6]["body"]["jwks"] == {"keys": []}


def test_a_secret_and_a_key_together_or_neither_are_a_type_error(rsa: RSAKey) -> None:
    key = rsa.signing_key()
    client = Recording()
    with pytest.raises(TypeError):
        client.authenticate(agent_id="bot", agent_secret="s", key=key)
    with pytest.raises(TypeError):
        client.authenticate(agent_id="bot")
    with pytest.raises(TypeError):
        client.approve("r", agent_id="bot", agent_secret="s", key=key)
    with pytest.raises(TypeError):
        client.revoke("t", client_id="bot", client_secret="s", key=key)
    with pytest.raises(TypeError):
        client.introspect("t", client_id="bot")
    with pytest.raises(TypeError):
        client.register_agent(agent_id="bot", agent_secret="s", jwks=key.jwks(), model_name="m", owner_name="O", owner_email="o@example.com")
    assert client.seen == []


def der(r: int, s: int) -> bytes:
    def integer(v: int) -> bytes:
        b = v.to_bytes((v.bit_length() + 8) // 8, "big")  # a leading zero when the top bit is set
        return b"\x02" + bytes([len(b)]) + b

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def test_ecdsa_der_to_raw() -> None:
    for r, s in [(1, 2), (2**255 + 12345, 2**200), (2**256 - 1, 7)]:
        assert ecdsa_der_to_raw(der(r, s)) == r.to_bytes(32, "big") + s.to_bytes(32, "big")
    for bad in [b"", b"\x30\x00", b"\x31" + der(1, 2)[1:], der(1, 2) + b"\x00", der(2**256, 1), der(1, 2)[:-1], bytes(64)]:
        with pytest.raises(ValueError):
            ecdsa_der_to_raw(bad)


def test_a_der_signature_for_es256_is_refused_with_a_hint() -> None:
    key = SigningKey(sign=lambda data: der(2**255 + 1, 2**255 + 3), alg="ES256")
    with pytest.raises(ValueError, match="ecdsa_der_to_raw"):
        client_assertion(key, client_id="bot", audience=ISSUER)


def test_keys_of_the_cryptography_package() -> None:
    """SigningKey.from_cryptography, when the cryptography package is
    installed (it is no dependency of the SDK)."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    def check(private_key: Any, alg: str, verify: Any, ask: str | None = None) -> None:
        key = SigningKey.from_cryptography(private_key, key_id="k", alg=ask)
        assert key.alg == alg
        jwk = key.jwks()["keys"][0]
        assert jwk["kid"] == "k" and jwk["alg"] == alg and jwk["use"] == "sig" and "d" not in jwk
        a = client_assertion(key, client_id="bot", audience=ISSUER)
        head, payload, sig = a.split(".")
        assert parts(a)[0]["alg"] == alg
        verify(unb64url(sig), f"{head}.{payload}".encode())  # raises when it does not verify

    p256 = ec.generate_private_key(ec.SECP256R1())

    def verify_es256(sig: bytes, data: bytes) -> None:
        assert len(sig) == 64
        der_sig = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        p256.public_key().verify(der_sig, data, ec.ECDSA(hashes.SHA256()))

    check(p256, "ES256", verify_es256)
    jwk = SigningKey.from_cryptography(p256).jwk()
    nums = p256.public_key().public_numbers()
    assert (int.from_bytes(unb64url(jwk["x"]), "big"), int.from_bytes(unb64url(jwk["y"]), "big")) == (nums.x, nums.y)

    ed = ed25519.Ed25519PrivateKey.generate()
    check(ed, "EdDSA", lambda sig, data: ed.public_key().verify(sig, data))

    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    check(r, "RS256", lambda sig, data: r.public_key().verify(sig, data, padding.PKCS1v15(), hashes.SHA256()))
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    check(r, "PS256", lambda sig, data: r.public_key().verify(sig, data, pss, hashes.SHA256()), ask="PS256")

    with pytest.raises(ValueError):
        SigningKey.from_cryptography(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError):
        SigningKey.from_cryptography(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(TypeError):
        SigningKey.from_cryptography("not a key")
