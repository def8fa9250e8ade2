-- e. POST /api/register-agent: a new agent per request (argon2id hashing of
-- its secret, one storage write, and the agent.registered event: with a
-- webhook subscribed, one outbox write more). Ids are unique per run,
-- thread and request.
-- args: run-prefix (letters, digits, '-')
local prefix = "wh"
local n = 0

function init(args)
   prefix = args[1] or prefix
end

function request()
   n = n + 1
   local body = string.format(
      '{"agent_id":"%s-%d-%d","agent_secret":"Test123456!","model_name":"load","owner_name":"Load","owner_email":"load@example.com"}',
      prefix, id, n)
   return wrk.format("POST", "/api/register-agent", {["Content-Type"] = "application/json"}, body)
end
