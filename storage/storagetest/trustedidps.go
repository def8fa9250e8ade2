package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunTrustedIdPs checks oauth.TrustedIdPStore.
func RunTrustedIdPs(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"CreateGet", testIdPCreateGet},
		{"CreateDuplicate", testIdPDuplicate},
		{"CreateInvalid", testIdPCreateInvalid},
		{"Delete", testIdPDelete},
		{"NotFound", testIdPNotFound},
		{"List", testIdPList},
		{"CopyIsolation", testIdPIsolation},
		{"ConcurrentCreate", testIdPConcurrentCreate},
	})
}

func sampleIdP(issuer string) *oauth.TrustedIdP {
	return &oauth.TrustedIdP{
		Issuer:    issuer,
		JWKSURI:   issuer + "/jwks.json",
		Clients:   []string{"mcp-desktop", "cli"},
		Scopes:    []string{"mcp:tools", "mcp:read"},
		Subject:   oauth.SubjectExternal,
		AllowJWT:  true,
		Source:    oauth.TrustedIdPFromAdmin,
		CreatedAt: time.Date(2025, 4, 5, 6, 7, 8, 999999999, time.FixedZone("Y", -5*3600)),
	}
}

func idpDiff(got, want *oauth.TrustedIdP) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d diff
	d.str("Issuer", got.Issuer, want.Issuer)
	d.str("JWKSURI", got.JWKSURI, want.JWKSURI)
	d.strs("Clients", got.Clients, want.Clients)
	d.strs("Scopes", got.Scopes, want.Scopes)
	d.str("Subject", got.Subject, want.Subject)
	d.check("AllowJWT", got.AllowJWT == want.AllowJWT, got.AllowJWT, want.AllowJWT)
	d.str("Source", got.Source, want.Source)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	return d.String()
}

func copyIdP(idp *oauth.TrustedIdP) *oauth.TrustedIdP {
	out := *idp
	out.Clients = slices.Clone(idp.Clients)
	out.Scopes = slices.Clone(idp.Scopes)
	return &out
}

func mustCreateIdP(t *testing.T, s Store, idp *oauth.TrustedIdP) {
	t.Helper()
	if err := s.CreateTrustedIdP(ctx, idp); err != nil {
		t.Fatalf("CreateTrustedIdP(%q): %v", idp.Issuer, err)
	}
}

func wantIdP(t *testing.T, s Store, want *oauth.TrustedIdP) {
	t.Helper()
	got, err := s.GetTrustedIdP(ctx, want.Issuer)
	if err != nil {
		t.Fatalf("GetTrustedIdP(%q): %v", want.Issuer, err)
	}
	if d := idpDiff(got, want); d != "" {
		t.Fatalf("stored trusted IdP %q differs: %s", want.Issuer, d)
	}
}

func idpIssuers(list []*oauth.TrustedIdP) []string {
	out := make([]string, len(list))
	for i, idp := range list {
		out[i] = idp.Issuer
	}
	return out
}

func testIdPCreateGet(t *testing.T, s Store, _ *Clock) {
	want := sampleIdP("https://idp.example.com")
	mustCreateIdP(t, s, copyIdP(want))
	wantIdP(t, s, want)

	// Defaults: keys by discovery, no plain assertions, no time.
	bare := &oauth.TrustedIdP{Issuer: "http://127.0.0.1:9000/tenant/a", Clients: []string{"c"}, Scopes: []string{"s"}, Subject: oauth.SubjectAgent, Source: oauth.TrustedIdPFromAdmin}
	mustCreateIdP(t, s, copyIdP(bare))
	wantIdP(t, s, bare)
}

func testIdPDuplicate(t *testing.T, s Store, _ *Clock) {
	first := sampleIdP("https://idp.example.com")
	mustCreateIdP(t, s, copyIdP(first))
	second := sampleIdP("https://idp.example.com")
	second.Scopes = []string{"everything"}
	if err := s.CreateTrustedIdP(ctx, second); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("second CreateTrustedIdP: got %v, want ErrExists", err)
	}
	wantIdP(t, s, first)
}

func testIdPCreateInvalid(t *testing.T, s Store, _ *Clock) {
	if err := s.CreateTrustedIdP(ctx, nil); err == nil {
		t.Fatal("CreateTrustedIdP(nil) succeeded")
	}
	if err := s.CreateTrustedIdP(ctx, &oauth.TrustedIdP{}); err == nil {
		t.Fatal("CreateTrustedIdP without an issuer succeeded")
	}
	if list, err := s.ListTrustedIdPs(ctx); err != nil || len(list) != 0 {
		t.Fatalf("after refused creates: %v, %v; want none", idpIssuers(list), err)
	}
}

func testIdPDelete(t *testing.T, s Store, _ *Clock) {
	mustCreateIdP(t, s, sampleIdP("https://a.example.com"))
	mustCreateIdP(t, s, sampleIdP("https://b.example.com"))
	if err := s.DeleteTrustedIdP(ctx, "https://a.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTrustedIdP(ctx, "https://a.example.com"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetTrustedIdP after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteTrustedIdP(ctx, "https://a.example.com"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("second DeleteTrustedIdP: %v, want ErrNotFound", err)
	}
	wantIdP(t, s, sampleIdP("https://b.example.com"))
	// The issuer can be trusted again, with other settings.
	again := sampleIdP("https://a.example.com")
	again.Subject, again.AllowJWT = oauth.SubjectAgent, false
	mustCreateIdP(t, s, copyIdP(again))
	wantIdP(t, s, again)
}

func testIdPNotFound(t *testing.T, s Store, _ *Clock) {
	mustCreateIdP(t, s, sampleIdP("https://idp.example.com"))
	for _, issuer := range []string{"", "https://idp.example.com/", "https://IDP.example.com", "https://idp.example.com\x00", "\xff"} {
		if _, err := s.GetTrustedIdP(ctx, issuer); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("GetTrustedIdP(%q): %v, want ErrNotFound", issuer, err)
		}
		if err := s.DeleteTrustedIdP(ctx, issuer); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("DeleteTrustedIdP(%q): %v, want ErrNotFound", issuer, err)
		}
	}
	wantIdP(t, s, sampleIdP("https://idp.example.com"))
}

func testIdPList(t *testing.T, s Store, _ *Clock) {
	if list, err := s.ListTrustedIdPs(ctx); err != nil || len(list) != 0 {
		t.Fatalf("empty store lists %v, %v", idpIssuers(list), err)
	}
	issuers := []string{"https://z.example.com", "http://localhost:8080", "https://a.example.com/tenant/2", "https://a.example.com", "https://a.example.com/tenant/10"}
	for _, iss := range issuers {
		mustCreateIdP(t, s, sampleIdP(iss))
	}
	list, err := s.ListTrustedIdPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(issuers))
	if got := idpIssuers(list); !slices.Equal(got, want) {
		t.Fatalf("ListTrustedIdPs = %v, want %v (byte order)", got, want)
	}
	for _, idp := range list {
		if d := idpDiff(idp, sampleIdP(idp.Issuer)); d != "" {
			t.Fatalf("listed %q differs: %s", idp.Issuer, d)
		}
	}
}

func testIdPIsolation(t *testing.T, s Store, _ *Clock) {
	in := sampleIdP("https://idp.example.com")
	mustCreateIdP(t, s, in)
	in.Clients[0], in.Scopes[0] = "changed", "changed"
	got, err := s.GetTrustedIdP(ctx, in.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	got.Clients[0], got.Scopes[0] = "changed", "changed"
	wantIdP(t, s, sampleIdP("https://idp.example.com"))
	list, err := s.ListTrustedIdPs(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListTrustedIdPs: %v, %v", idpIssuers(list), err)
	}
	list[0].Clients[0] = "changed"
	wantIdP(t, s, sampleIdP("https://idp.example.com"))
}

func testIdPConcurrentCreate(t *testing.T, s Store, _ *Clock) {
	errs := race(racers, func(i int) error {
		idp := sampleIdP("https://idp.example.com")
		idp.Clients = []string{fmt.Sprintf("client-%d", i)}
		return s.CreateTrustedIdP(ctx, idp)
	})
	won := exactlyOne(t, "CreateTrustedIdP", errs, oauth.ErrExists)
	want := sampleIdP("https://idp.example.com")
	want.Clients = []string{fmt.Sprintf("client-%d", won)}
	wantIdP(t, s, want)
}
