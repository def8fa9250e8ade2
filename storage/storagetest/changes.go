package storagetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/oauth"
)

// RunChanges checks oauth.ChangeLog.
func RunChanges(t *testing.T, newStore NewStore) {
	runCases(t, newStore, []testCase{
		{"AppendRead", testChangesAppendRead},
		{"Paging", testChangesPaging},
		{"DefaultLimit", testChangesDefaultLimit},
		{"Expiry", testChangesExpiry},
		{"Invalid", testChangesInvalid},
		{"ConcurrentAppend", testChangesConcurrentAppend},
		{"ReaderMissesNothing", testChangesReaderMissesNothing},
	})
}

func changeDiff(got, want oauth.Change) string {
	var d diff
	d.check("Seq", got.Seq == want.Seq, got.Seq, want.Seq)
	d.str("Kind", got.Kind, want.Kind)
	d.str("Key", got.Key, want.Key)
	d.time("Before", got.Before, want.Before)
	d.time("Expires", got.Expires, want.Expires)
	return d.String()
}

func mustAppend(t *testing.T, s Store, c oauth.Change) oauth.Change {
	t.Helper()
	seq, err := s.AppendChange(ctx, c)
	if err != nil {
		t.Fatalf("AppendChange(%s %q): %v", c.Kind, c.Key, err)
	}
	c.Seq = seq
	return c
}

func mustChangesSince(t *testing.T, s Store, after uint64, limit int) []oauth.Change {
	t.Helper()
	list, err := s.ChangesSince(ctx, after, limit)
	if err != nil {
		t.Fatalf("ChangesSince(%d, %d): %v", after, limit, err)
	}
	return list
}

// wantChanges checks what ChangesSince(after, limit) returns.
func wantChanges(t *testing.T, s Store, after uint64, limit int, want ...oauth.Change) {
	t.Helper()
	got := mustChangesSince(t, s, after, limit)
	if len(got) != len(want) {
		t.Fatalf("ChangesSince(%d, %d) returned %d changes %v, want %d %v", after, limit, len(got), seqs(got), len(want), seqs(want))
	}
	for i := range got {
		if d := changeDiff(got[i], want[i]); d != "" {
			t.Fatalf("ChangesSince(%d, %d)[%d]: %s", after, limit, i, d)
		}
	}
}

func seqs(list []oauth.Change) []uint64 {
	out := make([]uint64, len(list))
	for i, c := range list {
		out[i] = c.Seq
	}
	return out
}

func sampleChanges(clock *Clock) []oauth.Change {
	now := clock.Now()
	return []oauth.Change{
		{Kind: oauth.ChangeTokenRevoked, Key: "fam.at-1", Expires: now.Add(time.Hour)},
		{Kind: oauth.ChangeFamilyRevoked, Key: "fam", Expires: now.Add(48 * time.Hour)},
		{Kind: oauth.ChangeAgentRevoked, Key: "agent-1", Before: now.Add(-time.Nanosecond), Expires: now.Add(2 * time.Hour)},
		{Kind: oauth.ChangeAgentUpdated, Key: "agent-2", Expires: now.Add(time.Minute)},
	}
}

func testChangesAppendRead(t *testing.T, s Store, clock *Clock) {
	wantChanges(t, s, 0, 0)
	var stored []oauth.Change
	var last uint64
	for _, c := range sampleChanges(clock) {
		c.Seq = 999_999 // the store assigns numbers, whatever the caller says
		got := mustAppend(t, s, c)
		if got.Seq == 0 || got.Seq <= last {
			t.Fatalf("AppendChange returned %d after %d, want a higher number", got.Seq, last)
		}
		last = got.Seq
		stored = append(stored, got)
	}
	wantChanges(t, s, 0, 0, stored...)
	wantChanges(t, s, stored[0].Seq, 0, stored[1:]...)
	wantChanges(t, s, stored[1].Seq-1, 0, stored[1:]...)
	wantChanges(t, s, last, 0)
	wantChanges(t, s, last+1000, 0)
	wantChanges(t, s, ^uint64(0), 0)
}

func testChangesPaging(t *testing.T, s Store, clock *Clock) {
	var stored []oauth.Change
	for i := range 11 {
		stored = append(stored, mustAppend(t, s, oauth.Change{
			Kind: oauth.ChangeTokenRevoked, Key: fmt.Sprintf("jti-%d", i), Expires: clock.Now().Add(time.Hour),
		}))
	}
	var paged []oauth.Change
	var after uint64
	for page := 0; ; page++ {
		if page > len(stored) {
			t.Fatal("paging does not end")
		}
		list := mustChangesSince(t, s, after, 3)
		if len(list) > 3 {
			t.Fatalf("ChangesSince(limit 3) returned %d", len(list))
		}
		if len(list) == 0 {
			break
		}
		paged = append(paged, list...)
		after = list[len(list)-1].Seq
	}
	if !slices.Equal(seqs(paged), seqs(stored)) {
		t.Fatalf("paged ChangesSince: %v, want %v", seqs(paged), seqs(stored))
	}
	wantChanges(t, s, stored[2].Seq, 2, stored[3:5]...)
	wantChanges(t, s, 0, 1, stored[0])
	wantChanges(t, s, 0, -1, stored...)
}

func testChangesDefaultLimit(t *testing.T, s Store, clock *Clock) {
	const n = 105
	parallel(t, n, func(i int) error {
		_, err := s.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeAgentUpdated, Key: fmt.Sprintf("agent-%d", i), Expires: clock.Now().Add(time.Hour)})
		return err
	})
	first := mustChangesSince(t, s, 0, 0)
	if len(first) != 100 {
		t.Fatalf("ChangesSince with limit 0 returned %d changes, want 100", len(first))
	}
	rest := mustChangesSince(t, s, first[len(first)-1].Seq, 0)
	if len(rest) != n-100 {
		t.Fatalf("second page has %d changes, want %d", len(rest), n-100)
	}
	all := mustChangesSince(t, s, 0, 1000)
	if len(all) != n {
		t.Fatalf("ChangesSince with limit 1000 returned %d changes, want %d", len(all), n)
	}
}

func testChangesExpiry(t *testing.T, s Store, clock *Clock) {
	now := clock.Now()
	short1 := mustAppend(t, s, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "a", Expires: now.Add(time.Minute)})
	long := mustAppend(t, s, oauth.Change{Kind: oauth.ChangeFamilyRevoked, Key: "b", Expires: now.Add(time.Hour)})
	short2 := mustAppend(t, s, oauth.Change{Kind: oauth.ChangeAgentRevoked, Key: "c", Before: now, Expires: now.Add(time.Minute)})
	longer := mustAppend(t, s, oauth.Change{Kind: oauth.ChangeAgentUpdated, Key: "d", Expires: now.Add(2 * time.Hour)})

	clock.Advance(time.Minute - time.Nanosecond)
	wantChanges(t, s, 0, 0, short1, long, short2, longer)

	clock.Advance(time.Nanosecond)
	wantChanges(t, s, 0, 0, long, longer)
	// A limit counts returned changes, not expired ones skipped.
	wantChanges(t, s, 0, 1, long)
	wantChanges(t, s, long.Seq, 1, longer)

	// Numbers keep growing past expired changes.
	next := mustAppend(t, s, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "e", Expires: clock.Now().Add(time.Minute)})
	if next.Seq <= longer.Seq {
		t.Fatalf("AppendChange after expiry returned %d, not above %d", next.Seq, longer.Seq)
	}
	wantChanges(t, s, 0, 0, long, longer, next)

	clock.Advance(2 * time.Hour)
	wantChanges(t, s, 0, 0)
	after := mustAppend(t, s, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "f", Expires: clock.Now().Add(time.Minute)})
	if after.Seq <= next.Seq {
		t.Fatalf("AppendChange after everything expired returned %d, not above %d", after.Seq, next.Seq)
	}
	wantChanges(t, s, 0, 0, after)
}

func testChangesInvalid(t *testing.T, s Store, clock *Clock) {
	exp := clock.Now().Add(time.Hour)
	for name, c := range map[string]oauth.Change{
		"empty kind": {Key: "k", Expires: exp},
		"empty key":  {Kind: oauth.ChangeTokenRevoked, Expires: exp},
		"no expiry":  {Kind: oauth.ChangeTokenRevoked, Key: "k"},
	} {
		if _, err := s.AppendChange(ctx, c); err == nil {
			t.Fatalf("AppendChange with %s succeeded", name)
		}
	}
	wantChanges(t, s, 0, 0)
}

func testChangesConcurrentAppend(t *testing.T, s Store, clock *Clock) {
	const writers, perWriter = 8, 25
	var mu sync.Mutex
	var got []uint64
	parallel(t, writers, func(w int) error {
		for i := range perWriter {
			seq, err := s.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: fmt.Sprintf("w%d-%d", w, i), Expires: clock.Now().Add(time.Hour)})
			if err != nil {
				return err
			}
			mu.Lock()
			got = append(got, seq)
			mu.Unlock()
		}
		return nil
	})
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("concurrent AppendChange handed out a number twice: %v", got)
	}
	var read []uint64
	var after uint64
	for {
		list := mustChangesSince(t, s, after, 7)
		if len(list) == 0 {
			break
		}
		for _, c := range list {
			if c.Seq <= after {
				t.Fatalf("ChangesSince(%d) returned %d out of order", after, c.Seq)
			}
			after = c.Seq
			read = append(read, c.Seq)
		}
	}
	if !slices.Equal(read, got) {
		t.Fatalf("ChangesSince read %d changes, %d were appended", len(read), len(got))
	}
}

// testChangesReaderMissesNothing has a reader follow the log while writers
// append: reading on from the last number seen must see every change, so
// no number may become visible after a higher one was read.
func testChangesReaderMissesNothing(t *testing.T, s Store, clock *Clock) {
	const writers, perWriter = 8, 30
	var (
		appended sync.Map
		done     atomic.Bool
		read     []uint64
		after    uint64
		readErr  error
		readerWG sync.WaitGroup
	)
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		for {
			// Read the done flag first: a final pass after it was set sees
			// every append.
			last := done.Load()
			list, err := s.ChangesSince(ctx, after, 10)
			if err != nil {
				readErr = err
				return
			}
			for _, c := range list {
				read = append(read, c.Seq)
				after = c.Seq
			}
			if last && len(list) == 0 {
				return
			}
		}
	}()
	parallel(t, writers, func(w int) error {
		for i := range perWriter {
			seq, err := s.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeAgentUpdated, Key: fmt.Sprintf("w%d-%d", w, i), Expires: clock.Now().Add(time.Hour)})
			if err != nil {
				return err
			}
			appended.Store(seq, true)
		}
		return nil
	})
	done.Store(true)
	readerWG.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	if len(read) != writers*perWriter {
		var missed []uint64
		appended.Range(func(k, _ any) bool {
			if !slices.Contains(read, k.(uint64)) {
				missed = append(missed, k.(uint64))
			}
			return true
		})
		t.Fatalf("the reader saw %d of %d changes; missed %v", len(read), writers*perWriter, missed)
	}
}
