-- f. GET / on the same reverse_proxy behind `agent_guard { scopes data:read }`,
-- with the agent's access token (the Authorization: Bearer header comes from
-- load.sh via wrk -H). The guard checks it against this Caddy's own
-- auth_agent app, in process: after the first request the signature check
-- is cached, so each request pays the cache lookup, the revocation check,
-- the scope check, the agent's api rate-limit budget and the X-Agent-*
-- headers.
wrk.method = "GET"
