-- b. POST /oauth2/token, client_credentials, HTTP Basic (the Authorization
-- header comes from load.sh via wrk -H). The path is the URL's, so that the
-- same script loads oidc-provider's /token (PEER_COMPARE=1).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=client_credentials&scope=data:read"
