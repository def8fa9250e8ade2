from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

_MAX_BODY = 1 << 20


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


@dataclass(frozen=True)
class Token:
    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_in: int = 0
    scope: str = ""
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    expires_at: float = 0.0  # time.time() of the expiry, by this machine's clock

    def valid(self, leeway: float = 30.0) -> bool:
        return bool(self.access_token) and time.time() + leeway < self.expires_at


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Credentials go to the issuer only: redirects are never followed.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class AuthAgentClient:
    """A client of one auth_agent issuer."""

    def __init__(self, issuer: str, *, timeout: float = 30.0) -> None:
        self.issuer = issuer.rstrip("/")
        parts = urllib.parse.urlsplit(self.issuer)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"AuthAgentClient({self.issuer!r})"

    # The agent's own account.

    def register_agent(
        self,
        *,
        agent_id: str,
        agent_secret: str | None = None,
        model_name: str,
        owner_name: str,
        owner_email: str,
    ) -> Agent:
        body: dict[str, Any] = {
            "agent_id": agent_id,
            "model_name": model_name,
            "owner_name": owner_name,
            "owner_email": owner_email,
        }
        if agent_secret:
            body["agent_secret"] = agent_secret
        return _agent(self._api("POST", "/api/register-agent", body=body))

    def authenticate(
        self, *, agent_id: str, agent_secret: str, scope: str | None = None, resource: str | None = None
    ) -> Token:
        body = {"agent_id": agent_id, "agent_secret": agent_secret}
        if scope:
            body["scope"] = scope
        if resource:
            body["resource"] = resource
        return _token(self._api("POST", "/api/agent-auth", body=body))

    def get_profile(self, access_token: str) -> Agent:
        return _agent(self._api("GET", "/api/agents/profile", bearer=access_token))

    def update_profile(self, access_token: str, **fields: str) -> Agent:
        """Change model_name, owner_name, owner_email, or agent_secret (with
        current_agent_secret)."""
        allowed = {"model_name", "owner_name", "owner_email", "agent_secret", "current_agent_secret"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"update_profile() got unexpected fields: {', '.join(sorted(unknown))}")
        return _agent(self._api("PUT", "/api/agents/profile", body=fields, bearer=access_token))

    # Sign in with Auth Agent, the agent's side.

    def sign_in(self, authorization_url: str, *, agent_id: str, agent_secret: str) -> str:
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
        return self.approve(request_id, agent_id=agent_id, agent_secret=agent_secret)

    def approve(
        self,
        request_id: str,
        *,
        agent_id: str,
        agent_secret: str,
        client_id: str | None = None,
        redirect_uri: str | None = None,
    ) -> str:
        """Approve the pending sign-in request request_id; sign_in's second
        half. An expired or answered request raises invalid_request.

        A request id handed to an agent may come from someone else's browser
        (request-id phishing): with client_id and/or redirect_uri (a URI or a
        host) the issuer approves it only when it is for that client and
        returns to that host, and raises invalid_request otherwise."""
        body = {"agent_id": agent_id, "agent_secret": agent_secret, "request_id": request_id}
        if client_id is not None:
            body["client_id"] = client_id
        if redirect_uri is not None:
            body["redirect_uri"] = redirect_uri
        data = self._api("POST", "/api/agent-auth", body=body)
        redirect = data.get("redirect_to")
        if not redirect:
            raise AuthAgentError("invalid_response", "no redirect_to in the answer")
        return str(redirect)

    # Tokens. client_id/client_secret are a website's client, or the
    # agent's own id and secret; no secret for a public client.

    def refresh(self, refresh_token: str, *, client_id: str, client_secret: str | None = None) -> Token:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return _token(self._form("/oauth2/token", form, client_id, client_secret))

    def revoke(self, token: str, *, client_id: str, client_secret: str | None = None) -> None:
        self._form("/oauth2/revoke", {"token": token}, client_id, client_secret, expect_body=False)

    def introspect(self, token: str, *, client_id: str, client_secret: str) -> Introspection:
        data = self._form("/oauth2/introspect", {"token": token}, client_id, client_secret)
        aud = data.get("aud", [])
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
        )

    # Transport.

    def _api(self, method: str, path: str, *, body: Mapping[str, Any] | None = None, bearer: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        status, resp_headers, data = self._send(method, self.issuer + path, payload, headers)
        envelope = _json_or_error(status, resp_headers, data)
        if not isinstance(envelope, dict) or envelope.get("success") is not True or not isinstance(envelope.get("data"), dict):
            raise AuthAgentError("invalid_response", "no data in the answer", status)
        return envelope["data"]

    def _form(
        self, path: str, form: dict[str, str], client_id: str, client_secret: str | None, expect_body: bool = True
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if client_secret:
            creds = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        else:
            form = {**form, "client_id": client_id}
        status, resp_headers, data = self._send("POST", self.issuer + path, urllib.parse.urlencode(form).encode(), headers)
        if not expect_body and 200 <= status < 300:
            return {}
        parsed = _json_or_error(status, resp_headers, data)
        if not isinstance(parsed, dict):
            raise AuthAgentError("invalid_response", "the answer is not a JSON object", status)
        return parsed

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self._timeout) as resp:
                return resp.status, resp.headers, resp.read(_MAX_BODY)
        except urllib.error.HTTPError as e:  # 3xx (not followed), 4xx, 5xx
            with e:
                return e.code, e.headers, e.read(_MAX_BODY)
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
    )


def _token(data: dict[str, Any]) -> Token:
    expires_in = int(data.get("expires_in", 0))
    return Token(
        access_token=data.get("access_token", ""),
        token_type=data.get("token_type", "Bearer"),
        expires_in=expires_in,
        scope=data.get("scope", ""),
        refresh_token=data.get("refresh_token"),
        id_token=data.get("id_token"),
        expires_at=time.time() + expires_in,
    )
