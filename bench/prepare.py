#!/usr/bin/env python3
"""Setup for bench/load.sh: register the load agent and make refresh-token chains.

usage: prepare.py BASE_URL CLIENT_ID CLIENT_SECRET REDIRECT_URI AGENT_ID AGENT_SECRET CHAINS OUT_FILE

Registers AGENT_ID, then for each of CHAINS chains runs the agent flow
(GET /oauth2/authorize with Accept: application/json -> request_id;
POST /api/agent-auth with the request_id -> redirect_to with the code;
POST /oauth2/token authorization_code + PKCE -> refresh_token), rotates the
refresh token once (proving rotation works before the load run) and writes
the current token of every chain to OUT_FILE, one per line. Prints the
signing algorithms of the tokens it saw. Standard library only.
"""

import base64
import hashlib
import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


def call(method, url, body=None, headers=None, form=False):
    data = None
    headers = dict(headers or {})
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"prepare: {method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')}")


def jwt_alg(tok):
    head = tok.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["alg"]


def main():
    if len(sys.argv) != 9:
        raise SystemExit(__doc__)
    base, client_id, client_secret, redirect_uri, agent_id, agent_secret, chains, out = sys.argv[1:]
    chains = int(chains)
    basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()

    status, _ = call("POST", base + "/api/register-agent", {
        "agent_id": agent_id, "agent_secret": agent_secret,
        "model_name": "load-test-model", "owner_email": "load@example.com",
    })
    if status != 201:
        raise SystemExit(f"prepare: register-agent answered {status}")

    tokens, algs = [], set()
    for _ in range(chains):
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        q = urllib.parse.urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "scope": "openid profile", "state": "x",
            "code_challenge": challenge, "code_challenge_method": "S256",
        }, quote_via=urllib.parse.quote)
        _, auth = call("GET", base + "/oauth2/authorize?" + q, headers={"Accept": "application/json"})
        _, done = call("POST", base + "/api/agent-auth", {
            "agent_id": agent_id, "agent_secret": agent_secret, "request_id": auth["request_id"],
        })
        redirect = done["data"]["redirect_to"]
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(redirect).query)["code"][0]
        _, tok = call("POST", base + "/oauth2/token", {
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri, "code_verifier": verifier,
        }, headers={"Authorization": basic}, form=True)
        _, tok = call("POST", base + "/oauth2/token", {
            "grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
        }, headers={"Authorization": basic}, form=True)
        algs.add(("access_token", jwt_alg(tok["access_token"])))
        algs.add(("id_token", jwt_alg(tok["id_token"])))
        tokens.append(tok["refresh_token"])

    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")
    print("prepare: %d refresh-token chains; refresh response signs %s" % (
        len(tokens), ", ".join(f"{k} {v}" for k, v in sorted(algs))))


if __name__ == "__main__":
    main()
