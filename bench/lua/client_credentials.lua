-- b. POST /oauth2/token, client_credentials, HTTP Basic (the Authorization
-- header comes from load.sh via wrk -H).
wrk.method = "POST"
wrk.path = "/oauth2/token"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=client_credentials&scope=data:read"
