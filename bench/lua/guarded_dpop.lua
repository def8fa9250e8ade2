-- f'. GET / on the guarded site (the same agent_guard + reverse_proxy as
-- guarded) with a DPoP-bound access token of the agent (Authorization:
-- DPoP <token>, from load.sh via wrk -H) and a DPoP proof per request: the
-- guard checks the token as for guarded, then the proof (signature by its
-- jwk, htm, htu, iat, ath) and that the token's cnf.jkt is the proof key's
-- thumbprint, and records the proof's jti.
--
-- args: <proof file> <threads>. The file holds one proof per line, signed
-- before the run by bench/assertions (wrk cannot sign) for GET and the URL
-- wrk calls, each with its own jti, which the guard takes once; thread i
-- takes the lines whose 0-based index is i modulo <threads> and sends each
-- once. If a thread runs out, its requests carry a proof that is not one,
-- the guard answers 401, and the run fails loudly (load.sh makes more than
-- a run needs).
wrk.method = "GET"

local pool = {}

function init(args)
   pool = pool_from(args[1], tonumber(args[2]))
   if #pool == 0 then error("thread " .. id .. ": no DPoP proofs") end
end

function request()
   local p = table.remove(pool)
   if p == nil then
      note("starved")
      p = "none-left"
   end
   wrk.headers["DPoP"] = p
   return wrk.format()
end
