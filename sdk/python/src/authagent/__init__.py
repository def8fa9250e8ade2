"""The agent side of Auth Agent for Python agents.

    from authagent import AuthAgentClient

    client = AuthAgentClient("https://auth.example.com")
    token = client.authenticate(agent_id="my-agent", agent_secret=secret)
    redirect = client.sign_in(authorization_url, agent_id="my-agent", agent_secret=secret)
"""

from ._client import (
    Agent,
    AuthAgentClient,
    AuthAgentError,
    Introspection,
    RateLimit,
    Token,
)

__all__ = ["Agent", "AuthAgentClient", "AuthAgentError", "Introspection", "RateLimit", "Token"]
__version__ = "0.1.0"
