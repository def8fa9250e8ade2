package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunAuthRequests checks oauth.AuthRequestStore.
func RunAuthRequests(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"CreateGet", testAuthRequestCreateGet},
		{"CreateDuplicate", testAuthRequestDuplicate},
		{"CreateInvalid", testAuthRequestInvalid},
		{"NotFound", testAuthRequestNotFound},
		{"Approve", testAuthRequestApprove},
		{"Expiry", testAuthRequestExpiry},
		{"CopyIsolation", testAuthRequestIsolation},
		{"ConcurrentApprove", testAuthRequestConcurrentApprove},
	})
}

// RunCodes checks oauth.CodeStore.
func RunCodes(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"Redeem", testCodeRedeem},
		{"RedeemTwice", testCodeRedeemTwice},
		{"RedeemError", testCodeRedeemError},
		{"CreateDuplicate", testCodeDuplicate},
		{"CreateInvalid", testCodeInvalid},
		{"NotFound", testCodeNotFound},
		{"Expiry", testCodeExpiry},
		{"CopyIsolation", testCodeIsolation},
		{"ConcurrentRedeem", testCodeConcurrentRedeem},
		{"ConcurrentRedeemWithFailures", testCodeConcurrentRedeemFailures},
	})
}

// shortLife is how long the suite's short-lived records live on its clock.
const shortLife = 10 * time.Minute

// sampleJKT and otherJKT are DPoP key thumbprints (RFC 7638: base64url of
// a SHA-256, 43 characters), those of RFC 9449's and RFC 7638's examples.
const (
	sampleJKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
	otherJKT  = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
)

func sampleAuthRequest(id string, clock *Clock) *oauth.AuthRequest {
	now := clock.Now()
	return &oauth.AuthRequest{
		ID:            id,
		ClientID:      "client-" + id,
		RedirectURI:   "https://app.example.com/cb?x=1",
		Scopes:        []string{"openid", "data:read"},
		State:         "state-" + id,
		Nonce:         "nonce-" + id,
		CodeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		Resources:     []string{"https://api.example.com/", "https://mcp.example.com/mcp"},
		BrowserHash:   "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c",
		DPoPJKT:       sampleJKT,
		CreatedAt:     now,
		ExpiresAt:     now.Add(shortLife),
	}
}

func sampleApproval(agent string, clock *Clock) oauth.Approval {
	return oauth.Approval{
		AgentID:   agent,
		ModelName: "model-of-" + agent,
		AuthTime:  clock.Now().Add(-time.Second),
		CodeSeed:  "seed-" + agent,
	}
}

func copyAuthRequest(r *oauth.AuthRequest) *oauth.AuthRequest {
	out := *r
	out.Scopes = slices.Clone(r.Scopes)
	out.Resources = slices.Clone(r.Resources)
	if r.Approval != nil {
		a := *r.Approval
		out.Approval = &a
	}
	return &out
}

func approvalDiff(d *diff, got, want *oauth.Approval) {
	if got == nil || want == nil {
		d.check("Approval", got == want, got, want)
		return
	}
	d.str("Approval.AgentID", got.AgentID, want.AgentID)
	d.str("Approval.ModelName", got.ModelName, want.ModelName)
	d.time("Approval.AuthTime", got.AuthTime, want.AuthTime)
	d.str("Approval.CodeSeed", got.CodeSeed, want.CodeSeed)
}

func authRequestDiff(got, want *oauth.AuthRequest) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d diff
	d.str("ID", got.ID, want.ID)
	d.str("ClientID", got.ClientID, want.ClientID)
	d.str("RedirectURI", got.RedirectURI, want.RedirectURI)
	d.strs("Scopes", got.Scopes, want.Scopes)
	d.str("State", got.State, want.State)
	d.str("Nonce", got.Nonce, want.Nonce)
	d.str("CodeChallenge", got.CodeChallenge, want.CodeChallenge)
	d.strs("Resources", got.Resources, want.Resources)
	d.str("BrowserHash", got.BrowserHash, want.BrowserHash)
	d.str("DPoPJKT", got.DPoPJKT, want.DPoPJKT)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	approvalDiff(&d, got.Approval, want.Approval)
	return d.String()
}

func mustCreateAuthRequest(t *testing.T, s Store, r *oauth.AuthRequest) {
	t.Helper()
	if err := s.CreateAuthRequest(ctx, r); err != nil {
		t.Fatalf("CreateAuthRequest(%q): %v", r.ID, err)
	}
}

func wantAuthRequest(t *testing.T, s Store, want *oauth.AuthRequest) {
	t.Helper()
	got, err := s.GetAuthRequest(ctx, want.ID)
	if err != nil {
		t.Fatalf("GetAuthRequest(%q): %v", want.ID, err)
	}
	if d := authRequestDiff(got, want); d != "" {
		t.Fatalf("stored authorization request %q differs: %s", want.ID, d)
	}
}

func wantNoAuthRequest(t *testing.T, s Store, id string) {
	t.Helper()
	if r, err := s.GetAuthRequest(ctx, id); !errors.Is(err, oauth.ErrNotFound) || r != nil {
		t.Fatalf("GetAuthRequest(%q) = %+v, %v; want ErrNotFound", id, r, err)
	}
}

func testAuthRequestCreateGet(t *testing.T, s Store, clock *Clock) {
	want := sampleAuthRequest("req-1", clock)
	mustCreateAuthRequest(t, s, copyAuthRequest(want))
	wantAuthRequest(t, s, want)

	bare := &oauth.AuthRequest{ID: "bare", ExpiresAt: clock.Now().Add(time.Minute)}
	mustCreateAuthRequest(t, s, copyAuthRequest(bare))
	wantAuthRequest(t, s, bare)

	// A request stored with its approval keeps it, and is not pending.
	approved := sampleAuthRequest("approved", clock)
	a := sampleApproval("agent-1", clock)
	approved.Approval = &a
	mustCreateAuthRequest(t, s, copyAuthRequest(approved))
	wantAuthRequest(t, s, approved)
	if _, err := s.ApproveAuthRequest(ctx, "approved", sampleApproval("agent-2", clock)); !errors.Is(err, oauth.ErrNotPending) {
		t.Fatalf("ApproveAuthRequest of a request stored approved: got %v, want ErrNotPending", err)
	}
	wantAuthRequest(t, s, approved)
}

func testAuthRequestDuplicate(t *testing.T, s Store, clock *Clock) {
	first := sampleAuthRequest("dup", clock)
	mustCreateAuthRequest(t, s, copyAuthRequest(first))
	second := sampleAuthRequest("dup", clock)
	second.ClientID = "impostor"
	if err := s.CreateAuthRequest(ctx, second); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("second CreateAuthRequest: got %v, want ErrExists", err)
	}
	wantAuthRequest(t, s, first)
}

func testAuthRequestInvalid(t *testing.T, s Store, clock *Clock) {
	if err := s.CreateAuthRequest(ctx, nil); err == nil {
		t.Fatal("CreateAuthRequest(nil) succeeded")
	}
	noID := sampleAuthRequest("", clock)
	if err := s.CreateAuthRequest(ctx, noID); err == nil || errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateAuthRequest with an empty id: got %v, want an invalid-input error", err)
	}
	noExpiry := sampleAuthRequest("no-expiry", clock)
	noExpiry.ExpiresAt = time.Time{}
	if err := s.CreateAuthRequest(ctx, noExpiry); err == nil {
		t.Fatal("CreateAuthRequest without an expiry succeeded")
	}
	wantNoAuthRequest(t, s, "")
	wantNoAuthRequest(t, s, "no-expiry")

	// An approval must name its agent.
	mustCreateAuthRequest(t, s, sampleAuthRequest("pending", clock))
	if _, err := s.ApproveAuthRequest(ctx, "pending", oauth.Approval{CodeSeed: "seed"}); err == nil || errors.Is(err, oauth.ErrNotPending) {
		t.Fatalf("ApproveAuthRequest without an agent: got %v, want an invalid-input error", err)
	}
	wantAuthRequest(t, s, sampleAuthRequest("pending", clock))
}

func testAuthRequestNotFound(t *testing.T, s Store, clock *Clock) {
	wantNoAuthRequest(t, s, "missing")
	if r, err := s.ApproveAuthRequest(ctx, "missing", sampleApproval("agent", clock)); !errors.Is(err, oauth.ErrNotFound) || r != nil {
		t.Fatalf("ApproveAuthRequest of a missing request: %+v, %v; want ErrNotFound", r, err)
	}
	if _, err := s.ApproveAuthRequest(ctx, "", sampleApproval("agent", clock)); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("ApproveAuthRequest(\"\"): got %v, want ErrNotFound", err)
	}
	wantNoAuthRequest(t, s, "missing")
}

func testAuthRequestApprove(t *testing.T, s Store, clock *Clock) {
	want := sampleAuthRequest("req", clock)
	mustCreateAuthRequest(t, s, copyAuthRequest(want))
	a := sampleApproval("agent-1", clock)
	got, err := s.ApproveAuthRequest(ctx, "req", a)
	if err != nil {
		t.Fatalf("ApproveAuthRequest: %v", err)
	}
	want.Approval = &a
	if d := authRequestDiff(got, want); d != "" {
		t.Fatalf("ApproveAuthRequest returned %s", d)
	}
	wantAuthRequest(t, s, want)

	r, err := s.ApproveAuthRequest(ctx, "req", sampleApproval("agent-2", clock))
	if !errors.Is(err, oauth.ErrNotPending) {
		t.Fatalf("second ApproveAuthRequest: %+v, %v; want ErrNotPending", r, err)
	}
	wantAuthRequest(t, s, want)
}

func testAuthRequestExpiry(t *testing.T, s Store, clock *Clock) {
	early := sampleAuthRequest("early", clock)
	late := sampleAuthRequest("late", clock)
	long := sampleAuthRequest("long", clock)
	long.ExpiresAt = clock.Now().Add(time.Hour)
	for _, r := range []*oauth.AuthRequest{early, late, long} {
		mustCreateAuthRequest(t, s, copyAuthRequest(r))
	}

	clock.Advance(shortLife - time.Nanosecond)
	wantAuthRequest(t, s, late)
	a := sampleApproval("agent", clock)
	if _, err := s.ApproveAuthRequest(ctx, "early", a); err != nil {
		t.Fatalf("ApproveAuthRequest just before expiry: %v", err)
	}
	if err := s.CreateAuthRequest(ctx, sampleAuthRequest("late", clock)); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateAuthRequest over a live request: got %v, want ErrExists", err)
	}

	clock.Advance(time.Nanosecond)
	wantNoAuthRequest(t, s, "early")
	wantNoAuthRequest(t, s, "late")
	if _, err := s.ApproveAuthRequest(ctx, "late", a); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("ApproveAuthRequest at expiry: got %v, want ErrNotFound", err)
	}
	wantNoAuthRequest(t, s, "late")
	wantAuthRequest(t, s, long)

	// The id of an expired request is free again.
	again := sampleAuthRequest("late", clock)
	again.ClientID = "second-life"
	mustCreateAuthRequest(t, s, copyAuthRequest(again))
	wantAuthRequest(t, s, again)
	if _, err := s.ApproveAuthRequest(ctx, "late", a); err != nil {
		t.Fatalf("ApproveAuthRequest of the recreated request: %v", err)
	}
	clock.Advance(time.Hour)
	wantNoAuthRequest(t, s, "late")
	wantNoAuthRequest(t, s, "long")
}

func testAuthRequestIsolation(t *testing.T, s Store, clock *Clock) {
	want := sampleAuthRequest("iso", clock)
	in := copyAuthRequest(want)
	mustCreateAuthRequest(t, s, in)
	in.Scopes[0] = "admin"
	in.Resources[0] = "https://evil.example/"
	in.State = "mutated"
	wantAuthRequest(t, s, want)

	got, _ := s.GetAuthRequest(ctx, "iso")
	got.Scopes[1] = "admin"
	got.Resources[1] = "https://evil.example/"
	wantAuthRequest(t, s, want)

	a := sampleApproval("agent", clock)
	approved, err := s.ApproveAuthRequest(ctx, "iso", a)
	if err != nil {
		t.Fatal(err)
	}
	want.Approval = &oauth.Approval{AgentID: a.AgentID, ModelName: a.ModelName, AuthTime: a.AuthTime, CodeSeed: a.CodeSeed}
	approved.Approval.AgentID = "mutated"
	approved.Scopes[0] = "mutated"
	wantAuthRequest(t, s, want)
	got, _ = s.GetAuthRequest(ctx, "iso")
	got.Approval.CodeSeed = "mutated"
	wantAuthRequest(t, s, want)
}

func testAuthRequestConcurrentApprove(t *testing.T, s Store, clock *Clock) {
	for round := range 3 {
		id := fmt.Sprintf("contested-%d", round)
		mustCreateAuthRequest(t, s, sampleAuthRequest(id, clock))
		errs := race(racers, func(i int) error {
			_, err := s.ApproveAuthRequest(ctx, id, sampleApproval(fmt.Sprintf("agent-%d", i), clock))
			return err
		})
		won := exactlyOne(t, "ApproveAuthRequest", errs, oauth.ErrNotPending)
		want := sampleAuthRequest(id, clock)
		a := sampleApproval(fmt.Sprintf("agent-%d", won), clock)
		want.Approval = &a
		wantAuthRequest(t, s, want)
	}
}

// --- codes ---

func sampleCodeGrant(clock *Clock) *oauth.CodeGrant {
	now := clock.Now()
	return &oauth.CodeGrant{
		ClientID:      "client-1",
		RedirectURI:   "https://app.example.com/cb",
		Scopes:        []string{"openid", "data:read"},
		Nonce:         "nonce",
		CodeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		Resources:     []string{"https://api.example.com/", "https://mcp.example.com/mcp"},
		AgentID:       "agent-1",
		ModelName:     "gpt-test",
		AuthTime:      now.Add(-time.Minute),
		ExpiresAt:     now.Add(shortLife),
		DPoPJKT:       sampleJKT,
	}
}

func sampleRedemption(n int, clock *Clock) oauth.Redemption {
	return oauth.Redemption{
		AccessTokenID:      fmt.Sprintf("family-%d.at-%d", n, n),
		AccessTokenExpires: clock.Now().Add(time.Hour),
		Family:             fmt.Sprintf("family-%d", n),
	}
}

func copyCodeGrant(g *oauth.CodeGrant) *oauth.CodeGrant {
	out := *g
	out.Scopes = slices.Clone(g.Scopes)
	out.Resources = slices.Clone(g.Resources)
	if g.Redemption != nil {
		r := *g.Redemption
		out.Redemption = &r
	}
	return &out
}

func codeGrantDiff(got, want *oauth.CodeGrant) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	var d diff
	d.str("ClientID", got.ClientID, want.ClientID)
	d.str("RedirectURI", got.RedirectURI, want.RedirectURI)
	d.strs("Scopes", got.Scopes, want.Scopes)
	d.str("Nonce", got.Nonce, want.Nonce)
	d.str("CodeChallenge", got.CodeChallenge, want.CodeChallenge)
	d.strs("Resources", got.Resources, want.Resources)
	d.str("AgentID", got.AgentID, want.AgentID)
	d.str("ModelName", got.ModelName, want.ModelName)
	d.time("AuthTime", got.AuthTime, want.AuthTime)
	d.time("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	d.str("DPoPJKT", got.DPoPJKT, want.DPoPJKT)
	if got.Redemption == nil || want.Redemption == nil {
		d.check("Redemption", got.Redemption == want.Redemption, got.Redemption, want.Redemption)
	} else {
		d.str("Redemption.AccessTokenID", got.Redemption.AccessTokenID, want.Redemption.AccessTokenID)
		d.time("Redemption.AccessTokenExpires", got.Redemption.AccessTokenExpires, want.Redemption.AccessTokenExpires)
		d.str("Redemption.Family", got.Redemption.Family, want.Redemption.Family)
	}
	return d.String()
}

func mustCreateCode(t *testing.T, s Store, hash string, g *oauth.CodeGrant) {
	t.Helper()
	if err := s.CreateCode(ctx, hash, g); err != nil {
		t.Fatalf("CreateCode(%q): %v", hash, err)
	}
}

// redeemWith returns a redeem callback that records its calls and returns
// red.
func redeemWith(red oauth.Redemption, calls *atomic.Int32) func(*oauth.CodeGrant) (oauth.Redemption, error) {
	return func(*oauth.CodeGrant) (oauth.Redemption, error) {
		calls.Add(1)
		return red, nil
	}
}

func mustRedeem(t *testing.T, s Store, hash string, red oauth.Redemption) *oauth.CodeGrant {
	t.Helper()
	var calls atomic.Int32
	g, err := s.RedeemCode(ctx, hash, redeemWith(red, &calls))
	if err != nil {
		t.Fatalf("RedeemCode(%q): %v", hash, err)
	}
	if calls.Load() != 1 {
		t.Fatalf("RedeemCode called redeem %d times, want once", calls.Load())
	}
	return g
}

// wantCodeUsed redeems a used code and checks it reports its first
// redemption without calling redeem.
func wantCodeUsed(t *testing.T, s Store, hash string, want *oauth.CodeGrant) {
	t.Helper()
	var calls atomic.Int32
	got, err := s.RedeemCode(ctx, hash, redeemWith(oauth.Redemption{AccessTokenID: "replay"}, &calls))
	if !errors.Is(err, oauth.ErrCodeUsed) {
		t.Fatalf("RedeemCode of a used code: got %v, want ErrCodeUsed", err)
	}
	if calls.Load() != 0 {
		t.Fatal("RedeemCode called redeem for a used code")
	}
	if d := codeGrantDiff(got, want); d != "" {
		t.Fatalf("RedeemCode of a used code returned %s", d)
	}
}

func wantNoCode(t *testing.T, s Store, hash string) {
	t.Helper()
	var calls atomic.Int32
	g, err := s.RedeemCode(ctx, hash, redeemWith(oauth.Redemption{AccessTokenID: "x"}, &calls))
	if !errors.Is(err, oauth.ErrNotFound) || g != nil {
		t.Fatalf("RedeemCode(%q) = %+v, %v; want ErrNotFound", hash, g, err)
	}
	if calls.Load() != 0 {
		t.Fatalf("RedeemCode(%q) called redeem for a missing code", hash)
	}
}

func testCodeRedeem(t *testing.T, s Store, clock *Clock) {
	want := sampleCodeGrant(clock)
	mustCreateCode(t, s, "hash-1", copyCodeGrant(want))
	red := sampleRedemption(1, clock)
	got, err := s.RedeemCode(ctx, "hash-1", func(g *oauth.CodeGrant) (oauth.Redemption, error) {
		if d := codeGrantDiff(g, want); d != "" {
			t.Errorf("redeem saw %s", d)
		}
		return red, nil
	})
	if err != nil {
		t.Fatalf("RedeemCode: %v", err)
	}
	want.Redemption = &red
	if d := codeGrantDiff(got, want); d != "" {
		t.Fatalf("RedeemCode returned %s", d)
	}

	// A bare grant and an empty redemption round-trip too.
	bare := &oauth.CodeGrant{ExpiresAt: clock.Now().Add(time.Minute)}
	mustCreateCode(t, s, "bare", copyCodeGrant(bare))
	got = mustRedeem(t, s, "bare", oauth.Redemption{})
	bare.Redemption = &oauth.Redemption{}
	if d := codeGrantDiff(got, bare); d != "" {
		t.Fatalf("RedeemCode of a bare grant returned %s", d)
	}
	wantCodeUsed(t, s, "bare", bare)
}

func testCodeRedeemTwice(t *testing.T, s Store, clock *Clock) {
	want := sampleCodeGrant(clock)
	mustCreateCode(t, s, "hash", copyCodeGrant(want))
	red := sampleRedemption(1, clock)
	mustRedeem(t, s, "hash", red)
	want.Redemption = &red
	wantCodeUsed(t, s, "hash", want)
	wantCodeUsed(t, s, "hash", want)
}

func testCodeRedeemError(t *testing.T, s Store, clock *Clock) {
	want := sampleCodeGrant(clock)
	mustCreateCode(t, s, "hash", copyCodeGrant(want))
	for range 2 {
		g, err := s.RedeemCode(ctx, "hash", func(*oauth.CodeGrant) (oauth.Redemption, error) {
			return sampleRedemption(9, clock), errTest
		})
		if !errors.Is(err, errTest) {
			t.Fatalf("RedeemCode with a failing redeem: got %v, want its error", err)
		}
		if g != nil {
			t.Fatalf("RedeemCode returned a grant with redeem's error: %+v", g)
		}
	}
	// The code is still redeemable, and the failed attempt left no mark.
	red := sampleRedemption(1, clock)
	got := mustRedeem(t, s, "hash", red)
	want.Redemption = &red
	if d := codeGrantDiff(got, want); d != "" {
		t.Fatalf("RedeemCode after failed attempts returned %s", d)
	}
	wantCodeUsed(t, s, "hash", want)
}

func testCodeDuplicate(t *testing.T, s Store, clock *Clock) {
	first := sampleCodeGrant(clock)
	mustCreateCode(t, s, "dup", copyCodeGrant(first))
	second := sampleCodeGrant(clock)
	second.AgentID = "impostor"
	if err := s.CreateCode(ctx, "dup", second); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("second CreateCode: got %v, want ErrExists", err)
	}
	red := sampleRedemption(1, clock)
	got := mustRedeem(t, s, "dup", red)
	first.Redemption = &red
	if d := codeGrantDiff(got, first); d != "" {
		t.Fatalf("duplicate CreateCode changed the grant: %s", d)
	}
	// A redeemed code still holds its hash.
	if err := s.CreateCode(ctx, "dup", sampleCodeGrant(clock)); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateCode over a redeemed code: got %v, want ErrExists", err)
	}
	wantCodeUsed(t, s, "dup", first)
}

func testCodeInvalid(t *testing.T, s Store, clock *Clock) {
	if err := s.CreateCode(ctx, "", sampleCodeGrant(clock)); err == nil || errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateCode with an empty hash: got %v, want an invalid-input error", err)
	}
	if err := s.CreateCode(ctx, "nil", nil); err == nil {
		t.Fatal("CreateCode with a nil grant succeeded")
	}
	noExpiry := sampleCodeGrant(clock)
	noExpiry.ExpiresAt = time.Time{}
	if err := s.CreateCode(ctx, "no-expiry", noExpiry); err == nil {
		t.Fatal("CreateCode without an expiry succeeded")
	}
	wantNoCode(t, s, "")
	wantNoCode(t, s, "nil")
	wantNoCode(t, s, "no-expiry")

	mustCreateCode(t, s, "valid", sampleCodeGrant(clock))
	if _, err := s.RedeemCode(ctx, "valid", nil); err == nil || errors.Is(err, oauth.ErrCodeUsed) {
		t.Fatalf("RedeemCode with a nil callback: got %v, want an invalid-input error", err)
	}
	mustRedeem(t, s, "valid", sampleRedemption(1, clock))
}

func testCodeNotFound(t *testing.T, s Store, clock *Clock) {
	wantNoCode(t, s, "missing")
	mustCreateCode(t, s, "present", sampleCodeGrant(clock))
	wantNoCode(t, s, "presen")
	wantNoCode(t, s, "present2")
}

func testCodeExpiry(t *testing.T, s Store, clock *Clock) {
	mustCreateCode(t, s, "redeemed", sampleCodeGrant(clock))
	mustCreateCode(t, s, "unused", sampleCodeGrant(clock))
	long := sampleCodeGrant(clock)
	long.ExpiresAt = clock.Now().Add(time.Hour)
	mustCreateCode(t, s, "long", long)

	clock.Advance(shortLife - time.Nanosecond)
	mustRedeem(t, s, "redeemed", sampleRedemption(1, clock))
	if err := s.CreateCode(ctx, "unused", sampleCodeGrant(clock)); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("CreateCode over a live code: got %v, want ErrExists", err)
	}

	clock.Advance(time.Nanosecond)
	// Expired codes are gone, redeemed or not.
	wantNoCode(t, s, "redeemed")
	wantNoCode(t, s, "unused")

	// Their hashes are free again.
	again := sampleCodeGrant(clock)
	again.AgentID = "second-life"
	mustCreateCode(t, s, "redeemed", copyCodeGrant(again))
	red := sampleRedemption(2, clock)
	got := mustRedeem(t, s, "redeemed", red)
	again.Redemption = &red
	if d := codeGrantDiff(got, again); d != "" {
		t.Fatalf("recreated code redeemed as %s", d)
	}
	mustRedeem(t, s, "long", sampleRedemption(3, clock))
	clock.Advance(time.Hour)
	wantNoCode(t, s, "long")
	wantNoCode(t, s, "redeemed")
}

func testCodeIsolation(t *testing.T, s Store, clock *Clock) {
	want := sampleCodeGrant(clock)
	in := copyCodeGrant(want)
	mustCreateCode(t, s, "iso", in)
	in.Scopes[0] = "admin"
	in.Resources[0] = "https://evil.example/"
	in.AgentID = "mutated"

	red := sampleRedemption(1, clock)
	got, err := s.RedeemCode(ctx, "iso", func(g *oauth.CodeGrant) (oauth.Redemption, error) {
		if d := codeGrantDiff(g, want); d != "" {
			t.Errorf("redeem saw %s after the caller changed its grant", d)
		}
		// Only the returned Redemption is recorded.
		g.Scopes[1] = "admin"
		g.ClientID = "mutated by redeem"
		return red, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want.Redemption = &red
	if d := codeGrantDiff(got, want); d != "" {
		t.Fatalf("RedeemCode returned %s", d)
	}
	got.Redemption.AccessTokenID = "mutated"
	got.Scopes[0] = "mutated"
	wantCodeUsed(t, s, "iso", want)

	var calls atomic.Int32
	used, _ := s.RedeemCode(ctx, "iso", redeemWith(red, &calls))
	used.Redemption.Family = "mutated"
	wantCodeUsed(t, s, "iso", want)
}

func testCodeConcurrentRedeem(t *testing.T, s Store, clock *Clock) {
	for round := range 3 {
		hash := fmt.Sprintf("contested-%d", round)
		want := sampleCodeGrant(clock)
		mustCreateCode(t, s, hash, copyCodeGrant(want))
		var calls atomic.Int32
		grants := make([]*oauth.CodeGrant, racers)
		errs := race(racers, func(i int) error {
			g, err := s.RedeemCode(ctx, hash, redeemWith(sampleRedemption(i, clock), &calls))
			grants[i] = g
			return err
		})
		won := exactlyOne(t, "RedeemCode", errs, oauth.ErrCodeUsed)
		if calls.Load() != 1 {
			t.Fatalf("redeem was called %d times for one code, want once", calls.Load())
		}
		red := sampleRedemption(won, clock)
		want.Redemption = &red
		for i, g := range grants {
			if d := codeGrantDiff(g, want); d != "" {
				t.Fatalf("racer %d got %s; racer %d won", i, d, won)
			}
		}
		wantCodeUsed(t, s, hash, want)
	}
}

// testCodeConcurrentRedeemFailures races redemptions of which the odd ones
// fail: a failure must leave the code to the others, so exactly one even
// racer wins.
func testCodeConcurrentRedeemFailures(t *testing.T, s Store, clock *Clock) {
	want := sampleCodeGrant(clock)
	mustCreateCode(t, s, "contested", copyCodeGrant(want))
	errs := race(racers, func(i int) error {
		_, err := s.RedeemCode(ctx, "contested", func(*oauth.CodeGrant) (oauth.Redemption, error) {
			if i%2 == 1 {
				return oauth.Redemption{}, errTest
			}
			return sampleRedemption(i, clock), nil
		})
		return err
	})
	won := exactlyOne(t, "RedeemCode", errs, oauth.ErrCodeUsed, errTest)
	if won%2 == 1 {
		t.Fatalf("racer %d won although its redeem failed", won)
	}
	red := sampleRedemption(won, clock)
	want.Redemption = &red
	wantCodeUsed(t, s, "contested", want)
}
