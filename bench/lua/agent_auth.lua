-- d. POST /api/agent-auth with the agent's own credentials (no request_id):
-- an access token for the agent. After the first argon2id verification the
-- secret is checked against the in-memory verification cache.
-- args: agent_id agent_secret (plain tokens, no JSON escaping needed)
wrk.method = "POST"
wrk.path = "/api/agent-auth"
wrk.headers["Content-Type"] = "application/json"

function init(args)
   wrk.body = string.format('{"agent_id":"%s","agent_secret":"%s"}', args[1], args[2])
end
