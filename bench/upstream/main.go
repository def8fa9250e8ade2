// Command upstream is the backend of bench/load.sh's proxy and guarded
// scenarios: it answers every request 200 "ok" on the address given as its
// only argument. net/http keeps HTTP/1.1 connections alive by default, so
// Caddy's reverse_proxy reuses its connections to it.
package main

import (
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: upstream 127.0.0.1:PORT")
	}
	body := []byte("ok")
	ok := func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{"2"}
		_, _ = w.Write(body)
	}
	srv := &http.Server{
		Addr:              os.Args[1],
		Handler:           http.HandlerFunc(ok),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	log.Fatal(srv.ListenAndServe())
}
