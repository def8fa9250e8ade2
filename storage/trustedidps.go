package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/jackc/pgx/v5"

	"github.com/authagent/caddy-authagent/oauth"
)

// The trusted IdPs added through the admin API (oauth.TrustedIdPStore),
// on every backend, keyed by issuer.

func checkTrustedIdP(idp *oauth.TrustedIdP) error {
	if idp == nil {
		return invalid("nil trusted IdP")
	}
	return checkID("trusted IdP issuer", idp.Issuer)
}

func cloneTrustedIdP(idp *oauth.TrustedIdP) *oauth.TrustedIdP {
	out := *idp
	out.Clients = slices.Clone(idp.Clients)
	out.Scopes = slices.Clone(idp.Scopes)
	return &out
}

// --- memory ---

// CreateTrustedIdP stores a copy of idp, or returns oauth.ErrExists.
func (m *Memory) CreateTrustedIdP(ctx context.Context, idp *oauth.TrustedIdP) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkTrustedIdP(idp); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.idps[idp.Issuer]; ok {
		return oauth.ErrExists
	}
	m.idps[idp.Issuer] = cloneTrustedIdP(idp)
	return nil
}

// GetTrustedIdP returns a copy of the IdP, or oauth.ErrNotFound.
func (m *Memory) GetTrustedIdP(ctx context.Context, issuer string) (*oauth.TrustedIdP, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	idp, ok := m.idps[issuer]
	if !ok {
		return nil, oauth.ErrNotFound
	}
	return cloneTrustedIdP(idp), nil
}

// ListTrustedIdPs returns copies of every IdP ordered by issuer.
func (m *Memory) ListTrustedIdPs(ctx context.Context) ([]*oauth.TrustedIdP, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*oauth.TrustedIdP, 0, len(m.idps))
	for _, issuer := range slices.Sorted(maps.Keys(m.idps)) {
		out = append(out, cloneTrustedIdP(m.idps[issuer]))
	}
	return out, nil
}

// DeleteTrustedIdP removes the IdP, or returns oauth.ErrNotFound.
func (m *Memory) DeleteTrustedIdP(ctx context.Context, issuer string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.idps[issuer]; !ok {
		return oauth.ErrNotFound
	}
	delete(m.idps, issuer)
	return nil
}

// --- Badger ---

// trustedIdPRecord is stored under "idp/<issuer>".
type trustedIdPRecord struct {
	Issuer    string    `json:"issuer"`
	JWKSURI   string    `json:"jwks_uri,omitempty"`
	Clients   []string  `json:"clients"`
	Scopes    []string  `json:"scopes"`
	Subject   string    `json:"subject"`
	AllowJWT  bool      `json:"allow_jwt,omitempty"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

func toTrustedIdPRecord(idp *oauth.TrustedIdP) trustedIdPRecord {
	return trustedIdPRecord{
		Issuer: idp.Issuer, JWKSURI: idp.JWKSURI, Clients: slices.Clone(idp.Clients), Scopes: slices.Clone(idp.Scopes),
		Subject: idp.Subject, AllowJWT: idp.AllowJWT, Source: idp.Source, CreatedAt: idp.CreatedAt,
	}
}

func (r trustedIdPRecord) trustedIdP() *oauth.TrustedIdP {
	return &oauth.TrustedIdP{
		Issuer: r.Issuer, JWKSURI: r.JWKSURI, Clients: r.Clients, Scopes: r.Scopes,
		Subject: r.Subject, AllowJWT: r.AllowJWT, Source: r.Source, CreatedAt: r.CreatedAt,
	}
}

func trustedIdPKey(issuer string) []byte { return []byte(trustedIdPPrefix + issuer) }

// CreateTrustedIdP stores a new IdP, or returns oauth.ErrExists.
func (b *Badger) CreateTrustedIdP(ctx context.Context, idp *oauth.TrustedIdP) error {
	if err := checkTrustedIdP(idp); err != nil {
		return err
	}
	rec := toTrustedIdPRecord(idp)
	k := trustedIdPKey(idp.Issuer)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		switch {
		case err == nil:
			return oauth.ErrExists
		case !errors.Is(err, badger.ErrKeyNotFound):
			return fmt.Errorf("auth_agent storage: read trusted IdP %q: %w", idp.Issuer, err)
		}
		return writeJSON(txn, k, rec, 0, "trusted IdP")
	})
}

// GetTrustedIdP returns the IdP, or oauth.ErrNotFound.
func (b *Badger) GetTrustedIdP(ctx context.Context, issuer string) (*oauth.TrustedIdP, error) {
	if issuer == "" {
		return nil, oauth.ErrNotFound
	}
	var out *oauth.TrustedIdP
	err := b.view(ctx, func(txn *badger.Txn) error {
		rec, _, err := readJSON[trustedIdPRecord](txn, trustedIdPKey(issuer), "trusted IdP")
		if err != nil {
			return err
		}
		if rec == nil {
			return oauth.ErrNotFound
		}
		out = rec.trustedIdP()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListTrustedIdPs returns every IdP ordered by issuer.
func (b *Badger) ListTrustedIdPs(ctx context.Context) ([]*oauth.TrustedIdP, error) {
	var out []*oauth.TrustedIdP
	for after := ""; ; {
		page, err := listJSON(b, ctx, trustedIdPPrefix, after, 1000, "trusted IdP", trustedIdPRecord.trustedIdP)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out, nil
		}
		after = page[len(page)-1].Issuer
	}
}

// DeleteTrustedIdP removes the IdP, or returns oauth.ErrNotFound.
func (b *Badger) DeleteTrustedIdP(ctx context.Context, issuer string) error {
	if issuer == "" {
		return oauth.ErrNotFound
	}
	k := trustedIdPKey(issuer)
	return b.updateKey(ctx, k, func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("auth_agent storage: read trusted IdP %q: %w", issuer, err)
		}
		return deleteKey(txn, k, "trusted IdP")
	})
}

// --- PostgreSQL ---

const trustedIdPColumns = "issuer, jwks_uri, clients, scopes, subject, allow_jwt, source, created_ns"

func scanTrustedIdP(row pgx.Row) (*oauth.TrustedIdP, error) {
	var (
		idp     oauth.TrustedIdP
		created *int64
	)
	if err := row.Scan(&idp.Issuer, &idp.JWKSURI, &idp.Clients, &idp.Scopes, &idp.Subject, &idp.AllowJWT, &idp.Source, &created); err != nil {
		return nil, err
	}
	idp.CreatedAt = fromNS(created)
	return &idp, nil
}

// CreateTrustedIdP stores idp, or returns oauth.ErrExists.
func (p *Postgres) CreateTrustedIdP(ctx context.Context, idp *oauth.TrustedIdP) error {
	if err := checkTrustedIdP(idp); err != nil {
		return err
	}
	if err := checkStorable("trusted IdP issuer", idp.Issuer); err != nil {
		return err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	_, err := p.pool.Exec(ctx, "INSERT INTO trusted_idps ("+trustedIdPColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
		idp.Issuer, idp.JWKSURI, nonNil(idp.Clients), nonNil(idp.Scopes), idp.Subject, idp.AllowJWT, idp.Source, ns(idp.CreatedAt))
	if isUnique(err) {
		return oauth.ErrExists
	}
	return p.fail(err)
}

// GetTrustedIdP returns the IdP, or oauth.ErrNotFound.
func (p *Postgres) GetTrustedIdP(ctx context.Context, issuer string) (*oauth.TrustedIdP, error) {
	if !storable(issuer) {
		return nil, oauth.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	idp, err := scanTrustedIdP(p.pool.QueryRow(ctx, "SELECT "+trustedIdPColumns+" FROM trusted_idps WHERE issuer = $1", issuer))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, oauth.ErrNotFound
	}
	return idp, p.fail(err)
}

// ListTrustedIdPs returns every IdP ordered by issuer.
func (p *Postgres) ListTrustedIdPs(ctx context.Context) ([]*oauth.TrustedIdP, error) {
	ctx, cancel := p.op(ctx)
	defer cancel()
	rows, err := p.pool.Query(ctx, "SELECT "+trustedIdPColumns+" FROM trusted_idps ORDER BY issuer")
	if err != nil {
		return nil, p.fail(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*oauth.TrustedIdP, error) { return scanTrustedIdP(row) })
	if err != nil {
		return nil, p.fail(err)
	}
	return out, nil
}

// DeleteTrustedIdP removes the IdP, or returns oauth.ErrNotFound.
func (p *Postgres) DeleteTrustedIdP(ctx context.Context, issuer string) error {
	if !storable(issuer) {
		return oauth.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	tag, err := p.pool.Exec(ctx, "DELETE FROM trusted_idps WHERE issuer = $1", issuer)
	if err != nil {
		return p.fail(err)
	}
	if tag.RowsAffected() == 0 {
		return oauth.ErrNotFound
	}
	return nil
}

// --- timed ---

func (t *timed) CreateTrustedIdP(ctx context.Context, idp *oauth.TrustedIdP) error {
	defer t.since("CreateTrustedIdP", time.Now())
	return t.b.CreateTrustedIdP(ctx, idp)
}

func (t *timed) GetTrustedIdP(ctx context.Context, issuer string) (*oauth.TrustedIdP, error) {
	defer t.since("GetTrustedIdP", time.Now())
	return t.b.GetTrustedIdP(ctx, issuer)
}

func (t *timed) ListTrustedIdPs(ctx context.Context) ([]*oauth.TrustedIdP, error) {
	defer t.since("ListTrustedIdPs", time.Now())
	return t.b.ListTrustedIdPs(ctx)
}

func (t *timed) DeleteTrustedIdP(ctx context.Context, issuer string) error {
	defer t.since("DeleteTrustedIdP", time.Now())
	return t.b.DeleteTrustedIdP(ctx, issuer)
}
