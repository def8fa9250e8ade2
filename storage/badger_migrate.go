package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/oauth"
)

// Constants of the previous layout that migration needs.
const (
	// legacyRevokedLeeway is the verification leeway the previous server
	// added to a revoked access token's exp.
	legacyRevokedLeeway = 30 * time.Second
	// legacySubjectLifetime bounds an agent revocation migrated without a
	// Badger expiry: longer than any token lifetime the server allows.
	legacySubjectLifetime = 366 * 24 * time.Hour
)

// migrate brings a database written before schema 2 to the current layout,
// once: agents and signing keys kept their keys and JSON, and everything
// else lived under "rec/<kind>/<key>". Clients move to "client/", refresh
// tokens become refresh records with a family index, the revocation records
// become changes, and the rest (pending requests and codes, all short-lived)
// is dropped. "meta/schema" is written last, so a migration cut short runs
// again at the next open; running part of it twice at most duplicates a
// change, which is harmless.
func (b *Badger) migrate() error {
	var schema []byte
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaSchema)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		schema, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("auth_agent storage: read schema version in %s: %w", b.dir, err)
	}
	if schema != nil {
		if string(schema) != schemaVersion {
			return fmt.Errorf("auth_agent storage: database in %s has schema %q, this build reads schema %s (was it written by a newer version?)", b.dir, schema, schemaVersion)
		}
		return nil
	}

	w := &migrationWriter{db: b.db, txn: b.db.NewTransaction(true)}
	defer func() { w.txn.Discard() }()
	var counts migrationCounts
	// The previous layout revoked a family with a record of its own and left
	// its refresh tokens in place; those tokens are not carried over.
	// ("rec/refresh/" sorts before "rec/revoked_family/", hence a pass of its
	// own first.)
	w.revokedFamilies = map[string]bool{}
	err = b.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(legacyRecordPrefix + "revoked_family/")
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			w.revokedFamilies[string(it.Item().Key()[len(opts.Prefix):])] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("auth_agent storage: migrate database in %s: %w", b.dir, err)
	}
	err = b.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(legacyRecordPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			val, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read %s: %w", key, err)
			}
			if err := b.migrateRecord(w, key, val, item.ExpiresAt(), &counts); err != nil {
				return err
			}
			if err := w.delete(key); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = w.set(badger.NewEntry(metaSchema, []byte(schemaVersion)))
	}
	if err == nil {
		err = w.txn.Commit()
	}
	if err != nil {
		return fmt.Errorf("auth_agent storage: migrate database in %s: %w", b.dir, err)
	}
	if counts != (migrationCounts{}) {
		b.log.Info("auth_agent storage: migrated database to schema "+schemaVersion,
			zap.String("dir", b.dir),
			zap.Int("clients", counts.clients),
			zap.Int("refresh_tokens", counts.refresh),
			zap.Int("revocations", counts.changes),
			zap.Int("dropped", counts.dropped))
	}
	return nil
}

type migrationCounts struct {
	clients, refresh, changes, dropped int
}

// migrateRecord writes the current form of one "rec/" record (the caller
// deletes it). expiresAt is the record's Badger expiry (0: none). Records
// that cannot be read are dropped with a warning rather than stopping the
// server from starting.
func (b *Badger) migrateRecord(w *migrationWriter, key, val []byte, expiresAt uint64, counts *migrationCounts) error {
	kind, id, ok := strings.Cut(string(key[len(legacyRecordPrefix):]), "/")
	now := b.now()
	drop := func(reason string) error {
		b.log.Warn("auth_agent storage: dropping unreadable record while migrating",
			zap.String("key", kind+"/"+id), zap.String("reason", reason))
		counts.dropped++
		return nil
	}
	if !ok || id == "" {
		counts.dropped++
		return nil
	}
	switch kind {
	case "client":
		var rec clientRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			return drop(err.Error())
		}
		e := badger.NewEntry(clientKey(id), bytes.Clone(val))
		e.ExpiresAt = expiresAt
		counts.clients++
		return w.set(e)

	case "refresh":
		var old legacyRefreshRecord
		if err := json.Unmarshal(val, &old); err != nil {
			return drop(err.Error())
		}
		if checkFamily(old.Family) != nil {
			return drop("invalid family")
		}
		if expired(old.ExpiresAt, now) || w.revokedFamilies[old.Family] {
			return nil
		}
		rec := old.record()
		val, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encode refresh token: %w", err)
		}
		exp := b.expiryOf(rec.ExpiresAt)
		e := badger.NewEntry(refreshKey(id), val)
		e.ExpiresAt = exp
		if err := w.set(e); err != nil {
			return err
		}
		idx := badger.NewEntry(familyIndexKey(rec.Family, id), nil)
		idx.ExpiresAt = exp
		counts.refresh++
		return w.set(idx)

	case "revoked", "revoked_family", "revoked_sub":
		n, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil {
			return drop(err.Error())
		}
		c := oauth.Change{Key: id}
		switch kind {
		case "revoked":
			c.Kind = oauth.ChangeTokenRevoked
			c.Expires = time.Unix(n, 0).Add(legacyRevokedLeeway)
		case "revoked_family":
			c.Kind = oauth.ChangeFamilyRevoked
			c.Expires = time.Unix(n, 0)
		case "revoked_sub":
			c.Kind = oauth.ChangeAgentRevoked
			c.Before = time.Unix(n, 0)
			if expiresAt != 0 {
				c.Expires = time.Unix(int64(expiresAt), 0)
			} else {
				c.Expires = c.Before.Add(legacySubjectLifetime)
			}
		}
		if expired(c.Expires, now) {
			return nil
		}
		b.lastSeq++
		c.Seq = b.lastSeq
		rec, err := json.Marshal(toChangeRecord(c))
		if err != nil {
			return fmt.Errorf("encode change: %w", err)
		}
		e := badger.NewEntry(changeKey(c.Seq), rec)
		e.ExpiresAt = b.expiryOf(c.Expires)
		if err := w.set(e); err != nil {
			return err
		}
		counts.changes++
		return w.set(badger.NewEntry(metaChangeSeq, strconv.AppendUint(nil, c.Seq, 10)))
	}
	// Pending requests, codes and anything else: short-lived, dropped.
	return nil
}

// migrationWriter collects migration writes into as few transactions as
// Badger's size limit allows, committing one and starting the next when a
// write does not fit.
type migrationWriter struct {
	db  *badger.DB
	txn *badger.Txn
	// revokedFamilies are the families the previous layout had revoked.
	revokedFamilies map[string]bool
}

func (w *migrationWriter) set(e *badger.Entry) error {
	return w.do(func(txn *badger.Txn) error { return txn.SetEntry(e) })
}

func (w *migrationWriter) delete(key []byte) error {
	return w.do(func(txn *badger.Txn) error { return txn.Delete(key) })
}

func (w *migrationWriter) do(op func(*badger.Txn) error) error {
	err := op(w.txn)
	if !errors.Is(err, badger.ErrTxnTooBig) {
		return err
	}
	if err := w.txn.Commit(); err != nil {
		return err
	}
	w.txn = w.db.NewTransaction(true)
	return op(w.txn)
}
