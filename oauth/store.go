package oauth

import (
	"context"
	"errors"
	"time"
)

// Errors stores return; callers test them with errors.Is.
var (
	// ErrNotFound is returned for a missing or expired record.
	ErrNotFound = errors.New("record not found")
	// ErrExists is returned by CreateRecord when the key is taken.
	ErrExists = errors.New("record already exists")
)

// Record is one stored record as ListRecords returns it.
type Record struct {
	Key   string
	Value []byte
}

// StoredKey is a signing key as persisted: the private key in PKCS #8 DER.
type StoredKey struct {
	ID        string    `json:"kid"`
	Algorithm string    `json:"alg"`
	Private   []byte    `json:"private_pkcs8"`
	CreatedAt time.Time `json:"created_at"`
	// RetiredAt is set when a newer key of the same algorithm took over;
	// the key is still published until it is deleted.
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

// KeyStore persists signing keys.
type KeyStore interface {
	// SigningKeys returns every stored key, in no particular order.
	SigningKeys(ctx context.Context) ([]StoredKey, error)
	// PutSigningKey creates or replaces the key with k.ID.
	PutSigningKey(ctx context.Context, k StoredKey) error
	// DeleteSigningKey removes a key; deleting a missing key is not an error.
	DeleteSigningKey(ctx context.Context, id string) error
}

// RecordStore keeps short-lived protocol records (pending authorization
// requests, codes, refresh tokens, revoked token ids) under a kind and a key.
// Keys are opaque strings; callers hash secrets before using them as keys.
type RecordStore interface {
	// PutRecord stores value under (kind, key), replacing any previous value.
	// A ttl of zero means the record does not expire.
	PutRecord(ctx context.Context, kind, key string, value []byte, ttl time.Duration) error
	// GetRecord returns the value, or ErrNotFound when it is missing or expired.
	GetRecord(ctx context.Context, kind, key string) ([]byte, error)
	// ConsumeRecord reads and deletes the record in one atomic step: of any
	// number of concurrent callers for the same record, exactly one gets the
	// value and the others get ErrNotFound. Delete methods MUST be atomic.
	ConsumeRecord(ctx context.Context, kind, key string) ([]byte, error)
	// UpdateRecord applies fn to the stored value and writes its result in one
	// atomic read-modify-write, keeping the record's expiry. If fn returns an
	// error nothing is written and that error is returned. ErrNotFound when
	// the record is missing or expired.
	UpdateRecord(ctx context.Context, kind, key string, fn func([]byte) ([]byte, error)) error
	// CreateRecord stores value under (kind, key) only if no live record is
	// there, returning ErrExists otherwise. A ttl of zero means no expiry.
	CreateRecord(ctx context.Context, kind, key string, value []byte, ttl time.Duration) error
	// ListRecords returns up to limit live records of kind ordered by key,
	// starting strictly after the key given in after ("" for the first page).
	// limit <= 0 means 100.
	ListRecords(ctx context.Context, kind, after string, limit int) ([]Record, error)
	// DeleteRecord removes the record; deleting a missing record is not an error.
	DeleteRecord(ctx context.Context, kind, key string) error
}
