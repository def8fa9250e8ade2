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

from authagent import AuthAgentClient, AuthAgentError, SigningKey
from stdlib_rsa import RSAKey

ISSUER = os.environ.get("AUTHAGENT_ISSUER", "")
GUARDED = os.environ.get("AUTHAGENT_GUARDED_URL", "")
CLIENT_ID = os.environ.get("AUTHAGENT_CLIENT_ID", "")
CLIENT_SECRET = os.environ.get("AUTHAGENT_CLIENT_SECRET", "")
REDIRECT_URI = os.environ.get("AUTHAGENT_REDIRECT_URI", "")
CLOSED_PORT = os.environ.get("AUTHAGENT_CLOSED_PORT", "9")
SITE = os.environ.get("AUTHAGENT_SITE_URL", "")

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
