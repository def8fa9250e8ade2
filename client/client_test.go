package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Answers that are not the API's (a proxy's error page, a redirect away)
// become *Error values, never a panic or a zero result.
func TestAnswersThatAreNotTheAPIs(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/agent-auth":
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		case "/api/agents/profile":
			fmt.Fprint(w, `{"success":true}`)
		case "/oauth2/authorize":
			http.Redirect(w, r, "https://elsewhere.example/", http.StatusFound)
		case "/oauth2/revoke":
			w.Header().Set("Retry-After", "7")
			w.Header().Set("X-RateLimit-Limit", "10")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", "1900000000")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":"rate_limit_exceeded","error_description":"slow down"}`)
		}
	}))
	defer srv.Close()
	c := New(srv.URL)
	ctx := context.Background()
	creds := Credentials{AgentID: "a", AgentSecret: "s"}

	if _, err := c.Authenticate(ctx, creds); !IsCode(err, ErrorResponse) || err.(*Error).Status != 502 {
		t.Errorf("HTML 502: %v", err)
	}
	if _, err := c.Profile(ctx, "tok"); !IsCode(err, ErrorResponse) {
		t.Errorf("an envelope without data: %v", err)
	}
	if _, err := c.SignIn(ctx, srv.URL+"/oauth2/authorize?client_id=x", creds); !IsCode(err, ErrorResponse) {
		t.Errorf("a redirect away: %v", err)
	}
	err := c.Revoke(ctx, "tok", AgentAuth(creds))
	e, ok := err.(*Error)
	if !ok || e.Code != "rate_limit_exceeded" || e.RetryAfter.Seconds() != 7 || e.RateLimit == nil || e.RateLimit.Limit != 10 || e.RateLimit.Reset.Unix() != 1900000000 {
		t.Errorf("429: %#v", err)
	}
	if !strings.Contains(err.Error(), "rate_limit_exceeded: slow down") {
		t.Errorf("message %q", err.Error())
	}
}

// Credentials go only to the issuer.
func TestSignInRefusesAnotherHost(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer srv.Close()
	c := New("https://auth.example.com")
	if _, err := c.SignIn(context.Background(), srv.URL+"/oauth2/authorize", Credentials{AgentID: "a", AgentSecret: "s"}); !IsCode(err, "invalid_request") || hits != 0 {
		t.Fatalf("another host: %v, %d requests", err, hits)
	}
}

func TestTokenNeverPrintsItself(t *testing.T) {
	tok := &Token{AccessToken: "secret-access", RefreshToken: "secret-refresh", IDToken: "secret-id", TokenType: "Bearer"}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok)} {
		if strings.Contains(s, "secret-") {
			t.Fatalf("printed: %s", s)
		}
	}
}
