-- g. POST to the introspection endpoint (RFC 7662) with one valid access
-- token and HTTP Basic client auth (the Authorization header comes from
-- load.sh via wrk -H). The path is the URL's: /oauth2/introspect here,
-- /token/introspection at oidc-provider (PEER_COMPARE=1). An answer without
-- "active":true is counted as the event "inactive", which fails the run.
-- args: a file holding the token (URL-safe characters only: a JWT or an
-- opaque token); a file, because wrk would take a token beginning with "-"
-- for an option.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function init(args)
   local f = assert(io.open(args[1]))
   local tok = f:read("*l")
   f:close()
   wrk.body = "token=" .. tok
end

function response(status, headers, body)
   count(status)
   if status == 200 and not string.find(body, '"active":true', 1, true) then
      note("inactive")
   end
end
