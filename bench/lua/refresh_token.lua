-- c. POST /oauth2/token, grant_type=refresh_token, with rotation.
--
-- args: <token file> <threads>. The file holds one refresh token per line,
-- one line per refresh-token chain (family); thread i takes the lines whose
-- 0-based index is i modulo <threads>. load.sh makes connections + threads
-- chains: one per connection (wrk gives every thread connections/threads
-- connections) plus one spare per thread, because wrk calls request() once
-- on thread 0 before the run to check the request it returns
-- (script_verify_request); that token is taken but never sent.
--
-- Every thread keeps a pool of the current tokens of its chains. request()
-- takes a token out of the pool; response() puts the token the server
-- rotated to back in. A chain's token is therefore in at most one request
-- at a time and is never sent twice (which would revoke its family). wrk
-- does not pipeline (no --pipeline here): a connection asks request() for
-- its next request only after response() has run for its previous one, so
-- with at least as many chains as connections the pool is never empty. If
-- it ever is (a chain got lost: error response, reconnect), the request
-- carries an invalid token, the server answers 400, and the run fails
-- loudly. The first few failing responses are printed. The path is the
-- URL's: /oauth2/token here, /token at oidc-provider (PEER_COMPARE=1).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local pool = {}

function init(args)
   pool = pool_from(args[1], tonumber(args[2]))
   if #pool == 0 then error("thread " .. id .. ": no refresh-token chains") end
end

function request()
   local tok = table.remove(pool)
   if tok == nil then
      note("starved")
      tok = "no-chain-left"
   end
   return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. tok)
end

function response(status, headers, body)
   count(status)
   local rt = status == 200 and string.match(body, '"refresh_token":"([^"]+)"')
   if rt then
      table.insert(pool, rt)
   else
      note("chain_lost")
      shown = (shown or 0) + 1
      if shown <= 3 then
         io.stderr:write(string.format("lua: refresh_token thread %d: HTTP %d: %s\n", id, status, body))
      end
   end
end
