-- e. GET / on a site that only reverse-proxies to bench/upstream (a Go
-- net/http server answering 200 "ok"): the cost of the proxy hop, the
-- reference for guarded.
wrk.method = "GET"
