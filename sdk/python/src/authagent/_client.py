from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

_MAX_BODY = 1 << 20

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""The client_assertion_type of private_key_jwt (RFC 7523 §2.2)."""

# The algorithms an assertion may be signed with (never none or HMAC).
_ALGS = ("ES256", "EdDSA", "RS256", "PS256")
# The JWK members of private or symmetric keys, never registered.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
# How long an assertion is good for (the issuer takes at most 5 minutes).
_ASSERTION_LIFETIME = 60
# The members of each key type that make up its public key, in the
# lexicographic order of its RFC 7638 thumbprint.
_PUBLIC_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
# The servers' DPoP nonces kept, at most (one per origin).
_MAX_NONCES = 1000


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """A private key the agent holds, as a signer: the agent registers its
    public half (``jwks()``) and proves possession with a client assertion
    it signs for each request (private_key_jwt), so it never sends a secret.

    The standard library cannot sign with ECDSA or Ed25519, so the SDK takes
    the signing as a function: ``sign(data) -> signature``, the JWS
    signature (RFC 7518) of ``data`` with ``alg``:

    - ``ES256``: ECDSA P-256 with SHA-256, the signature as r || s (64
      bytes). Libraries and KMSs that return DER (``cryptography``, AWS KMS,
      Google Cloud KMS) convert it with :func:`ecdsa_der_to_raw`.
    - ``EdDSA``: Ed25519 (64 bytes).
    - ``RS256`` / ``PS256``: RSA (2048 to 4096 bits, public exponent up to
      65537) PKCS#1 v1.5 / PSS (salt of 32 bytes) with SHA-256.

    ``public_jwk`` is the public key as a JWK (``kty``, ``crv``, ``x``,
    ``y`` or ``n``, ``e``), needed for ``jwks()``; ``key_id`` is its
    ``kid``. With the ``cryptography`` package,
    :meth:`SigningKey.from_cryptography` builds all of it from a key."""

    sign: Callable[[bytes], bytes] = field(repr=False)
    alg: str = "ES256"
    key_id: str | None = None
    public_jwk: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.alg not in _ALGS:
            raise ValueError(f"SigningKey: alg must be one of {', '.join(_ALGS)}, not {self.alg!r}")
        if not callable(self.sign):
            raise TypeError("SigningKey: sign must be a function of bytes returning the signature")

    def jwk(self) -> dict[str, Any]:
        """The public JWK, with ``kid``, ``alg`` and ``use``, for registration."""
        if self.public_jwk is None:
            raise ValueError("SigningKey: no public_jwk to publish")
        leaked = [m for m in _PRIVATE_MEMBERS if m in self.public_jwk]
        if leaked:
            raise ValueError(f"SigningKey: public_jwk holds the private member(s) {', '.join(leaked)}: publish the public key only")
        jwk = {k: v for k, v in self.public_jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
        if self.key_id is not None:
            jwk["kid"] = self.key_id
        jwk["alg"] = self.alg
        jwk["use"] = "sig"
        return jwk

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of this key's public half, for ``register_agent(jwks=)`` and ``replace_keys``."""
        return {"keys": [self.jwk()]}

    @classmethod
    def generate(cls, alg: str = "ES256", *, key_id: str | None = None) -> SigningKey:
        """A new key pair in memory, with the ``cryptography`` package
        (imported here, when called; the SDK does not depend on it): EC P-256
        (``ES256``, the default), Ed25519 (``EdDSA``) or RSA 2048 (``RS256``,
        ``PS256``). What ``dpop=True`` binds tokens to when the agent holds
        no key of its own."""
        try:
            from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        except ImportError as e:
            raise ImportError(
                "SigningKey.generate needs the cryptography package (Debian's python3-cryptography); "
                "or pass a SigningKey of your own (dpop=SigningKey(...))"
            ) from e
        if alg == "ES256":
            return cls.from_cryptography(ec.generate_private_key(ec.SECP256R1()), key_id=key_id)
        if alg == "EdDSA":
            return cls.from_cryptography(ed25519.Ed25519PrivateKey.generate(), key_id=key_id)
        if alg in ("RS256", "PS256"):
            return cls.from_cryptography(rsa.generate_private_key(public_exponent=65537, key_size=2048), key_id=key_id, alg=alg)
        raise ValueError(f"SigningKey.generate: alg must be one of {', '.join(_ALGS)}, not {alg!r}")

    @classmethod
    def from_cryptography(cls, private_key: Any, *, key_id: str | None = None, alg: str | None = None) -> SigningKey:
        """A SigningKey of a private key of the ``cryptography`` package (not a
        dependency of this SDK: it is imported here, when called): EC P-256
        (ES256), Ed25519 (EdDSA) or RSA of 2048 to 4096 bits (RS256, or
        ``alg="PS256"``)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        def be(n: int, size: int | None = None) -> str:
            return _b64url(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))

        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if private_key.curve.name != "secp256r1" or alg not in (None, "ES256"):
                raise ValueError("SigningKey.from_cryptography: an EC key must be P-256 (ES256)")
            nums = private_key.public_key().public_numbers()

            def sign_ec(data: bytes) -> bytes:
                return ecdsa_der_to_raw(private_key.sign(data, ec.ECDSA(hashes.SHA256())))

            jwk = {"kty": "EC", "crv": "P-256", "x": be(nums.x, 32), "y": be(nums.y, 32)}
            return cls(sign=sign_ec, alg="ES256", key_id=key_id, public_jwk=jwk)
        if isinstance(private_key, ed25519.Ed25519PrivateKey):
            if alg not in (None, "EdDSA"):
                raise ValueError("SigningKey.from_cryptography: an Ed25519 key signs EdDSA")
            raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return cls(sign=private_key.sign, alg="EdDSA", key_id=key_id, public_jwk={"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)})
        if isinstance(private_key, rsa.RSAPrivateKey):
            if not 2048 <= private_key.key_size <= 4096 or private_key.public_key().public_numbers().e > 65537:
                raise ValueError("SigningKey.from_cryptography: an RSA key must have 2048 to 4096 bits and a public exponent up to 65537")
            alg = alg or "RS256"
            if alg not in ("RS256", "PS256"):
                raise ValueError("SigningKey.from_cryptography: an RSA key signs RS256 or PS256")
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32) if alg == "PS256" else padding.PKCS1v15()
            nums_rsa = private_key.public_key().public_numbers()

            def sign_rsa(data: bytes) -> bytes:
                return private_key.sign(data, pad, hashes.SHA256())

            return cls(sign=sign_rsa, alg=alg, key_id=key_id, public_jwk={"kty": "RSA", "n": be(nums_rsa.n), "e": be(nums_rsa.e)})
        raise TypeError(f"SigningKey.from_cryptography: unsupported key {type(private_key).__name__} (EC P-256, Ed25519 or RSA)")


def ecdsa_der_to_raw(der: bytes, size: int = 32) -> bytes:
    """Converts a DER ECDSA signature (``SEQUENCE { r INTEGER, s INTEGER }``,
    what ``cryptography`` and cloud KMSs return) into the JWS form r || s,
    each ``size`` bytes (32 for P-256)."""

    def fail() -> ValueError:
        return ValueError("not a DER ECDSA signature")

    def length(i: int) -> tuple[int, int]:
        if i >= len(der):
            raise fail()
        n = der[i]
        if n < 0x80:
            return n, i + 1
        count = n & 0x7F
        if count == 0 or count > 2 or i + 1 + count > len(der):
            raise fail()
        return int.from_bytes(der[i + 1 : i + 1 + count], "big"), i + 1 + count

    if len(der) < 8 or der[0] != 0x30:
        raise fail()
    total, i = length(1)
    if i + total != len(der):
        raise fail()
    out = b""
    for _ in range(2):
        if i >= len(der) or der[i] != 0x02:
            raise fail()
        n, i = length(i + 1)
        value = int.from_bytes(der[i : i + n], "big")
        i += n
        if n == 0 or i > len(der) or value.bit_length() > 8 * size:
            raise fail()
        out += value.to_bytes(size, "big")
    if i != len(der):
        raise fail()
    return out


def client_assertion(key: SigningKey, *, client_id: str, audience: str, lifetime: int = _ASSERTION_LIFETIME) -> str:
    """Signs a client assertion (RFC 7523 §2.2): header ``alg``, ``typ`` and
    ``kid``; claims ``iss`` = ``sub`` = client_id, ``aud``, ``iat``, ``exp``
    (``lifetime`` seconds later) and a random ``jti``, so it works once. The
    client makes one for each request; this is for sending one elsewhere."""
    header: dict[str, Any] = {"alg": key.alg, "typ": "JWT"}
    if key.key_id is not None:
        header["kid"] = key.key_id
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + lifetime, "jti": secrets.token_urlsafe(18)}
    return _sign_jws(key, header, claims)


def _sign_jws(key: SigningKey, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    """A compact JWS of header and claims, signed by key."""
    signing_input = _b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(signing_input.encode("ascii"))
    if not isinstance(signature, (bytes, bytearray)):
        raise TypeError("SigningKey.sign must return bytes")
    if key.alg in ("ES256", "EdDSA") and len(signature) != 64:
        hint = " (a DER signature? convert it with ecdsa_der_to_raw)" if key.alg == "ES256" else ""
        raise ValueError(f"an {key.alg} signature is 64 bytes, not {len(signature)}{hint}")
    return signing_input + "." + _b64url(bytes(signature))


def _dpop_jwk(key: SigningKey) -> dict[str, str]:
    """The public members of a DPoP key's public JWK (what a proof's header
    carries); a ValueError for a key without one or with private members."""
    if key.public_jwk is None:
        raise ValueError("a DPoP key needs its public_jwk: the proof carries the public key")
    return _public_members(key.public_jwk)


def _public_members(jwk: Mapping[str, Any]) -> dict[str, str]:
    leaked = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if leaked:
        raise ValueError(f"the public JWK holds the private member(s) {', '.join(leaked)}: pass the public key only")
    names = _PUBLIC_MEMBERS.get(str(jwk.get("kty")))
    if names is None:
        raise ValueError(f"a {jwk.get('kty')!r} JWK cannot sign DPoP proofs: use EC, OKP or RSA")
    out: dict[str, str] = {}
    for m in names:
        value = jwk.get(m)
        if not isinstance(value, str) or not value:
            raise ValueError(f"the public JWK lacks {m}")
        out[m] = value
    return out


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The JWK SHA-256 thumbprint of a public key (RFC 7638): what a
    DPoP-bound token's ``cnf.jkt`` names."""
    members = _public_members(jwk)
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _htu(url: str) -> str:
    """The URL without query and fragment (RFC 9449 §4.2)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def dpop_proof(
    key: SigningKey, *, method: str, url: str, access_token: str | None = None, nonce: str | None = None
) -> str:
    """Signs a DPoP proof (RFC 9449 §4.2) for one request: header ``typ``
    ``dpop+jwt``, ``alg`` and ``jwk`` (the key's public members only);
    claims a random ``jti``, ``htm`` (method), ``htu`` (url without query and
    fragment), ``iat``, and ``ath`` (base64url SHA-256 of the access token,
    at a resource server) and ``nonce`` when given. Make a new one for each
    request: the server takes each once. The client makes them itself; this
    is for a request it does not make."""
    header = {"typ": "dpop+jwt", "alg": key.alg, "jwk": _dpop_jwk(key)}
    claims: dict[str, Any] = {"jti": secrets.token_urlsafe(18), "htm": method, "htu": _htu(url), "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = _b64url(hashlib.sha256(access_token.encode("ascii")).digest())
    if nonce is not None:
        claims["nonce"] = nonce
    return _sign_jws(key, header, claims)


DPoP = Union[bool, SigningKey]
"""What ``dpop=`` takes: True (the agent's own key when it signs in with
``key=``, else a key pair the client generates once), a SigningKey of its
own, or False."""


def _asks_for_nonce(status: int, headers: Mapping[str, str], data: bytes) -> bool:
    """Whether an answer is use_dpop_nonce: a 400 (or 401) whose body says so
    (an authorization server), or a 401 whose WWW-Authenticate does (a
    resource server)."""
    if status == 401 and re.search(r'\berror\s*=\s*"?use_dpop_nonce\b', headers.get("WWW-Authenticate") or ""):
        return True
    if status not in (400, 401):
        return False
    try:
        body = json.loads(data)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"


@dataclass(frozen=True)
class RateLimit:
    """Where the caller stands in a budget (the X-RateLimit-* headers)."""

    limit: int
    remaining: int
    reset: int  # Unix seconds


class AuthAgentError(Exception):
    """An error the issuer answered, or ``network_error`` / ``invalid_response``
    when it did not answer properly."""

    def __init__(
        self,
        error: str,
        error_description: str = "",
        status: int = 0,
        rate_limit: RateLimit | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{error}: {error_description}" if error_description else error)
        self.error = error
        self.error_description = error_description
        self.status = status
        self.rate_limit = rate_limit
        self.retry_after = retry_after


@dataclass(frozen=True)
class Agent:
    agent_id: str
    model_name: str = ""
    owner_name: str = ""
    owner_email: str = ""
    permissions: list[str] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    # Set only by register_agent when the issuer generated the secret:
    # keep it, it is never shown again.
    agent_secret: str | None = field(default=None, repr=False)
    # How the agent authenticates: client_secret_post (a secret) or
    # private_key_jwt (keys, whose kids are listed).
    token_endpoint_auth_method: str = ""
    kids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Token:
    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_in: int = 0
    scope: str = ""
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    expires_at: float = 0.0  # time.time() of the expiry, by this machine's clock
    # The key a DPoP token (and its refresh token) is bound to: every use
    # carries a proof it signs.
    dpop_key: SigningKey | None = field(default=None, repr=False, compare=False)

    def valid(self, leeway: float = 30.0) -> bool:
        return bool(self.access_token) and time.time() + leeway < self.expires_at

    @property
    def dpop_bound(self) -> bool:
        """Whether the access token is DPoP-bound: it works only with proofs
        by ``dpop_key``, never as a bearer token."""
        return self.token_type.lower() == "dpop"


@dataclass(frozen=True)
class APIResponse:
    """An API's answer to :meth:`AuthAgentClient.fetch`."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Introspection:
    active: bool
    scope: str = ""
    client_id: str = ""
    sub: str = ""
    exp: int = 0
    iat: int = 0
    iss: str = ""
    aud: list[str] = field(default_factory=list)
    jti: str = ""
    # "DPoP" for a DPoP-bound token, whose cnf holds the key's thumbprint (jkt).
    token_type: str = ""
    cnf: dict[str, Any] = field(default_factory=dict)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Credentials go to the issuer only: redirects are never followed.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class AuthAgentClient:
    """A client of one auth_agent issuer.

    ``dpop`` asks for DPoP-bound tokens (RFC 9449) on every token request
    whose own ``dpop=`` does not say otherwise: True binds them to the
    agent's own key (its ``key=``, with ``public_jwk``) or else to a key
    pair the client generates once (``SigningKey.generate``, which needs the
    cryptography package); a SigningKey binds them to that key."""

    def __init__(self, issuer: str, *, timeout: float = 30.0, dpop: DPoP = False) -> None:
        self.issuer = issuer.rstrip("/")
        parts = urllib.parse.urlsplit(self.issuer)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._dpop = dpop
        # The servers' latest DPoP-Nonce by origin (the issuer's, each API's).
        self._nonces: dict[str, str] = {}
        self._generated_dpop_key: SigningKey | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuthAgentClient({self.issuer!r})"

    # The agent's own account.

    def register_agent(
        self,
        *,
        agent_id: str,
        agent_secret: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        model_name: str,
        owner_name: str,
        owner_email: str,
    ) -> Agent:
        """Register an agent with a secret, or with jwks (its public keys,
        e.g. ``key.jwks()``: it then has no secret and authenticates with
        ``key=``), or with neither (the issuer generates a secret, returned
        once in ``agent.agent_secret``)."""
        if agent_secret is not None and jwks is not None:
            raise TypeError("register_agent() takes agent_secret or jwks, not both")
        body: dict[str, Any] = {
            "agent_id": agent_id,
            "model_name": model_name,
            "owner_name": owner_name,
            "owner_email": owner_email,
        }
        if agent_secret:
            body["agent_secret"] = agent_secret
        if jwks is not None:
            body["jwks"] = dict(jwks)
        return _agent(self._api("POST", "/api/register-agent", body=body))

    def replace_keys(self, jwks: Mapping[str, Any], *, agent_id: str, key: SigningKey) -> Agent:
        """Replace the keys of an agent that holds keys with jwks, proving
        possession of a key it holds now (key; a token alone never changes
        keys). Keys left out stop working at once: to rotate without a gap,
        include the old key, switch, then replace again."""
        body: dict[str, Any] = {"jwks": dict(jwks), **self._agent_fields("/api/agents/keys", agent_id, None, key)}
        return _agent(self._api("PUT", "/api/agents/keys", body=body))

    def authenticate(
        self,
        *,
        agent_id: str,
        agent_secret: str | None = None,
        key: SigningKey | None = None,
        scope: str | None = None,
        resource: str | None = None,
        dpop: DPoP | None = None,
    ) -> Token:
        """A token for the agent itself, with its secret or its key (a new
        assertion each time). With dpop (here or the client's) the request
        carries a proof and the token is bound to its key
        (``token.dpop_key``)."""
        dpop_key = self._dpop_key_for(dpop, key)

        def body() -> dict[str, str]:
            # Made for each attempt: a nonce retry never replays an assertion.
            fields = self._agent_fields("/api/agent-auth", agent_id, agent_secret, key)
            if scope:
                fields["scope"] = scope
            if resource:
                fields["resource"] = resource
            return fields

        return _token(self._api("POST", "/api/agent-auth", body=body, dpop=dpop_key), dpop_key)

    def get_profile(self, access_token: str | Token) -> Agent:
        """The agent's profile, with one of its access tokens (a DPoP-bound
        one as its Token, which holds the key)."""
        return _agent(self._api("GET", "/api/agents/profile", token=access_token))

    def update_profile(self, access_token: str | Token, **fields: str) -> Agent:
        """Change model_name, owner_name, owner_email, or agent_secret (with
        current_agent_secret)."""
        allowed = {"model_name", "owner_name", "owner_email", "agent_secret", "current_agent_secret"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"update_profile() got unexpected fields: {', '.join(sorted(unknown))}")
        return _agent(self._api("PUT", "/api/agents/profile", body=fields, token=access_token))

    # Sign in with Auth Agent, the agent's side.

    def sign_in(
        self, authorization_url: str, *, agent_id: str, agent_secret: str | None = None, key: SigningKey | None = None
    ) -> str:
        """Open a website's authorization URL (on this issuer) as the agent,
        approve it, and return the URL the browser is sent to: the website's
        redirect URI with the code and state."""
        parts = urllib.parse.urlsplit(authorization_url)
        if f"{parts.scheme}://{parts.netloc}" != self._origin:
            raise AuthAgentError("invalid_request", f"the authorization URL is not on this issuer ({self.issuer})")
        status, headers, data = self._send("GET", authorization_url, None, {"Accept": "application/json"})
        if 300 <= status < 400:
            location = headers.get("Location", "")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
            if "error" in query:
                raise AuthAgentError(query["error"][0], query.get("error_description", [""])[0], status)
            raise AuthAgentError("invalid_response", "an unexpected redirect", status)
        started = _json_or_error(status, headers, data)
        request_id = started.get("request_id") if isinstance(started, dict) else None
        if not request_id:
            raise AuthAgentError("invalid_response", "no request_id in the answer", status)
        return self.approve(request_id, agent_id=agent_id, agent_secret=agent_secret, key=key)

    def approve(
        self,
        request_id: str,
        *,
        agent_id: str,
        agent_secret: str | None = None,
        key: SigningKey | None = None,
        client_id: str | None = None,
        redirect_uri: str | None = None,
    ) -> str:
        """Approve the pending sign-in request request_id; sign_in's second
        half. An expired or answered request raises invalid_request.

        A request id handed to an agent may come from someone else's browser
        (request-id phishing): with client_id and/or redirect_uri (a URI or a
        host) the issuer approves it only when it is for that client and
        returns to that host, and raises invalid_request otherwise."""
        body = {**self._agent_fields("/api/agent-auth", agent_id, agent_secret, key), "request_id": request_id}
        if client_id is not None:
            body["client_id"] = client_id
        if redirect_uri is not None:
            body["redirect_uri"] = redirect_uri
        data = self._api("POST", "/api/agent-auth", body=body)
        redirect = data.get("redirect_to")
        if not redirect:
            raise AuthAgentError("invalid_response", "no redirect_to in the answer")
        return str(redirect)

    # Tokens. client_id with client_secret or key are a website's client,
    # or the agent's own id and secret or key; neither for a public client.

    def refresh(
        self,
        refresh_token: str | Token,
        *,
        client_id: str,
        client_secret: str | None = None,
        key: SigningKey | None = None,
        dpop: DPoP | None = None,
    ) -> Token:
        """New tokens for a refresh token, which rotates: keep the new one.
        Given the Token of a DPoP-bound grant, the request carries a proof by
        its key, as a public client's bound refresh token requires; given
        the refresh token alone, by the key dpop names (here or the
        client's)."""
        bound = refresh_token if isinstance(refresh_token, Token) else None
        token = bound.refresh_token if bound is not None else refresh_token
        if not isinstance(token, str) or not token:
            raise AuthAgentError("invalid_grant", "no refresh token to renew the access token with")
        dpop_key = bound.dpop_key if bound is not None and bound.dpop_key is not None else self._dpop_key_for(dpop, key)
        form = {"grant_type": "refresh_token", "refresh_token": token}
        return _token(self._form("/oauth2/token", form, client_id, client_secret, key, dpop=dpop_key), dpop_key)

    def revoke(self, token: str, *, client_id: str, client_secret: str | None = None, key: SigningKey | None = None) -> None:
        self._form("/oauth2/revoke", {"token": token}, client_id, client_secret, key, expect_body=False)

    def introspect(
        self, token: str, *, client_id: str, client_secret: str | None = None, key: SigningKey | None = None
    ) -> Introspection:
        if client_secret is None and key is None:
            raise TypeError("introspect() needs client_secret or key")
        data = self._form("/oauth2/introspect", {"token": token}, client_id, client_secret, key)
        aud = data.get("aud", [])
        cnf = data.get("cnf")
        return Introspection(
            active=bool(data.get("active")),
            scope=data.get("scope", ""),
            client_id=data.get("client_id", ""),
            sub=data.get("sub", ""),
            exp=int(data.get("exp", 0)),
            iat=int(data.get("iat", 0)),
            iss=data.get("iss", ""),
            aud=[aud] if isinstance(aud, str) else list(aud),
            jti=data.get("jti", ""),
            token_type=data.get("token_type", ""),
            cnf=dict(cnf) if isinstance(cnf, dict) else {},
        )

    # Calls to APIs behind agent_guard.

    def fetch(
        self,
        token: str | Token,
        url: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> APIResponse:
        """Send a request to an API with an access token:
        ``Authorization: Bearer <token>``, or for a DPoP-bound Token
        ``Authorization: DPoP <token>`` and a new proof by its key (``htm``,
        ``htu``, ``ath``), sent once more with the server's nonce when it
        answers use_dpop_nonce. A DPoP-bound token is never sent as a bearer
        token. Redirects are not followed; any status is returned, not
        raised (network failures raise ``network_error``)."""
        status, resp_headers, data = self._send_with_token(method.upper(), url, body, dict(headers or {}), token, None)
        return APIResponse(status, resp_headers, data)

    # Transport.

    def _agent_fields(self, path: str, agent_id: str, agent_secret: str | None, key: SigningKey | None) -> dict[str, str]:
        """The agent's proof of identity for the /api/* endpoint at path: its
        secret, or a new assertion for that endpoint."""
        if key is None:
            if agent_secret is None:
                raise TypeError("agent_secret or key is required")
            return {"agent_id": agent_id, "agent_secret": agent_secret}
        if agent_secret is not None:
            raise TypeError("agent_secret or key, not both")
        assertion = client_assertion(key, client_id=agent_id, audience=self.issuer + path)
        return {"agent_id": agent_id, "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}

    def _api(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        token: str | Token | None = None,
        dpop: SigningKey | None = None,
    ) -> dict[str, Any]:
        """Calls an /api/* endpoint and returns the data of its envelope.
        body (a function: made again for each attempt), token the access
        token (with its proof when DPoP-bound), dpop a proof without ath (a
        token request)."""
        url = self.issuer + path

        def request() -> tuple[bytes | None, dict[str, str]]:
            headers = {"Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body() if callable(body) else body).encode()
                headers["Content-Type"] = "application/json"
            return payload, headers

        if token is not None:
            payload, headers = request()
            status, resp_headers, data = self._send_with_token(method, url, payload, headers, token, _MAX_BODY)
        elif dpop is not None:

            def send(proof: str) -> tuple[int, Mapping[str, str], bytes]:
                payload, headers = request()
                return self._send(method, url, payload, {**headers, "DPoP": proof})

            status, resp_headers, data = self._send_with_proof(dpop, method, url, None, send)
        else:
            status, resp_headers, data = self._send(method, url, *request())
        envelope = _json_or_error(status, resp_headers, data)
        if not isinstance(envelope, dict) or envelope.get("success") is not True or not isinstance(envelope.get("data"), dict):
            raise AuthAgentError("invalid_response", "no data in the answer", status)
        return envelope["data"]

    def _form(
        self,
        path: str,
        form: dict[str, str],
        client_id: str,
        client_secret: str | None,
        key: SigningKey | None = None,
        expect_body: bool = True,
        dpop: SigningKey | None = None,
    ) -> dict[str, Any]:
        """Posts an RFC form to an /oauth2/* endpoint with client
        authentication (HTTP Basic, a new assertion, or client_id alone), and
        with dpop a proof by that key (and a new assertion for a retry)."""
        if key is not None and client_secret is not None:
            raise TypeError("client_secret or key, not both")
        url = self.issuer + path

        def request() -> tuple[bytes, dict[str, str]]:
            headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
            fields = form
            if key is not None:
                assertion = client_assertion(key, client_id=client_id, audience=url)
                fields = {**form, "client_id": client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}
            elif client_secret:
                creds = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
                headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
            else:
                fields = {**form, "client_id": client_id}
            return urllib.parse.urlencode(fields).encode(), headers

        if dpop is None:
            status, resp_headers, data = self._send("POST", url, *request())
        else:

            def send(proof: str) -> tuple[int, Mapping[str, str], bytes]:
                payload, headers = request()
                return self._send("POST", url, payload, {**headers, "DPoP": proof})

            status, resp_headers, data = self._send_with_proof(dpop, "POST", url, None, send)
        if not expect_body and 200 <= status < 300:
            return {}
        parsed = _json_or_error(status, resp_headers, data)
        if not isinstance(parsed, dict):
            raise AuthAgentError("invalid_response", "the answer is not a JSON object", status)
        return parsed

    def _send_with_token(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], token: str | Token, max_body: int | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Sends a request with an access token: as a bearer token, or
        DPoP-bound with the DPoP scheme and a proof by its key (a bound token
        without its key is a TypeError, never a bearer request)."""
        bound = token if isinstance(token, Token) else None
        access = bound.access_token if bound is not None else token
        if not isinstance(access, str):
            raise TypeError("the access token is a str or a Token")
        if bound is None or not bound.dpop_bound:
            return self._send(method, url, body, {**headers, "Authorization": f"Bearer {access}"}, max_body)
        dpop_key = bound.dpop_key
        if dpop_key is None:
            raise TypeError("a DPoP-bound token needs the key it is bound to (Token.dpop_key)")

        def send(proof: str) -> tuple[int, Mapping[str, str], bytes]:
            return self._send(method, url, body, {**headers, "Authorization": f"DPoP {access}", "DPoP": proof}, max_body)

        return self._send_with_proof(dpop_key, method, url, access, send)

    def _send_with_proof(
        self,
        key: SigningKey,
        method: str,
        url: str,
        access_token: str | None,
        send: Callable[[str], tuple[int, Mapping[str, str], bytes]],
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Sends with a new proof (send builds the whole request around it),
        keeps the DPoP-Nonce the answer carries, and when the server asks for
        a nonce (use_dpop_nonce) sends once more with a proof carrying it."""
        origin = _origin(url)
        nonce = self._nonces.get(origin)
        for attempt in range(2):
            status, headers, data = send(dpop_proof(key, method=method, url=url, access_token=access_token, nonce=nonce))
            fresh = headers.get("DPoP-Nonce")
            if not fresh:
                break
            self._keep_nonce(origin, fresh)
            if attempt > 0 or not _asks_for_nonce(status, headers, data):
                break
            nonce = fresh
        return status, headers, data

    def _keep_nonce(self, origin: str, nonce: str) -> None:
        with self._lock:
            self._nonces.pop(origin, None)
            self._nonces[origin] = nonce
            if len(self._nonces) > _MAX_NONCES:
                del self._nonces[next(iter(self._nonces))]

    def _dpop_key_for(self, option: DPoP | None, key: SigningKey | None) -> SigningKey | None:
        """The key a token request's proof is signed with: option (the
        call's dpop=), else the client's; True is the agent's own key when it
        has a public_jwk, else the client's generated key pair."""
        chosen = self._dpop if option is None else option
        if chosen is False:
            return None
        if chosen is True:
            if key is not None and key.public_jwk is not None:
                _dpop_jwk(key)
                return key
            with self._lock:
                if self._generated_dpop_key is None:
                    self._generated_dpop_key = SigningKey.generate()
                return self._generated_dpop_key
        if isinstance(chosen, SigningKey):
            _dpop_jwk(chosen)  # a key without its public JWK is refused before any request
            return chosen
        raise TypeError(f"dpop= takes True, False or a SigningKey, not {type(chosen).__name__}")

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], max_body: int | None = _MAX_BODY
    ) -> tuple[int, Mapping[str, str], bytes]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self._timeout) as resp:
                return resp.status, resp.headers, resp.read(max_body)
        except urllib.error.HTTPError as e:  # 3xx (not followed), 4xx, 5xx
            with e:
                return e.code, e.headers, e.read(max_body)
        except (urllib.error.URLError, OSError) as e:
            raise AuthAgentError("network_error", str(getattr(e, "reason", e))) from e


def _json_or_error(status: int, headers: Mapping[str, str], data: bytes) -> Any:
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    if 200 <= status < 300:
        if parsed is None:
            raise AuthAgentError("invalid_response", "the answer is not JSON", status)
        return parsed
    rate_limit = None
    try:
        rate_limit = RateLimit(
            int(headers["X-RateLimit-Limit"]), int(headers["X-RateLimit-Remaining"]), int(headers["X-RateLimit-Reset"])
        )
    except (KeyError, TypeError, ValueError):
        pass
    retry_after = None
    try:
        retry_after = int(headers["Retry-After"])
    except (KeyError, TypeError, ValueError):
        pass
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        raise AuthAgentError(parsed["error"], str(parsed.get("error_description", "")), status, rate_limit, retry_after)
    raise AuthAgentError("invalid_response", f"HTTP {status}", status, rate_limit, retry_after)


def _agent(data: dict[str, Any]) -> Agent:
    return Agent(
        agent_id=data.get("agent_id", ""),
        model_name=data.get("model_name", ""),
        owner_name=data.get("owner_name", ""),
        owner_email=data.get("owner_email", ""),
        permissions=list(data.get("permissions") or []),
        created_at=data.get("created_at", ""),
        updated_at=data.get("updated_at", ""),
        agent_secret=data.get("agent_secret"),
        token_endpoint_auth_method=data.get("token_endpoint_auth_method", ""),
        kids=[k for k in data.get("kids") or [] if isinstance(k, str)],
    )


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _token(data: dict[str, Any], dpop_key: SigningKey | None = None) -> Token:
    """A Token of the issuer's answer; a DPoP one is bound to dpop_key, the
    key its request's proof was signed with (an issuer that ignored the
    proof answers Bearer: then nothing is bound)."""
    expires_in = int(data.get("expires_in", 0))
    token_type = data.get("token_type", "Bearer")
    return Token(
        access_token=data.get("access_token", ""),
        token_type=token_type,
        expires_in=expires_in,
        scope=data.get("scope", ""),
        refresh_token=data.get("refresh_token"),
        id_token=data.get("id_token"),
        expires_at=time.time() + expires_in,
        dpop_key=dpop_key if str(token_type).lower() == "dpop" else None,
    )
