"""End to end against a real Caddy built from this repository.

The Go test e2e/sdk_test.go (TestPythonSDK) starts that Caddy and runs
these tests with its addresses in the environment; run alone, they skip.
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from authagent import CLIENT_ASSERTION_TYPE, AuthAgentClient, AuthAgentError, SigningKey, Token, client_assertion, dpop_proof, jwk_thumbprint
from stdlib_rsa import RSAKey

ISSUER = os.environ.get("AUTHAGENT_ISSUER", "")
GUARDED = os.environ.get("AUTHAGENT_GUARDED_URL", "")
CLIENT_ID = os.environ.get("AUTHAGENT_CLIENT_ID", "")
CLIENT_SECRET = os.environ.get("AUTHAGENT_CLIENT_SECRET", "")
REDIRECT_URI = os.environ.get("AUTHAGENT_REDIRECT_URI", "")
CLOSED_PORT = os.environ.get("AUTHAGENT_CLOSED_PORT", "9")
SITE = os.environ.get("AUTHAGENT_SITE_URL", "")
PUBLIC_CLIENT_ID = os.environ.get("AUTHAGENT_PUBLIC_CLIENT_ID", "")
PUBLIC_REDIRECT_URI = os.environ.get("AUTHAGENT_PUBLIC_REDIRECT_URI", "")
# A second Caddy with `dpop_nonce on`, and its API behind `agent_guard { dpop required }`.
NONCE_ISSUER = os.environ.get("AUTHAGENT_DPOP_NONCE_ISSUER", "")
NONCE_GUARDED = os.environ.get("AUTHAGENT_DPOP_NONCE_GUARDED_URL", "")

pytestmark = pytest.mark.skipif(not ISSUER, reason="run through `go test ./e2e -run TestPythonSDK`, which starts Caddy")

SECRET = "Test123456!"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def website_authorization_url(scope: str) -> tuple[str, str, str, str]:
    """The website's side: an authorization URL with PKCE S256, state and nonce."""
    verifier = b64url(secrets.token_bytes(32))
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
    )
    return f"{ISSUER}/oauth2/authorize?{query}", verifier, state, nonce


def post_form(path: str, form: dict[str, str]) -> dict:
    creds = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    req = urllib.request.Request(
        ISSUER + path,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": "Basic " + creds, "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def verify_rs256(id_token: str) -> dict:
    """Checks an RS256 ID token against the issuer's JWKS, in plain Python
    (RSASSA-PKCS1-v1_5 with SHA-256), and returns its claims."""
    header_b64, payload_b64, sig_b64 = id_token.split(".")
    header = json.loads(unb64url(header_b64))
    assert header["alg"] == "RS256"
    with urllib.request.urlopen(ISSUER + "/.well-known/jwks.json", timeout=10) as resp:
        keys = json.loads(resp.read())["keys"]
    key = next(k for k in keys if k["kid"] == header["kid"])
    n = int.from_bytes(unb64url(key["n"]), "big")
    e = int.from_bytes(unb64url(key["e"]), "big")
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(unb64url(sig_b64), "big"), e, n).to_bytes(k, "big")
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest = hashlib.sha256(f"{header_b64}.{payload_b64}".encode()).digest()
    assert em == b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info) - len(digest)) + b"\x00" + digest_info + digest
    return json.loads(unb64url(payload_b64))


@pytest.fixture(scope="module", autouse=True)
def limited_agent() -> None:
    """test_rate_limited's agent, registered before any authentication
    fails: once this address's budget of failures is spent, registrations
    are refused too."""
    AuthAgentClient(ISSUER).register_agent(
        agent_id="py-limited", agent_secret=SECRET, model_name="m", owner_name="O", owner_email="o@example.com"
    )


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def sign_in_to_the_js_website(sign_in, scope: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    """A browser opens the tiny website's /login (keeping its session
    cookie); sign_in(authorization_url) answers as the agent; the browser
    follows the redirect to /callback, where the website exchanges the code
    and verifies the ID token, and shows what it got."""
    browser = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with pytest.raises(urllib.error.HTTPError) as login:
        browser.open(SITE + "/login" + ("?" + urllib.parse.urlencode({"scope": scope}) if scope else ""), timeout=10)
    assert login.value.code == 302
    with browser.open(sign_in(login.value.headers["Location"]), timeout=10) as resp:
        return json.loads(resp.read())


def guarded_status(token: str) -> int:
    req = urllib.request.Request(GUARDED + "/x", headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_whole_flow() -> None:
    client = AuthAgentClient(ISSUER)
    agent = client.register_agent(
        agent_id="py-agent", agent_secret=SECRET, model_name="py-model", owner_name="Py Owner", owner_email="py@example.com"
    )
    assert agent.agent_id == "py-agent" and agent.agent_secret is None
    generated = client.register_agent(agent_id="py-generated", model_name="m", owner_name="O", owner_email="o@example.com")
    assert generated.agent_secret and len(generated.agent_secret) >= 32

    token = client.authenticate(agent_id="py-agent", agent_secret=SECRET)
    assert token.valid() and token.token_type == "Bearer"
    assert token.access_token not in repr(token)
    profile = client.get_profile(token.access_token)
    assert profile.model_name == "py-model" and profile.owner_email == "py@example.com"
    assert client.update_profile(token.access_token, model_name="py-model-2").model_name == "py-model-2"
    with pytest.raises(TypeError):
        client.update_profile(token.access_token, nickname="x")

    url, verifier, state, nonce = website_authorization_url("openid profile data:read")
    redirect = client.sign_in(url, agent_id="py-agent", agent_secret=SECRET)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(redirect).query)
    assert redirect.startswith(REDIRECT_URI) and query["state"] == [state]
    grant = post_form(
        "/oauth2/token",
        {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
    )
    claims = verify_rs256(grant["id_token"])
    assert claims["sub"] == "py-agent" and claims["nonce"] == nonce and claims["aud"] in (CLIENT_ID, [CLIENT_ID])

    refreshed = client.refresh(grant["refresh_token"], client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert refreshed.refresh_token and refreshed.refresh_token != grant["refresh_token"] and refreshed.id_token
    assert client.introspect(refreshed.access_token, client_id=CLIENT_ID, client_secret=CLIENT_SECRET).active
    assert guarded_status(refreshed.access_token) == 200
    client.revoke(refreshed.access_token, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert guarded_status(refreshed.access_token) == 401

    # The agent revokes its own token, as its own client.
    client.revoke(token.access_token, client_id="py-agent", client_secret=SECRET)
    assert not client.introspect(token.access_token, client_id="py-agent", client_secret=SECRET).active


def test_sign_in_to_the_js_website() -> None:
    """The tiny website (sdk/js/test/site.mjs) is the JS SDK's website side:
    its /login sends the agent to the issuer, its /callback exchanges the
    code and verifies the ID token."""
    client = AuthAgentClient(ISSUER)
    client.register_agent(agent_id="py-js", agent_secret=SECRET, model_name="m", owner_name="O", owner_email="o@example.com")
    done = sign_in_to_the_js_website(lambda url: client.sign_in(url, agent_id="py-js", agent_secret=SECRET))
    assert done["sub"] == "py-js" and "data:read" in done["scope"].split()
    assert guarded_status(done["access_token"]) == 200
    refreshed = client.refresh(done["refresh_token"], client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    client.revoke(refreshed.refresh_token, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with pytest.raises(AuthAgentError) as spent:
        client.refresh(refreshed.refresh_token, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert spent.value.error == "invalid_grant"


def test_errors() -> None:
    client = AuthAgentClient(ISSUER)
    client.register_agent(agent_id="py-errors", agent_secret=SECRET, model_name="m", owner_name="O", owner_email="o@example.com")

    with pytest.raises(AuthAgentError) as wrong:
        client.authenticate(agent_id="py-errors", agent_secret="Wrong-Secret-1!")
    assert wrong.value.error == "invalid_client" and wrong.value.status == 401

    url, _, _, _ = website_authorization_url("openid nonsense:scope")
    with pytest.raises(AuthAgentError) as refused:
        client.sign_in(url, agent_id="py-errors", agent_secret=SECRET)
    assert refused.value.error == "invalid_scope"

    with pytest.raises(AuthAgentError) as elsewhere:
        client.sign_in("https://elsewhere.example/oauth2/authorize?client_id=x", agent_id="py-errors", agent_secret=SECRET)
    assert elsewhere.value.error == "invalid_request"

    with pytest.raises(AuthAgentError) as down:
        AuthAgentClient(f"http://127.0.0.1:{CLOSED_PORT}", timeout=5).authenticate(agent_id="a", agent_secret="b")
    assert down.value.error == "network_error"


def test_expired_sign_in_request() -> None:
    """The server runs with `request_lifetime 10s`."""
    client = AuthAgentClient(ISSUER)
    client.register_agent(agent_id="py-late", agent_secret=SECRET, model_name="m", owner_name="O", owner_email="o@example.com")
    url, _, _, _ = website_authorization_url("openid profile")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        request_id = json.loads(resp.read())["request_id"]
    # The agent insists on another client: nothing is approved.
    with pytest.raises(AuthAgentError) as other:
        client.approve(request_id, agent_id="py-late", agent_secret=SECRET, client_id="another-site")
    assert other.value.error == "invalid_request" and "not approved" in other.value.error_description
    time.sleep(10.5)
    with pytest.raises(AuthAgentError) as late:
        client.approve(request_id, agent_id="py-late", agent_secret=SECRET)
    assert late.value.error == "invalid_request" and late.value.status == 400


def claims_of(jwt: str) -> dict:
    """A token's claims, unverified (the test only reads what the issuer put in)."""
    return json.loads(unb64url(jwt.split(".")[1]))


def raw_status(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


class Recording(AuthAgentClient):
    """A client that records what it sends and gets: status, the proof's
    claims, the DPoP-Nonce answered."""

    def __init__(self, issuer: str) -> None:
        super().__init__(issuer)
        self.seen: list[dict] = []

    def _send(self, method, url, body, headers, max_body=1 << 20):  # type: ignore[no-untyped-def]
        status, resp_headers, data = super()._send(method, url, body, headers, max_body)
        proof = headers.get("DPoP")
        self.seen.append({"url": url, "status": status, "proof": claims_of(proof) if proof else None, "nonce": resp_headers.get("DPoP-Nonce")})
        return status, resp_headers, data


def test_dpop_bound_tokens() -> None:
    """An agent with a key gets DPoP-bound tokens at /api/agent-auth and by
    client_credentials, calls the guarded API with proofs; the same token as
    Bearer is refused. Before the tests that spend this address's budget of
    failed authentications: nothing here fails at the issuer."""
    client = AuthAgentClient(ISSUER)
    key = RSAKey.generate().signing_key("py-dpop-1")
    client.register_agent(agent_id="py-dpop", jwks=key.jwks(), model_name="m", owner_name="O", owner_email="py@example.com")
    assert key.public_jwk is not None
    jkt = jwk_thumbprint(key.public_jwk)

    token = client.authenticate(agent_id="py-dpop", key=key, dpop=True)
    assert token.token_type == "DPoP" and token.dpop_key is key
    assert claims_of(token.access_token)["cnf"]["jkt"] == jkt
    resp = client.fetch(token, GUARDED + "/x?q=1")
    assert resp.status == 200
    assert resp.json()["X-Agent-Id"] == "py-dpop" and resp.json()["Authorization"] == "DPoP " + token.access_token
    assert client.fetch(token, GUARDED + "/x", method="POST", body=b"{}").status == 200

    # As a bearer token it is refused (no downgrade); a proof by another key, or without ath, too.
    assert guarded_status(token.access_token) == 401
    stranger = RSAKey.generate().signing_key()
    for proof in (
        dpop_proof(stranger, method="GET", url=GUARDED + "/x", access_token=token.access_token),
        dpop_proof(key, method="GET", url=GUARDED + "/x"),
    ):
        assert raw_status(GUARDED + "/x", {"Authorization": "DPoP " + token.access_token, "DPoP": proof}) == 401

    # The issuer's own endpoints take the bound token with its proof.
    assert client.get_profile(token).agent_id == "py-dpop"
    seen = client.introspect(token.access_token, client_id="py-dpop", key=key)
    assert seen.active and seen.token_type == "DPoP" and seen.cnf.get("jkt") == jkt

    # client_credentials at /oauth2/token, a request the SDK does not make.
    url = ISSUER + "/oauth2/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": "py-dpop",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id="py-dpop", audience=url),
    }
    req = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "DPoP": dpop_proof(key, method="POST", url=url)},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        grant = json.loads(r.read())
    assert grant["token_type"] == "DPoP" and claims_of(grant["access_token"])["cnf"]["jkt"] == jkt
    cc = Token(access_token=grant["access_token"], token_type=grant["token_type"], expires_in=grant["expires_in"], dpop_key=key)
    assert client.fetch(cc, GUARDED + "/x").status == 200

    # An agent with a secret, its tokens bound to a separate key.
    client.register_agent(agent_id="py-dpop-secret", agent_secret=SECRET, model_name="m", owner_name="O", owner_email="o@example.com")
    separate = RSAKey.generate().signing_key()
    bound = client.authenticate(agent_id="py-dpop-secret", agent_secret=SECRET, dpop=separate)
    assert separate.public_jwk is not None
    assert bound.token_type == "DPoP" and claims_of(bound.access_token)["cnf"]["jkt"] == jwk_thumbprint(separate.public_jwk)
    assert client.fetch(bound, GUARDED + "/x").json()["X-Agent-Id"] == "py-dpop-secret"
    assert guarded_status(bound.access_token) == 401


@pytest.mark.skipif(not NONCE_ISSUER, reason="no AUTHAGENT_DPOP_NONCE_ISSUER")
def test_dpop_with_server_nonces() -> None:
    """The second Caddy runs with `dpop_nonce on`, its API's guard with
    `dpop required`: one retry with the nonce, then the nonce is kept."""
    client = Recording(NONCE_ISSUER)
    key = RSAKey.generate().signing_key("py-nonce-1")
    client.register_agent(agent_id="py-nonce", jwks=key.jwks(), model_name="m", owner_name="O", owner_email="o@example.com")
    client.seen = []
    token = client.authenticate(agent_id="py-nonce", key=key, dpop=True)
    assert token.token_type == "DPoP"
    assert [r["status"] for r in client.seen] == [400, 200], "use_dpop_nonce, then the retry"
    first, second = client.seen
    assert "nonce" not in first["proof"] and first["nonce"] and second["proof"]["nonce"] == first["nonce"]

    client.seen = []
    client.authenticate(agent_id="py-nonce", key=key, dpop=True)
    assert [r["status"] for r in client.seen] == [200] and client.seen[0]["proof"]["nonce"], "the kept nonce goes in at once"

    # The API is another origin: its first call learns its nonce, the next uses it.
    client.seen = []
    resp = client.fetch(token, NONCE_GUARDED + "/x")
    assert resp.status == 200 and resp.json()["X-Agent-Id"] == "py-nonce"
    assert [r["status"] for r in client.seen] == [401, 200]
    assert client.seen[1]["proof"]["nonce"] == client.seen[0]["nonce"] and client.seen[1]["proof"]["ath"]
    client.seen = []
    assert client.fetch(token, NONCE_GUARDED + "/x").status == 200
    assert [r["status"] for r in client.seen] == [200]

    # A guard with dpop required refuses a bearer token.
    plain = client.authenticate(agent_id="py-nonce", key=key)
    assert plain.token_type == "Bearer"
    refused = client.fetch(plain, NONCE_GUARDED + "/x")
    assert refused.status == 401 and refused.headers.get("WWW-Authenticate", "").startswith("DPoP ")


@pytest.mark.skipif(not NONCE_ISSUER, reason="no AUTHAGENT_DPOP_NONCE_ISSUER")
def test_dpop_bound_refresh_token_of_a_public_client() -> None:
    """A public client's code exchanged with a proof: its refresh token is
    bound to that key; refresh proves it (with the issuer's nonce)."""
    client = AuthAgentClient(NONCE_ISSUER)
    client.register_agent(agent_id="py-dpop-spa", agent_secret=SECRET, model_name="m", owner_name="O", owner_email="o@example.com")
    verifier = b64url(secrets.token_bytes(32))
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": PUBLIC_CLIENT_ID,
            "redirect_uri": PUBLIC_REDIRECT_URI,
            "scope": "openid profile data:read",
            "state": "s-1",
            "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
    )
    redirect = client.sign_in(f"{NONCE_ISSUER}/oauth2/authorize?{query}", agent_id="py-dpop-spa", agent_secret=SECRET)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(redirect).query)["code"][0]
    key = RSAKey.generate().signing_key()
    url = NONCE_ISSUER + "/oauth2/token"
    form = urllib.parse.urlencode(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": PUBLIC_REDIRECT_URI, "code_verifier": verifier, "client_id": PUBLIC_CLIENT_ID}
    ).encode()
    nonce = None
    for _ in range(2):  # the issuer asks for its nonce first
        headers = {"Content-Type": "application/x-www-form-urlencoded", "DPoP": dpop_proof(key, method="POST", url=url, nonce=nonce)}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=form, headers=headers), timeout=10) as r:
                grant = json.loads(r.read())
            break
        except urllib.error.HTTPError as e:
            assert e.code == 400 and json.loads(e.read())["error"] == "use_dpop_nonce"
            nonce = e.headers["DPoP-Nonce"]
    assert grant["token_type"] == "DPoP" and grant["refresh_token"]
    tokens = Token(access_token=grant["access_token"], token_type="DPoP", expires_in=grant["expires_in"], refresh_token=grant["refresh_token"], dpop_key=key)

    with pytest.raises(AuthAgentError) as other:
        AuthAgentClient(NONCE_ISSUER, dpop=RSAKey.generate().signing_key()).refresh(grant["refresh_token"], client_id=PUBLIC_CLIENT_ID)
    assert other.value.error in ("invalid_grant", "invalid_dpop_proof")
    refreshed = client.refresh(tokens, client_id=PUBLIC_CLIENT_ID)
    assert refreshed.token_type == "DPoP" and refreshed.dpop_key is key and refreshed.refresh_token
    assert client.fetch(refreshed, NONCE_GUARDED + "/x").status == 200
    assert client.refresh(refreshed, client_id=PUBLIC_CLIENT_ID).token_type == "DPoP", "the rotated refresh token stays bound"


def test_an_agent_with_a_key() -> None:
    """An agent that holds a key (here an RSA key in plain Python,
    tests/stdlib_rsa.py; agents use the cryptography package or a KMS) and
    no secret. Next to last: its two failed authentications come at its
    end, and with test_errors' one they spend this address's budget."""
    client = AuthAgentClient(ISSUER)
    key = RSAKey.generate().signing_key("py-keyed-1")
    agent = client.register_agent(agent_id="py-keyed", jwks=key.jwks(), model_name="m", owner_name="O", owner_email="py@example.com")
    assert agent.token_endpoint_auth_method == "private_key_jwt" and agent.kids == ["py-keyed-1"] and agent.agent_secret is None

    # Each call signs a new assertion: the key works again and again.
    token = client.authenticate(agent_id="py-keyed", key=key)
    assert token.valid() and token.scope == "profile data:read"
    assert guarded_status(token.access_token) == 200
    assert client.authenticate(agent_id="py-keyed", key=key, scope="data:read").scope == "data:read"
    assert client.get_profile(token.access_token).kids == ["py-keyed-1"]

    done = sign_in_to_the_js_website(lambda url: client.sign_in(url, agent_id="py-keyed", key=key), "openid profile email")
    assert done["sub"] == "py-keyed" and done["claims"]["email"] == "py@example.com"

    # Introspection and revocation as itself.
    assert client.introspect(token.access_token, client_id="py-keyed", key=key).active
    client.revoke(token.access_token, client_id="py-keyed", key=key)
    assert not client.introspect(token.access_token, client_id="py-keyed", key=key).active
    assert guarded_status(token.access_token) == 401

    # Replace the key, proving possession of the current one: with the
    # cryptography package (when installed), an ECDSA P-256 key; else
    # another RSA key.
    try:
        from cryptography.hazmat.primitives.asymmetric import ec

        new_key = SigningKey.from_cryptography(ec.generate_private_key(ec.SECP256R1()), key_id="py-keyed-2")
    except ImportError:
        new_key = RSAKey.generate().signing_key("py-keyed-2")
    replaced = client.replace_keys(new_key.jwks(), agent_id="py-keyed", key=key)
    assert replaced.kids == ["py-keyed-2"] and replaced.token_endpoint_auth_method == "private_key_jwt"
    assert guarded_status(client.authenticate(agent_id="py-keyed", key=new_key).access_token) == 200

    # The replaced key no longer works, and no secret ever does.
    with pytest.raises(AuthAgentError) as old:
        client.authenticate(agent_id="py-keyed", key=key)
    assert old.value.error == "invalid_client" and old.value.status == 401
    with pytest.raises(AuthAgentError) as secret:
        client.authenticate(agent_id="py-keyed", agent_secret=SECRET)
    assert secret.value.error == "invalid_client" and secret.value.status == 401


def test_rate_limited() -> None:
    """The server runs with `authentication 3/m` (per address, and per
    agent and address): failures past it are refused with 429 and the
    budget's headers. Last, as it spends this address's budget."""
    client = AuthAgentClient(ISSUER)
    last = None
    for _ in range(4):
        with pytest.raises(AuthAgentError) as err:
            client.authenticate(agent_id="py-limited", agent_secret="Wrong-Secret-1!")
        last = err.value
    assert last is not None
    assert last.error == "rate_limit_exceeded" and last.status == 429
    assert last.retry_after and last.retry_after > 0
    assert last.rate_limit and last.rate_limit.limit == 3 and last.rate_limit.remaining == 0
