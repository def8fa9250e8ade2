-- a. GET / on the plain `respond "ok" 200` site (no plugin work).
wrk.method = "GET"
