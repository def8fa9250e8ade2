-- b'. POST /oauth2/token, client_credentials, the client authenticating
-- with private_key_jwt: an ES256 client assertion per request.
--
-- args: <assertion file> <threads>. The file holds one assertion per line
-- (bench/assertions signs them before the run: wrk cannot), each with its
-- own jti, which the server takes once; thread i takes the lines whose
-- 0-based index is i modulo <threads> and sends each once. If a thread
-- runs out, its requests carry no assertion, the server answers 401, and
-- the run fails loudly (load.sh makes several times what a run needs).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local pool = {}

function init(args)
   pool = pool_from(args[1], tonumber(args[2]))
   if #pool == 0 then error("thread " .. id .. ": no assertions") end
end

function request()
   local a = table.remove(pool)
   if a == nil then
      note("starved")
      a = "none-left"
   end
   return wrk.format(nil, nil, nil,
      "grant_type=client_credentials&scope=data:read" ..
      "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer" ..
      "&client_assertion=" .. a)
end
