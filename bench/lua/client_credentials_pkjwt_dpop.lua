-- b''. POST /oauth2/token, client_credentials, by the private_key_jwt
-- client of client_credentials_pkjwt (an ES256 client assertion per
-- request) with a DPoP proof per request (ES256, a key of its own): the
-- answer is a DPoP-bound token (token_type DPoP, cnf.jkt).
--
-- args: <assertion file> <proof file> <threads>. Both files hold one value
-- per line, signed before the run by bench/assertions (wrk cannot sign),
-- each with its own jti, which the server takes once; the proofs are for
-- POST and the token endpoint's URL. Thread i takes the lines whose
-- 0-based index is i modulo <threads> of each and sends each once. If a
-- thread runs out, its requests carry no assertion or a proof that is not
-- one, the server answers 400 or 401, and the run fails loudly (load.sh
-- makes more than a run needs).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local assertions, proofs = {}, {}

function init(args)
   assertions = pool_from(args[1], tonumber(args[3]))
   proofs = pool_from(args[2], tonumber(args[3]))
   if #assertions == 0 or #proofs == 0 then error("thread " .. id .. ": no assertions or no DPoP proofs") end
end

function request()
   local a, p = table.remove(assertions), table.remove(proofs)
   if a == nil or p == nil then
      note("starved")
      a, p = a or "none-left", p or "none-left"
   end
   wrk.headers["DPoP"] = p
   return wrk.format(nil, nil, nil,
      "grant_type=client_credentials&scope=data:read" ..
      "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer" ..
      "&client_assertion=" .. a)
end
