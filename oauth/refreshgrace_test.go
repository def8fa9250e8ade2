package oauth_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

const testGrace = 10 * time.Second

// graceServer is a server on a hand-moved clock with refresh_reuse_grace
// set to grace, whose audit log the test reads.
type graceServer struct {
	testServer
	clock *testClock
	audit *observer.ObservedLogs
}

func newGraceServer(t *testing.T, grace time.Duration) graceServer {
	t.Helper()
	clock := &testClock{t: time.Now()}
	store := storage.NewMemory(clock.now)
	t.Cleanup(func() { store.Close() })
	core, audit := observer.New(zapcore.InfoLevel)
	s := newServerWith(t, store, cheapParams, clock.now, oauth.AlgRS256, func(c *oauth.Config, d *oauth.Deps) {
		c.RefreshReuseGrace = grace
		d.Events = events.NewBus(zap.New(core), zap.NewNop(), clock.now)
	}, siteClient(t))
	s.seedAgent(t, "agent-1")
	return graceServer{testServer: s, clock: clock, audit: audit}
}

// signIn returns the first refresh token of a new family.
func (s graceServer) signIn(t *testing.T) string {
	t.Helper()
	return s.redeem(t, s.code(t, "agent-1"))["refresh_token"].(string)
}

// refresh presents rt and returns the status and the answer.
func (s graceServer) refresh(t *testing.T, rt string) (int, map[string]any) {
	t.Helper()
	rec := s.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	checkShape(t, rec)
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	return rec.Code, body
}

// mustRefresh presents rt and returns its successor.
func (s graceServer) mustRefresh(t *testing.T, rt string) string {
	t.Helper()
	code, body := s.refresh(t, rt)
	next, _ := body["refresh_token"].(string)
	if code != 200 || next == "" || next == rt {
		t.Fatalf("refresh: %d %v", code, body)
	}
	return next
}

// wantRefused presents rt and expects invalid_grant whose description
// contains words.
func (s graceServer) wantRefused(t *testing.T, rt, words string) {
	t.Helper()
	code, body := s.refresh(t, rt)
	if desc, _ := body["error_description"].(string); code != 400 || body["error"] != "invalid_grant" || !strings.Contains(desc, words) {
		t.Fatalf("refresh: %d %v, want invalid_grant saying %q", code, body, words)
	}
}

// stored is what the store holds for refresh token rt.
func (s graceServer) stored(t *testing.T, rt string) *oauth.RefreshGrant {
	t.Helper()
	sum := sha256.Sum256([]byte(rt))
	g, err := s.store.GetRefresh(context.Background(), base64.RawURLEncoding.EncodeToString(sum[:]))
	if err != nil {
		return nil
	}
	return g
}

func (s graceServer) reuses() int {
	return s.audit.FilterField(zap.String("event", events.RefreshReuseDetected)).Len()
}

// A client that lost the answer to its refresh presents the old token
// again within the grace: it gets a fresh successor, the first one it never
// received is void, and the family lives on.
func TestRefreshRetryWithinGrace(t *testing.T) {
	s := newGraceServer(t, testGrace)
	rt0 := s.signIn(t)
	lost := s.mustRefresh(t, rt0)

	s.clock.advance(testGrace - time.Second)
	rt1 := s.mustRefresh(t, rt0)
	if rt1 == lost {
		t.Fatal("the retry got the successor it lost back: it must be a new token")
	}
	if g := s.stored(t, lost); g == nil || !g.Rotated || g.Successor != "" {
		t.Fatalf("the lost successor after the retry: %+v, want void (rotated, no successor)", g)
	}
	if g := s.stored(t, rt0); g == nil || !g.Rotated || g.Successor == "" {
		t.Fatalf("the retried token: %+v", g)
	}
	// The family lives on: the retry's successor refreshes, and so on.
	rt2 := s.mustRefresh(t, rt1)
	s.mustRefresh(t, rt2)
	if n := s.reuses(); n != 0 {
		t.Fatalf("%d refresh.reuse_detected events for a retry", n)
	}
}

// Outside the grace, a second use is a reuse as without it: the family is
// revoked.
func TestRefreshReuseOutsideGrace(t *testing.T) {
	s := newGraceServer(t, testGrace)
	rt0 := s.signIn(t)
	rt1 := s.mustRefresh(t, rt0)

	s.clock.advance(testGrace)
	s.wantRefused(t, rt0, "already used")
	s.wantRefused(t, rt1, "invalid or expired")
	if n := s.reuses(); n != 1 {
		t.Fatalf("%d refresh.reuse_detected events, want 1", n)
	}
}

// The grace runs from the first rotation: retries do not extend it.
func TestRefreshRetriesDoNotExtendGrace(t *testing.T) {
	s := newGraceServer(t, testGrace)
	rt0 := s.signIn(t)
	s.mustRefresh(t, rt0)
	s.clock.advance(testGrace / 2)
	rt1 := s.mustRefresh(t, rt0)
	s.clock.advance(testGrace / 2)
	s.wantRefused(t, rt0, "already used")
	s.wantRefused(t, rt1, "invalid or expired")
}

// What the grace does not cover still revokes the family: the successor
// was used (the old token was stolen, or the client is confused), or the
// void successor of a retry shows up (whoever held the old token got the
// retry's successor first).
func TestRefreshReuseWithinGraceRevokes(t *testing.T) {
	t.Run("successor used", func(t *testing.T) {
		s := newGraceServer(t, testGrace)
		rt0 := s.signIn(t)
		rt1 := s.mustRefresh(t, rt0)
		rt2 := s.mustRefresh(t, rt1)
		s.wantRefused(t, rt0, "already used")
		s.wantRefused(t, rt2, "invalid or expired")
		if n := s.reuses(); n != 1 {
			t.Fatalf("%d refresh.reuse_detected events, want 1", n)
		}
	})
	t.Run("void successor presented", func(t *testing.T) {
		s := newGraceServer(t, testGrace)
		rt0 := s.signIn(t)
		first := s.mustRefresh(t, rt0)
		retried := s.mustRefresh(t, rt0)
		s.wantRefused(t, first, "already used")
		s.wantRefused(t, retried, "invalid or expired")
		if n := s.reuses(); n != 1 {
			t.Fatalf("%d refresh.reuse_detected events, want 1", n)
		}
	})
	t.Run("no grace", func(t *testing.T) {
		s := newGraceServer(t, 0)
		rt0 := s.signIn(t)
		rt1 := s.mustRefresh(t, rt0)
		s.wantRefused(t, rt0, "already used")
		s.wantRefused(t, rt1, "invalid or expired")
	})
}

// A client that sends its refresh again while the first request is still
// being answered (or two retries at once): the family is never revoked, at
// most one answer is refused, and exactly one token of the family is live
// afterwards — the one the store names as the old token's successor.
func TestRefreshConcurrentRetries(t *testing.T) {
	s := newGraceServer(t, testGrace)
	for round := range 10 {
		rt0 := s.signIn(t)
		if round%2 == 1 {
			s.mustRefresh(t, rt0) // the first answer was lost; two retries race
		}
		const n = 2
		var (
			wg     sync.WaitGroup
			codes  [n]int
			bodies [n]map[string]any
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], bodies[i] = s.refresh(t, rt0)
			}()
		}
		wg.Wait()
		var got []string
		for i := range n {
			switch desc, _ := bodies[i]["error_description"].(string); {
			case codes[i] == 200:
				got = append(got, bodies[i]["refresh_token"].(string))
			case codes[i] == 400 && strings.Contains(desc, "at the same time"):
			default:
				t.Fatalf("round %d: answer %d: %d %v", round, i, codes[i], bodies[i])
			}
		}
		if len(got) == 0 {
			t.Fatalf("round %d: no answer succeeded: %v", round, bodies)
		}
		live := s.stored(t, rt0).Successor
		var survivor string
		for _, rt := range got {
			g := s.stored(t, rt)
			if g == nil {
				t.Fatalf("round %d: a successor was deleted", round)
			}
			if !g.Rotated {
				if survivor != "" {
					t.Fatalf("round %d: two live successors", round)
				}
				survivor = rt
				sum := sha256.Sum256([]byte(rt))
				if base64.RawURLEncoding.EncodeToString(sum[:]) != live {
					t.Fatalf("round %d: the live successor is not the one recorded", round)
				}
			}
		}
		if survivor == "" {
			t.Fatalf("round %d: no answer holds the live successor", round)
		}
		s.mustRefresh(t, survivor)
	}
	if n := s.reuses(); n != 0 {
		t.Fatalf("%d refresh.reuse_detected events for retries", n)
	}
}
