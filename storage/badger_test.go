package storage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage/storagetest"
)

// openTestBadger opens a database and closes it when the test ends.
func openTestBadger(t testing.TB, opts BadgerOptions) *Badger {
	t.Helper()
	b, err := OpenBadger(opts)
	if err != nil {
		t.Fatalf("OpenBadger(%s): %v", opts.Dir, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestBadgerConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T, now func() time.Time) storagetest.Store {
		return openTestBadger(t, BadgerOptions{Dir: t.TempDir(), Now: now})
	})
}

// The encrypted database takes other code paths (key registry, encrypted
// WAL and tables, the index cache), so it passes the whole suite too.
func TestBadgerConformanceEncrypted(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{0x42}, 32)
	storagetest.Run(t, func(t *testing.T, now func() time.Time) storagetest.Store {
		return openTestBadger(t, BadgerOptions{Dir: t.TempDir(), EncryptionKey: key, Now: now})
	})
}

func TestBadgerNotShared(t *testing.T) {
	if openTestBadger(t, BadgerOptions{Dir: t.TempDir()}).Shared() {
		t.Fatal("Badger reports being shared between processes; its directory lock allows one")
	}
}

// nativeExpiryOf returns the Badger expiry of the item under key.
func nativeExpiryOf(t *testing.T, b *Badger, key []byte) time.Time {
	t.Helper()
	var exp uint64
	err := b.view(context.Background(), func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		exp = item.ExpiresAt()
		return nil
	})
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	if exp == 0 {
		t.Fatalf("%q has no Badger expiry", key)
	}
	return time.Unix(int64(exp), 0)
}

func TestBadgerSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := storagetest.NewClock()
	b, err := OpenBadger(BadgerOptions{Dir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	agent := &agents.Agent{ID: "persist", ModelName: "m", OwnerEmail: "p@example.com", Permissions: []string{"data:read"}}
	if err := b.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateClient(ctx, &oauth.Client{ID: "app", Name: "App", RedirectURIs: []string{"https://app/cb"}}); err != nil {
		t.Fatal(err)
	}
	key := oauth.StoredKey{ID: "kid", Algorithm: "EdDSA", Private: []byte{1, 2, 3}, CreatedAt: time.Now()}
	version, err := b.SwapSigningKeys(ctx, 0, []oauth.StoredKey{key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.EnsureSecret(ctx, "code-key", []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	exp := clock.Now().Add(time.Hour)
	if err := b.CreateRefresh(ctx, "rt", &oauth.RefreshGrant{Family: "fam", AgentID: "persist", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateCode(ctx, "code", &oauth.CodeGrant{AgentID: "persist", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := b.UseOnce(ctx, "jti", exp); err != nil {
		t.Fatal(err)
	}
	var lastSeq uint64
	for i := range 3 {
		if lastSeq, err = b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: strconv.Itoa(i), Expires: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b = openTestBadger(t, BadgerOptions{Dir: dir, Now: clock.Now})
	got, err := b.GetAgent(ctx, "persist")
	if err != nil || got.OwnerEmail != agent.OwnerEmail || len(got.Permissions) != 1 {
		t.Fatalf("agent after reopen: %+v, %v", got, err)
	}
	if c, err := b.GetClient(ctx, "app"); err != nil || c.Name != "App" {
		t.Fatalf("client after reopen: %+v, %v", c, err)
	}
	set, err := b.SigningKeys(ctx)
	if err != nil || set.Version != version || len(set.Keys) != 1 || !bytes.Equal(set.Keys[0].Private, key.Private) || !set.Keys[0].CreatedAt.Equal(key.CreatedAt) {
		t.Fatalf("keys after reopen: %+v, %v", set, err)
	}
	if s, err := b.EnsureSecret(ctx, "code-key", []byte("other")); err != nil || string(s) != "s3cret" {
		t.Fatalf("secret after reopen: %q, %v", s, err)
	}
	if g, err := b.GetRefresh(ctx, "rt"); err != nil || g.AgentID != "persist" {
		t.Fatalf("refresh token after reopen: %+v, %v", g, err)
	}
	if _, err := b.RedeemCode(ctx, "code", func(*oauth.CodeGrant) (oauth.Redemption, error) { return oauth.Redemption{}, nil }); err != nil {
		t.Fatalf("code after reopen: %v", err)
	}
	if err := b.UseOnce(ctx, "jti", exp); !errors.Is(err, oauth.ErrExists) {
		t.Fatalf("use-once key after reopen: %v, want ErrExists", err)
	}
	// The expiry survived the restart too.
	if left := time.Until(nativeExpiryOf(t, b, refreshKey("rt"))); left <= 59*time.Minute || left > time.Hour+2*time.Second {
		t.Fatalf("refresh token expires in %v, want about an hour", left)
	}
	// Sequence numbers continue where they were.
	seq, err := b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "after", Expires: exp})
	if err != nil || seq != lastSeq+1 {
		t.Fatalf("AppendChange after reopen: %d, %v; want %d", seq, err, lastSeq+1)
	}
	if list, err := b.ChangesSince(ctx, 0, 0); err != nil || len(list) != 4 {
		t.Fatalf("changes after reopen: %+v, %v", list, err)
	}
}

// TestBadgerSequenceSurvivesExpiry checks that numbers are never handed
// out twice, even when every change has expired (and compaction may have
// dropped them) before a restart.
func TestBadgerSequenceSurvivesExpiry(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "k", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// Remove the change itself, as compaction would once it expired.
	if err := b.db.Update(func(txn *badger.Txn) error { return txn.Delete(changeKey(seq)) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTestBadger(t, BadgerOptions{Dir: dir})
	next, err := b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "k2", Expires: time.Now().Add(time.Hour)})
	if err != nil || next <= seq {
		t.Fatalf("AppendChange after reopen returned %d, %v; want above %d", next, err, seq)
	}
}

func TestBadgerLockedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth_agent")
	first := openTestBadger(t, BadgerOptions{Dir: dir})

	second, err := OpenBadger(BadgerOptions{Dir: dir})
	if err == nil {
		second.Close()
		t.Fatal("second OpenBadger on an open directory succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %q does not match ErrLocked", err)
	}
	want := "auth_agent storage: database directory " + dir + " is locked by another process"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}

	// Once the first one is closed the directory is free.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openTestBadger(t, BadgerOptions{Dir: dir})
}

// filesContaining lists the files under dir whose bytes contain needle.
func filesContaining(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, needle) {
			found = append(found, filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// writeMarkedAgent stores an agent whose email is an easily spotted string,
// then reports which files hold it while the database is open (the WAL) and
// after Close (which flushes it into a table).
func writeMarkedAgent(t *testing.T, opts BadgerOptions, marker string) (whileOpen, afterClose []string) {
	t.Helper()
	b, err := OpenBadger(opts)
	if err != nil {
		t.Fatal(err)
	}
	a := &agents.Agent{ID: "secretive", OwnerEmail: marker}
	if err := b.CreateAgent(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	whileOpen = filesContaining(t, opts.Dir, []byte(marker))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return whileOpen, filesContaining(t, opts.Dir, []byte(marker))
}

func TestBadgerEncryption(t *testing.T) {
	ctx := context.Background()
	const marker = "plaintext-marker-4f1c9e@example.com"
	key := []byte("0123456789abcdef0123456789abcdef")
	dir := t.TempDir()

	whileOpen, afterClose := writeMarkedAgent(t, BadgerOptions{Dir: dir, EncryptionKey: key}, marker)
	if len(whileOpen)+len(afterClose) > 0 {
		t.Fatalf("encrypted database holds the plaintext in %v (open) and %v (closed)", whileOpen, afterClose)
	}

	// The same check on an unencrypted database must find the marker, or
	// the check above proves nothing.
	plainDir := t.TempDir()
	whileOpen, afterClose = writeMarkedAgent(t, BadgerOptions{Dir: plainDir}, marker)
	if len(whileOpen)+len(afterClose) == 0 {
		t.Fatal("plaintext marker not found in an unencrypted database: the scan cannot detect leaks")
	}

	wrongKey := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		name string
		dir  string
		key  []byte
	}{
		{"wrong key", dir, wrongKey},
		{"wrong key size", dir, wrongKey[:16]},
		{"no key for an encrypted database", dir, nil},
		{"key for an unencrypted database", plainDir, key},
	} {
		b, err := OpenBadger(BadgerOptions{Dir: tc.dir, EncryptionKey: tc.key})
		if err == nil {
			b.Close()
			t.Fatalf("%s: OpenBadger succeeded", tc.name)
		}
		want := "auth_agent storage: encryption key does not match the database in " + tc.dir
		if !errors.Is(err, ErrEncryptionKeyMismatch) || err.Error() != want {
			t.Errorf("%s: got %q, want %q matching ErrEncryptionKeyMismatch", tc.name, err, want)
		}
	}

	// The right key still opens it, and a caller wiping its key slice
	// afterwards does not matter.
	k := bytes.Clone(key)
	b := openTestBadger(t, BadgerOptions{Dir: dir, EncryptionKey: k})
	clear(k)
	got, err := b.GetAgent(ctx, "secretive")
	if err != nil || got.OwnerEmail != marker {
		t.Fatalf("GetAgent with the right key: %+v, %v", got, err)
	}
	if _, err := b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeAgentUpdated, Key: "secretive", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("write after the caller cleared its key: %v", err)
	}
}

func TestBadgerRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts BadgerOptions
		want string
	}{
		{"no directory", BadgerOptions{}, "no database directory"},
		{"short key", BadgerOptions{Dir: t.TempDir(), EncryptionKey: []byte("short")}, "16, 24 or 32 bytes"},
		{"long key", BadgerOptions{Dir: t.TempDir(), EncryptionKey: make([]byte, 64)}, "got 64"},
	} {
		b, err := OpenBadger(tc.opts)
		if err == nil {
			b.Close()
			t.Fatalf("%s: OpenBadger succeeded", tc.name)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not contain %q", tc.name, err, tc.want)
		}
	}
}

func TestBadgerCreatesPrivateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "caddy", "auth_agent")
	openTestBadger(t, BadgerOptions{Dir: dir})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Fatalf("database directory has mode %v, want 0700", perm)
	}
}

func TestBadgerWarnsAboutOpenDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	openTestBadger(t, BadgerOptions{Dir: dir, Logger: zap.New(core)})
	if logs.FilterMessageSnippet("accessible to other users").Len() != 1 {
		t.Fatalf("no warning about a world-readable directory; logs: %v", logs.All())
	}
}

func TestBadgerCloseTwiceAndUseAfterClose(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBadger(BadgerOptions{Dir: t.TempDir(), GCInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	exp := time.Now().Add(time.Hour)
	for what, err := range map[string]error{
		"GetAgent":     func() error { _, err := b.GetAgent(ctx, "x"); return err }(),
		"CreateClient": b.CreateClient(ctx, &oauth.Client{ID: "c"}),
		"SigningKeys":  func() error { _, err := b.SigningKeys(ctx); return err }(),
		"EnsureSecret": func() error { _, err := b.EnsureSecret(ctx, "n", []byte("v")); return err }(),
		"CreateCode":   b.CreateCode(ctx, "h", &oauth.CodeGrant{ExpiresAt: exp}),
		"RevokeFamily": b.RevokeFamily(ctx, "f"),
		"AppendChange": func() error {
			_, err := b.AppendChange(ctx, oauth.Change{Kind: "k", Key: "k", Expires: exp})
			return err
		}(),
		"ChangesSince":  func() error { _, err := b.ChangesSince(ctx, 0, 0); return err }(),
		"ListClients":   func() error { _, err := b.ListClients(ctx, "", 0); return err }(),
		"CreateRefresh": b.CreateRefresh(ctx, "h", &oauth.RefreshGrant{Family: "f", ExpiresAt: exp}),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", what, err)
		}
	}
}

// TestBadgerCloseWhileBusy closes the database under concurrent writers and
// a fast GC loop: every call must either succeed or return ErrClosed, never
// panic or hang. Run with -race it also checks Close's locking.
func TestBadgerCloseWhileBusy(t *testing.T) {
	b, err := OpenBadger(BadgerOptions{Dir: t.TempDir(), GCInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; ; i++ {
				var err error
				if w%2 == 0 {
					err = b.CreateCode(ctx, fmt.Sprintf("%d-%d", w, i), &oauth.CodeGrant{ExpiresAt: time.Now().Add(time.Minute)})
				} else {
					_, err = b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "k", Expires: time.Now().Add(time.Minute)})
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer failed with something other than ErrClosed: %v", err)
	}
}

func TestBadgerHonoursContext(t *testing.T) {
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	if err := b.CreateAgent(ctx, &agents.Agent{ID: "late"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateAgent with a cancelled context: %v", err)
	}
	if _, err := b.GetAgent(bg, "late"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("a cancelled CreateAgent wrote: %v", err)
	}
	exp := time.Now().Add(time.Hour)
	if err := b.CreateRefresh(ctx, "rt", &oauth.RefreshGrant{Family: "f", ExpiresAt: exp}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateRefresh with a cancelled context: %v", err)
	}
	if _, err := b.GetRefresh(bg, "rt"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("a cancelled CreateRefresh wrote: %v", err)
	}
	if _, err := b.AppendChange(ctx, oauth.Change{Kind: "k", Key: "k", Expires: exp}); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendChange with a cancelled context: %v", err)
	}
	if _, err := b.ChangesSince(ctx, 0, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ChangesSince with a cancelled context: %v", err)
	}
	if _, err := b.ListAgents(ctx, "", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListAgents with a cancelled context: %v", err)
	}
	if err := b.RevokeFamily(ctx, "f"); !errors.Is(err, context.Canceled) {
		t.Fatalf("RevokeFamily with a cancelled context: %v", err)
	}
	if list, _ := b.ChangesSince(bg, 0, 0); len(list) != 0 {
		t.Fatalf("a cancelled AppendChange wrote: %v", list)
	}
	if err := b.UseOnce(ctx, "k", exp); !errors.Is(err, context.Canceled) {
		t.Fatalf("UseOnce with a cancelled context: %v", err)
	}
	if err := b.UseOnce(bg, "k", exp); err != nil {
		t.Fatalf("a cancelled UseOnce recorded its key: %v", err)
	}
}

func TestBadgerExpiryRoundsUp(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		now  time.Time
		ttl  time.Duration
		want int64
	}{
		{base, time.Second, 1_700_000_001},
		{base.Add(900 * time.Millisecond), time.Second, 1_700_000_002},
		{base.Add(time.Nanosecond), time.Minute, 1_700_000_061},
		{base.Add(500 * time.Millisecond), 500 * time.Millisecond, 1_700_000_001},
	} {
		if got := badgerExpiry(tc.now, tc.ttl); got != uint64(tc.want) {
			t.Errorf("badgerExpiry(%v, %v) = %d, want %d", tc.now.UnixNano(), tc.ttl, got, tc.want)
		}
		// Never earlier than asked.
		if time.Unix(int64(badgerExpiry(tc.now, tc.ttl)), 0).Before(tc.now.Add(tc.ttl)) {
			t.Errorf("badgerExpiry(%v, %v) expires early", tc.now, tc.ttl)
		}
	}
}

// TestBadgerNativeExpiry checks Badger's own TTL against records whose
// expiry the injected clock decides: a second past the same distance from
// real time, whatever that clock says, and never 0 (which would mean
// "never").
func TestBadgerNativeExpiry(t *testing.T) {
	real := time.Unix(1_700_000_000, 250_000_000)
	for _, tc := range []struct {
		name      string
		clock     time.Time
		expiresAt time.Time
		want      uint64
	}{
		{"clock is real time", real, real.Add(time.Minute), 1_700_000_062},
		{"clock years behind", real.AddDate(-3, 0, 0), real.AddDate(-3, 0, 0).Add(time.Minute), 1_700_000_062},
		{"clock years ahead", real.AddDate(5, 0, 0), real.AddDate(5, 0, 0).Add(10 * time.Second), 1_700_000_012},
		{"already expired", real, real.Add(-time.Hour), 1_699_996_402},
		{"long expired", real, time.Unix(0, 0).AddDate(-100, 0, 0), 1},
	} {
		if got := nativeExpiry(real, tc.clock, tc.expiresAt); got != tc.want {
			t.Errorf("%s: nativeExpiry = %d, want %d", tc.name, got, tc.want)
		}
	}

	// And end to end: a record written under a clock three years behind
	// lives in Badger as long as the clock says, not three years less.
	ctx := context.Background()
	clock := storagetest.NewClock()
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir(), Now: clock.Now})
	if err := b.CreateAuthRequest(ctx, &oauth.AuthRequest{ID: "r", ExpiresAt: clock.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	left := time.Until(nativeExpiryOf(t, b, authReqKey("r")))
	if left < 10*time.Minute || left > 10*time.Minute+3*time.Second {
		t.Fatalf("authorization request lives %v in Badger, want 10m and a second or two", left)
	}
	// An approval keeps the stored expiry exactly.
	before := nativeExpiryOf(t, b, authReqKey("r"))
	clock.Advance(5 * time.Minute)
	if _, err := b.ApproveAuthRequest(ctx, "r", oauth.Approval{AgentID: "a"}); err != nil {
		t.Fatal(err)
	}
	if after := nativeExpiryOf(t, b, authReqKey("r")); !after.Equal(before) {
		t.Fatalf("approval moved the Badger expiry from %v to %v", before, after)
	}
	// A use-once key lives in Badger as long as it is recorded, so
	// compaction drops it once it is gone.
	if err := b.UseOnce(ctx, "jti", clock.Now().Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(nativeExpiryOf(t, b, usedOnceKey("jti"))); left < 5*time.Minute || left > 5*time.Minute+3*time.Second {
		t.Fatalf("use-once key lives %v in Badger, want 5m and a second or two", left)
	}
}

func TestZapBadgerLogger(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := newZapBadgerLogger(zap.New(core))
	l.Errorf("table %d is corrupt\n", 7)
	l.Warningf("slow %s", "fsync")
	l.Infof("Replaying file id: %d", 1)
	l.Debugf("noise")
	got := logs.All()
	if len(got) != 2 {
		t.Fatalf("got %d entries, want 2 (errors and warnings only): %v", len(got), got)
	}
	if got[0].Level != zapcore.ErrorLevel || got[0].Message != "table 7 is corrupt" {
		t.Errorf("first entry: %v %q", got[0].Level, got[0].Message)
	}
	if got[1].Level != zapcore.WarnLevel || got[1].Message != "slow fsync" {
		t.Errorf("second entry: %v %q", got[1].Level, got[1].Message)
	}
}

// TestBadgerRevokesLongFamily revokes a family with more tokens than one
// RevokeFamily transaction deletes, with another family's tokens around.
func TestBadgerRevokesLongFamily(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	exp := time.Now().Add(time.Hour)
	// Write the tokens in large transactions, outside the API's one fsync
	// per call; the layout is the one CreateRefresh writes.
	const n = 2*revokeBatch + 17
	err := b.db.Update(func(txn *badger.Txn) error {
		for i := range n {
			h := fmt.Sprintf("long-%05d", i)
			if err := b.putRefresh(txn, h, refreshRecord{Family: "long", ExpiresAt: exp}, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CreateRefresh(ctx, "other", &oauth.RefreshGrant{Family: "longer", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := b.RevokeFamily(ctx, "long"); err != nil {
		t.Fatalf("RevokeFamily: %v", err)
	}
	var left int
	err = b.view(ctx, func(txn *badger.Txn) error {
		for _, prefix := range []string{refreshPrefix, familyPrefix} {
			opts := badger.DefaultIteratorOptions
			opts.Prefix = []byte(prefix)
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				left++
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if left != 2 {
		t.Fatalf("after revoking a family of %d tokens, %d refresh keys are left, want the other family's 2", n, left)
	}
	if _, err := b.GetRefresh(ctx, "other"); err != nil {
		t.Fatalf("the other family's token: %v", err)
	}
}

// TestBadgerRecordsWithoutKeys checks records written before agents and
// clients could hold keys: they load with none, and records without keys
// are still written without the new fields, so a build before them reads
// what this one writes exactly as before.
func TestBadgerRecordsWithoutKeys(t *testing.T) {
	ctx := context.Background()
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	// As the build before keys wrote them.
	oldAgent := `{"agent_id":"old-agent","secret_hash":"$argon2id$x","model_name":"m","owner_name":"Ada","owner_email":"ada@example.com",` +
		`"permissions":["data:read"],"created_at":"2025-03-14T15:09:26.535897Z","updated_at":"2025-03-14T15:09:26.535897Z","disabled":false}`
	oldClient := `{"client_id":"old-client","client_name":"App","secret_sha256":"abc","redirect_uris":["https://app/cb"],"scopes":["openid"],` +
		`"grant_types":["authorization_code"],"id_token_signed_response_alg":"ES256","source":"admin","created_at":"2025-03-14T15:09:26.535897Z"}`
	err := b.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(agentKey("old-agent"), []byte(oldAgent)); err != nil {
			return err
		}
		return txn.Set(clientKey("old-client"), []byte(oldClient))
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := b.GetAgent(ctx, "old-agent")
	if err != nil || a.SecretHash != "$argon2id$x" || a.OwnerEmail != "ada@example.com" || a.JWKS != "" {
		t.Fatalf("agent of the previous build: %+v, %v", a, err)
	}
	c, err := b.GetClient(ctx, "old-client")
	if err != nil || c.SecretHash != "abc" || c.IDTokenAlg != "ES256" || c.JWKS != "" || c.JWKSURI != "" {
		t.Fatalf("client of the previous build: %+v, %v", c, err)
	}

	// Rewritten unchanged, they are the same JSON.
	if _, err := b.UpdateAgent(ctx, "old-agent", func(*agents.Agent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UpdateClient(ctx, "old-client", func(*oauth.Client) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := storedJSON(t, b, agentKey("old-agent")); got != oldAgent {
		t.Errorf("agent rewritten as\n%s\nwant\n%s", got, oldAgent)
	}
	if got := storedJSON(t, b, clientKey("old-client")); got != oldClient {
		t.Errorf("client rewritten as\n%s\nwant\n%s", got, oldClient)
	}

	// With keys, they carry them under RFC 7591's names.
	if _, err := b.UpdateAgent(ctx, "old-agent", func(a *agents.Agent) error { a.SecretHash, a.JWKS = "", `{"keys":[]}`; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UpdateClient(ctx, "old-client", func(c *oauth.Client) error {
		c.SecretHash, c.JWKS, c.JWKSURI = "", `{"keys":[]}`, "https://app/jwks"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := storedJSON(t, b, agentKey("old-agent")); !strings.Contains(got, `"jwks":"{\"keys\":[]}"`) {
		t.Errorf("agent with keys stored as %s", got)
	}
	if got := storedJSON(t, b, clientKey("old-client")); !strings.Contains(got, `"jwks":"{\"keys\":[]}"`) || !strings.Contains(got, `"jwks_uri":"https://app/jwks"`) {
		t.Errorf("client with keys stored as %s", got)
	}
}

// storedJSON returns the value stored under key, as it is on disk.
func storedJSON(t *testing.T, b *Badger, key []byte) string {
	t.Helper()
	var v []byte
	err := b.view(context.Background(), func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

// TestBadgerRecordsBeforeDPoP checks records written before DPoP: they
// load requiring no proof and bound to no key; rewritten by the calls
// that change them, they still hold no DPoP field, so a build before DPoP
// reads what this one writes exactly as before; and records that use DPoP
// carry it under the names below.
func TestBadgerRecordsBeforeDPoP(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)
	b := openTestBadger(t, BadgerOptions{Dir: t.TempDir(), Now: func() time.Time { return now }})
	// As the build before DPoP wrote them.
	old := map[string]string{
		string(agentKey("agent")): `{"agent_id":"agent","secret_hash":"$argon2id$x","model_name":"m","owner_name":"Ada","owner_email":"ada@example.com",` +
			`"permissions":["data:read"],"created_at":"2025-03-14T15:09:26.535897Z","updated_at":"2025-03-14T15:09:26.535897Z","disabled":false}`,
		string(clientKey("app")): `{"client_id":"app","client_name":"App","public":true,"redirect_uris":["https://app/cb"],"scopes":["openid"],` +
			`"grant_types":["authorization_code","refresh_token"],"source":"dynamic","created_at":"2025-03-14T15:09:26.535897Z"}`,
		string(authReqKey("req")): `{"id":"req","client_id":"app","redirect_uri":"https://app/cb","scopes":["openid"],"state":"s",` +
			`"code_challenge":"c","resources":["https://api/"],"resource":"https://api/","created_at":"2025-03-14T15:00:00Z","expires_at":"2025-03-14T15:10:00Z"}`,
		string(codeKey("code")): `{"client_id":"app","redirect_uri":"https://app/cb","scopes":["openid"],"code_challenge":"c",` +
			`"agent_id":"agent","auth_time":"2025-03-14T14:59:00Z","expires_at":"2025-03-14T15:10:00Z"}`,
		string(refreshKey("rt")): `{"family":"fam","client_id":"app","agent_id":"agent","scopes":["openid"],` +
			`"auth_time":"2025-03-14T14:59:00Z","expires_at":"2025-03-15T15:00:00Z"}`,
		string(familyIndexKey("fam", "rt")): ``,
	}
	err := b.db.Update(func(txn *badger.Txn) error {
		for k, v := range old {
			if err := txn.Set([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	a, err := b.UpdateAgent(ctx, "agent", func(*agents.Agent) error { return nil })
	if err != nil || a.OwnerEmail != "ada@example.com" || a.RequireDPoP {
		t.Fatalf("agent of the previous build: %+v, %v", a, err)
	}
	c, err := b.UpdateClient(ctx, "app", func(*oauth.Client) error { return nil })
	if err != nil || !c.Public || c.RequireDPoP {
		t.Fatalf("client of the previous build: %+v, %v", c, err)
	}
	for _, key := range [][]byte{agentKey("agent"), clientKey("app")} {
		if got := storedJSON(t, b, key); got != old[string(key)] {
			t.Errorf("%s rewritten as\n%s\nwant\n%s", key, got, old[string(key)])
		}
	}
	r, err := b.ApproveAuthRequest(ctx, "req", oauth.Approval{AgentID: "agent", CodeSeed: "seed"})
	if err != nil || r.State != "s" || r.DPoPJKT != "" {
		t.Fatalf("authorization request of the previous build: %+v, %v", r, err)
	}
	g, err := b.RedeemCode(ctx, "code", func(*oauth.CodeGrant) (oauth.Redemption, error) { return oauth.Redemption{AccessTokenID: "at"}, nil })
	if err != nil || g.AgentID != "agent" || g.DPoPJKT != "" {
		t.Fatalf("code of the previous build: %+v, %v", g, err)
	}
	rt, err := b.GetRefresh(ctx, "rt")
	if err != nil || rt.Family != "fam" || rt.DPoPJKT != "" {
		t.Fatalf("refresh token of the previous build: %+v, %v", rt, err)
	}
	if err := b.RotateRefresh(ctx, "rt", "rt-2", rt); err != nil {
		t.Fatal(err)
	}
	for _, key := range [][]byte{authReqKey("req"), codeKey("code"), refreshKey("rt"), refreshKey("rt-2")} {
		if got := storedJSON(t, b, key); strings.Contains(got, "dpop") {
			t.Errorf("%s rewritten with a DPoP field: %s", key, got)
		}
	}

	// With DPoP, they carry it: the agent under its API's name, the client
	// under RFC 9449's, the others under the request parameter's.
	if _, err := b.UpdateAgent(ctx, "agent", func(a *agents.Agent) error { a.RequireDPoP = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UpdateClient(ctx, "app", func(c *oauth.Client) error { c.RequireDPoP = true; return nil }); err != nil {
		t.Fatal(err)
	}
	const jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
	must(t, b.CreateAuthRequest(ctx, &oauth.AuthRequest{ID: "bound", DPoPJKT: jkt, ExpiresAt: now.Add(time.Minute)}))
	must(t, b.CreateCode(ctx, "bound", &oauth.CodeGrant{DPoPJKT: jkt, ExpiresAt: now.Add(time.Minute)}))
	rt.DPoPJKT = jkt
	if err := b.RotateRefresh(ctx, "rt-2", "rt-3", rt); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		string(agentKey("agent")):   `"require_dpop":true`,
		string(clientKey("app")):    `"dpop_bound_access_tokens":true`,
		string(authReqKey("bound")): `"dpop_jkt":"` + jkt + `"`,
		string(codeKey("bound")):    `"dpop_jkt":"` + jkt + `"`,
		string(refreshKey("rt-3")):  `"dpop_jkt":"` + jkt + `"`,
	} {
		if got := storedJSON(t, b, []byte(key)); !strings.Contains(got, want) {
			t.Errorf("%s stored as %s, want %s in it", key, got, want)
		}
	}
}

// TestBadgerRejectsNewerSchema refuses a database written by a later
// layout rather than misreading it.
func TestBadgerRejectsNewerSchema(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.Update(func(txn *badger.Txn) error { return txn.Set(metaSchema, []byte("3")) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBadger(BadgerOptions{Dir: dir})
	if err == nil {
		b.Close()
		t.Fatal("OpenBadger of a schema 3 database succeeded")
	}
	if !strings.Contains(err.Error(), `schema "3"`) {
		t.Fatalf("error %q does not name the schema", err)
	}
	// The directory lock was released.
	if _, err := OpenBadger(BadgerOptions{Dir: dir}); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenBadger: %v", err)
	}
}

// helperDirEnv tells TestHelperProcessWrites, run as a child process, which
// database to write to.
const helperDirEnv = "AUTH_AGENT_STORAGE_HELPER_DIR"

// TestHelperProcessWrites is not a test on its own: TestBadgerSurvivesKill
// runs the test binary again with only this test selected. It writes agents,
// refresh tokens, changes and use-once keys from a few goroutines and
// prints each id once its writes have returned, until it is killed.
func TestHelperProcessWrites(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestBadgerSurvivesKill")
	}
	b, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < 1_000_000; i++ {
				id := fmt.Sprintf("durable-%d-%06d", w, i)
				if err := b.CreateAgent(ctx, &agents.Agent{ID: id, OwnerEmail: id + "@example.com"}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				if err := b.CreateRefresh(ctx, id, &oauth.RefreshGrant{Family: id, AgentID: id, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				seq, err := b.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeAgentUpdated, Key: id, Expires: time.Now().Add(time.Hour)})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				if err := b.UseOnce(ctx, id, time.Now().Add(time.Hour)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				// One Write call per line, so lines from several goroutines
				// never interleave in the pipe.
				os.Stdout.WriteString("written " + id + " " + strconv.FormatUint(seq, 10) + "\n")
			}
		}()
	}
	wg.Wait()
	fmt.Fprintln(os.Stderr, "helper ran out of work before it was killed")
	os.Exit(4)
}

// child is a helper process: this test binary running one of its tests,
// printing a line for every write it had acknowledged.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	ended  bool
}

// startChild runs the test named test in a child process with env added;
// it is killed when t ends, if it is still running.
func startChild(t *testing.T, test, env string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1"), lines: make(chan string)}
	c.cmd.Env = append(os.Environ(), env)
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.ended {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c
}

// readUntil hands each line the child prints to collect until done
// reports true, failing if the child exits first or wait passes; progress
// says how far it got.
func (c *child) readUntil(t *testing.T, wait time.Duration, collect func(string), done func() bool, progress func() string) {
	t.Helper()
	timeout := time.After(wait)
	for !done() {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.cmd.Wait()
				c.ended = true
				t.Fatalf("helper exited after %s: %s", progress(), c.stderr.String())
			}
			collect(line)
		case <-timeout:
			t.Fatalf("helper got only to %s in %s: %s", progress(), wait, c.stderr.String())
		}
	}
}

// kill9 ends the child with SIGKILL (no deferred code, no Close, no
// flush), hands the lines already in the pipe (acknowledged too) to
// collect, and checks it died by the signal.
func (c *child) kill9(t *testing.T, collect func(string)) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for line := range c.lines {
		collect(line)
	}
	err := c.cmd.Wait()
	c.ended = true
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper did not die by SIGKILL: %v; stderr: %s", err, c.stderr.String())
	}
}

func TestBadgerSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	c := startChild(t, "TestHelperProcessWrites", helperDirEnv+"="+dir)

	written := map[string]uint64{}
	collect := func(line string) {
		rest, ok := strings.CutPrefix(line, "written ")
		if !ok {
			return
		}
		id, seq, _ := strings.Cut(rest, " ")
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			t.Errorf("helper printed %q", line)
		}
		written[id] = n
	}
	const before = 300
	c.readUntil(t, 30*time.Second, collect, func() bool { return len(written) >= before },
		func() string { return fmt.Sprintf("%d writes", len(written)) })
	// Whatever the child printed was acknowledged and must be on disk.
	c.kill9(t, collect)

	b := openTestBadger(t, BadgerOptions{Dir: dir})
	ctx := context.Background()
	changes := map[uint64]string{}
	for after := uint64(0); ; {
		list, err := b.ChangesSince(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			break
		}
		for _, c := range list {
			changes[c.Seq] = c.Key
			after = c.Seq
		}
	}
	var lost []string
	for id, seq := range written {
		if _, err := b.GetAgent(ctx, id); err != nil {
			lost = append(lost, "agent "+id+": "+err.Error())
		}
		if g, err := b.GetRefresh(ctx, id); err != nil || g.AgentID != id {
			lost = append(lost, fmt.Sprintf("refresh token %s: %+v, %v", id, g, err))
		}
		if changes[seq] != id {
			lost = append(lost, fmt.Sprintf("change %d of %s: found %q", seq, id, changes[seq]))
		}
		if err := b.UseOnce(ctx, id, time.Now().Add(time.Hour)); !errors.Is(err, oauth.ErrExists) {
			lost = append(lost, fmt.Sprintf("use-once key %s: %v", id, err))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost after kill -9, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	t.Logf("%d acknowledged agents, refresh tokens, changes and use-once keys all survived kill -9", len(written))
}
