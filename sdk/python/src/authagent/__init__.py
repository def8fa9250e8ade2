"""The agent side of Auth Agent for Python agents.

    from authagent import AuthAgentClient

    client = AuthAgentClient("https://auth.example.com")
    token = client.authenticate(agent_id="my-agent", agent_secret=secret)
    redirect = client.sign_in(authorization_url, agent_id="my-agent", agent_secret=secret)

An agent can hold a key instead of a secret (private_key_jwt): register
``key.jwks()`` and pass ``key=`` where a secret would go; see SigningKey.
With ``dpop=True`` its tokens are bound to a key (DPoP, RFC 9449), and
``client.fetch(token, url)`` calls APIs with a proof of it.
"""

from ._client import (
    CLIENT_ASSERTION_TYPE,
    DPoP,
    Agent,
    APIResponse,
    AuthAgentClient,
    AuthAgentError,
    Introspection,
    RateLimit,
    SigningKey,
    Token,
    client_assertion,
    dpop_proof,
    ecdsa_der_to_raw,
    jwk_thumbprint,
)

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "DPoP",
    "Agent",
    "APIResponse",
    "AuthAgentClient",
    "AuthAgentError",
    "Introspection",
    "RateLimit",
    "SigningKey",
    "Token",
    "client_assertion",
    "dpop_proof",
    "ecdsa_der_to_raw",
    "jwk_thumbprint",
]
__version__ = "0.1.0"
