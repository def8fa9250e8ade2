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
	// Parallel with the other backends' suites: most of each run is TTL
	// waits.
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storagetest.Store {
		return openTestBadger(t, BadgerOptions{Dir: t.TempDir()})
	})
}

// The encrypted database takes other code paths (key registry, encrypted
// WAL and tables, the index cache), so it passes the whole suite too.
func TestBadgerConformanceEncrypted(t *testing.T) {
	// Parallel with the other backends' suites: most of each run is TTL
	// waits.
	t.Parallel()
	key := bytes.Repeat([]byte{0x42}, 32)
	storagetest.Run(t, func(t *testing.T) storagetest.Store {
		return openTestBadger(t, BadgerOptions{Dir: t.TempDir(), EncryptionKey: key})
	})
}

func TestBadgerSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenBadger(BadgerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	agent := &agents.Agent{ID: "persist", ModelName: "m", OwnerEmail: "p@example.com", Permissions: []string{"data:read"}}
	if err := b.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	key := oauth.StoredKey{ID: "kid", Algorithm: "EdDSA", Private: []byte{1, 2, 3}, CreatedAt: time.Now()}
	if err := b.PutSigningKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := b.PutRecord(ctx, "refresh", "forever", []byte("f"), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.PutRecord(ctx, "refresh", "hour", []byte("h"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b = openTestBadger(t, BadgerOptions{Dir: dir})
	got, err := b.GetAgent(ctx, "persist")
	if err != nil || got.OwnerEmail != agent.OwnerEmail || len(got.Permissions) != 1 {
		t.Fatalf("agent after reopen: %+v, %v", got, err)
	}
	keys, err := b.SigningKeys(ctx)
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0].Private, key.Private) || !keys[0].CreatedAt.Equal(key.CreatedAt) {
		t.Fatalf("keys after reopen: %+v, %v", keys, err)
	}
	for _, k := range []string{"forever", "hour"} {
		if _, err := b.GetRecord(ctx, "refresh", k); err != nil {
			t.Fatalf("record %q after reopen: %v", k, err)
		}
	}
	// The expiry survived the restart too.
	err = b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey("refresh", "hour"))
		if err != nil {
			return err
		}
		left := time.Until(time.Unix(int64(item.ExpiresAt()), 0))
		if left <= 59*time.Minute || left > time.Hour+time.Second {
			return fmt.Errorf("record expires in %v, want about an hour", left)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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
	if err := b.PutRecord(ctx, "code", "c", []byte("v"), 0); err != nil {
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
	if _, err := b.GetAgent(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetAgent after Close: got %v, want ErrClosed", err)
	}
	if err := b.PutRecord(ctx, "k", "v", nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("PutRecord after Close: got %v, want ErrClosed", err)
	}
	if err := b.CreateRecord(ctx, "k", "v", nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateRecord after Close: got %v, want ErrClosed", err)
	}
	if _, err := b.ListRecords(ctx, "k", "", 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ListRecords after Close: got %v, want ErrClosed", err)
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
			for i := 0; ; i++ {
				err := b.PutRecord(context.Background(), "busy", fmt.Sprintf("%d-%d", w, i), []byte("v"), time.Minute)
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
	if err := b.CreateAgent(ctx, &agents.Agent{ID: "late"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateAgent with a cancelled context: %v", err)
	}
	if _, err := b.GetAgent(context.Background(), "late"); !errors.Is(err, agents.ErrNotFound) {
		t.Fatalf("a cancelled CreateAgent wrote: %v", err)
	}
	if err := b.CreateRecord(ctx, "k", "v", nil, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateRecord with a cancelled context: %v", err)
	}
	if _, err := b.GetRecord(context.Background(), "k", "v"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("a cancelled CreateRecord wrote: %v", err)
	}
	if _, err := b.ListRecords(ctx, "k", "", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListRecords with a cancelled context: %v", err)
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

// helperDirEnv tells TestHelperProcessWrites, run as a child process, which
// database to write to.
const helperDirEnv = "AUTH_AGENT_STORAGE_HELPER_DIR"

// TestHelperProcessWrites is not a test on its own: TestBadgerSurvivesKill
// runs the test binary again with only this test selected. It writes agents
// and records from a few goroutines and prints each id once its writes have
// returned, until it is killed.
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
				if err := b.PutRecord(ctx, "code", id, []byte(id), time.Hour); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				// One Write call per line, so lines from several goroutines
				// never interleave in the pipe.
				os.Stdout.WriteString("written " + id + "\n")
			}
		}()
	}
	wg.Wait()
	fmt.Fprintln(os.Stderr, "helper ran out of work before it was killed")
	os.Exit(4)
}

func TestBadgerSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessWrites$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	var written []string
	collect := func(line string) {
		if id, ok := strings.CutPrefix(line, "written "); ok {
			written = append(written, id)
		}
	}
	const before = 300
	timeout := time.After(30 * time.Second)
	for len(written) < before {
		select {
		case line, ok := <-lines:
			if !ok {
				cmd.Wait()
				killed = true
				t.Fatalf("helper exited after %d writes: %s", len(written), stderr.String())
			}
			collect(line)
		case <-timeout:
			t.Fatalf("helper wrote only %d records in 30s: %s", len(written), stderr.String())
		}
	}
	// SIGKILL: no deferred code, no Close, no flush. Whatever the child
	// printed was acknowledged and must be on disk.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Lines already in the pipe were acknowledged too.
	for line := range lines {
		collect(line)
	}
	err = cmd.Wait()
	killed = true
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper did not die by SIGKILL: %v; stderr: %s", err, stderr.String())
	}

	b := openTestBadger(t, BadgerOptions{Dir: dir})
	ctx := context.Background()
	var lost []string
	for _, id := range written {
		if _, err := b.GetAgent(ctx, id); err != nil {
			lost = append(lost, "agent "+id+": "+err.Error())
		}
		if v, err := b.GetRecord(ctx, "code", id); err != nil || string(v) != id {
			lost = append(lost, fmt.Sprintf("record %s: %q, %v", id, v, err))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged writes lost after kill -9, e.g. %v", len(lost), len(written), lost[:min(5, len(lost))])
	}
	t.Logf("%d acknowledged agent+record pairs all survived kill -9", len(written))
}
