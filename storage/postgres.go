package storage

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// Postgres is the backend for several processes (Caddy instances) sharing
// one PostgreSQL database: typed tables, row locks and compare-and-swap
// where the other backends take their own lock, and LISTEN/NOTIFY so that
// every process hears of a change the moment it commits.
type Postgres struct {
	pool      *pgxpool.Pool
	now       func() time.Time
	log       *zap.Logger
	opTimeout time.Duration
	// where names the server for error messages (host, port, database):
	// never the password.
	where string

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// PostgresOptions configure OpenPostgres.
type PostgresOptions struct {
	// DSN is a PostgreSQL connection string, URL or key=value form.
	DSN string
	// MaxConns is the most connections the process opens (default 10);
	// MinConns how many it keeps open when idle (default 1).
	MaxConns, MinConns int32
	// OpTimeout bounds every store call, so that a database that stops
	// answering turns into an error rather than a hang (default 5s).
	OpTimeout time.Duration
	// ConnectTimeout bounds opening one connection when the DSN sets no
	// connect_timeout (default 5s).
	ConnectTimeout time.Duration
	// Logger receives the backend's warnings; nil discards them.
	Logger *zap.Logger
	// Now is the clock expiry is decided by (nil means time.Now).
	Now func() time.Time
	// SweepInterval is how often expired rows are deleted (default 1m).
	SweepInterval time.Duration
}

const (
	defaultPostgresMaxConns  = 10
	defaultPostgresMinConns  = 1
	defaultPostgresOpTimeout = 5 * time.Second
	defaultPostgresSweep     = time.Minute
	// changeChannel is the LISTEN/NOTIFY channel of the change log.
	changeChannel = "auth_agent_changes"
	// migrationLock is the advisory lock (bigint key space) held while the
	// schema is migrated, so that instances starting at once take turns.
	migrationLock = 0x41415f736368656d // "AA_schem"
	// familyLockClass is the first key (of the two-int key space) of the
	// transaction locks that order rotations and revocations of a
	// refresh-token family.
	familyLockClass = 0x4141
)

//go:embed postgres_schema/*.sql
var postgresSchema embed.FS

// Shared reports true: every process on the database sees the same state.
func (p *Postgres) Shared() bool { return true }

// OpenPostgres connects to the database, creates or migrates the schema,
// and starts the sweep of expired rows. Errors name the server, never the
// password.
func OpenPostgres(opts PostgresOptions) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("auth_agent storage: the PostgreSQL DSN cannot be parsed: %s", redact(err.Error(), opts.DSN))
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = defaultPostgresMaxConns
	}
	cfg.MinConns = opts.MinConns
	if cfg.MinConns <= 0 {
		cfg.MinConns = defaultPostgresMinConns
	}
	cfg.MinConns = min(cfg.MinConns, cfg.MaxConns)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
		if cfg.ConnConfig.ConnectTimeout <= 0 {
			cfg.ConnConfig.ConnectTimeout = 5 * time.Second
		}
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "auth_agent"
	}
	p := &Postgres{
		now:       opts.Now,
		log:       opts.Logger,
		opTimeout: opts.OpTimeout,
		where:     fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if p.opTimeout <= 0 {
		p.opTimeout = defaultPostgresOpTimeout
	}
	password := cfg.ConnConfig.Password
	p.pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("auth_agent storage: PostgreSQL at %s: %s", p.where, redact(err.Error(), password))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnConfig.ConnectTimeout+30*time.Second)
	defer cancel()
	if err := p.migrate(ctx); err != nil {
		p.pool.Close()
		return nil, fmt.Errorf("auth_agent storage: PostgreSQL at %s: %s", p.where, redact(err.Error(), password))
	}
	interval := opts.SweepInterval
	if interval <= 0 {
		interval = defaultPostgresSweep
	}
	go p.sweep(interval)
	return p, nil
}

// PostgresServer checks that dsn parses and names the server it points at
// (host:port/database), without connecting; errors never show the
// password.
func PostgresServer(dsn string) (string, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("auth_agent storage: the PostgreSQL DSN cannot be parsed: %s", redact(err.Error(), dsn))
	}
	return fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database), nil
}

// redact removes secret (a password, or a whole DSN that may hold one) from
// a message.
func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "xxxxx")
}

// Where names the database: host, port and database name.
func (p *Postgres) Where() string { return p.where }

// Close stops the sweep and closes every connection; calling it again does
// nothing.
func (p *Postgres) Close() error {
	p.closeOnce.Do(func() {
		close(p.stop)
		<-p.done
		p.pool.Close()
	})
	return nil
}

// --- schema ---

// migrate applies the embedded schema files the database has not seen, in
// order, each in its own transaction, under an advisory lock.
func (p *Postgres) migrate(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLock)); err != nil {
		return err
	}
	defer func() {
		// A fresh context: the lock must go even when ctx has ended.
		unlock, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(unlock, "SELECT pg_advisory_unlock($1)", int64(migrationLock)); err != nil {
			conn.Conn().Close(unlock) // closing the session drops the lock
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS auth_agent_schema (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	// Every file not applied yet, not only those above the highest
	// applied: schema versions are numbered on branches, and one merged
	// after a higher one was applied must still run.
	rows, err := conn.Query(ctx, "SELECT version FROM auth_agent_schema")
	if err != nil {
		return err
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return err
	}
	applied := make(map[int]bool, len(versions))
	current := 0
	for _, v := range versions {
		applied[int(v)] = true
		current = max(current, int(v))
	}
	files, err := postgresSchema.ReadDir("postgres_schema")
	if err != nil {
		return err
	}
	latest := 0
	for _, f := range files {
		v, err := strconv.Atoi(strings.SplitN(f.Name(), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("schema file %s is not numbered", f.Name())
		}
		latest = max(latest, v)
		if applied[v] {
			continue
		}
		sql, err := postgresSchema.ReadFile("postgres_schema/" + f.Name())
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("schema %s: %w", f.Name(), err)
			}
			_, err := tx.Exec(ctx, "INSERT INTO auth_agent_schema (version) VALUES ($1)", v)
			return err
		})
		if err != nil {
			return err
		}
		p.log.Info("migrated the database schema", zap.Int("version", v))
	}
	if current > latest {
		return fmt.Errorf("the database schema is version %d, newer than this build knows (%d); run a newer build", current, latest)
	}
	return nil
}

// sweep deletes expired rows every interval until Close. Every process
// sweeps; a row deleted twice is harmless.
func (p *Postgres) sweep(interval time.Duration) {
	defer close(p.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.DeleteExpired(context.Background()); err != nil {
				p.log.Warn("deleting expired rows", zap.Error(err))
			}
		}
	}
}

// DeleteExpired deletes every row the clock says is gone. Reads already
// ignore them; this bounds what the tables hold.
func (p *Postgres) DeleteExpired(ctx context.Context) error {
	ctx, cancel := p.op(ctx)
	defer cancel()
	now := p.now().UnixNano()
	for _, table := range []string{"auth_requests", "codes", "refresh_tokens", "used_once", "changes", "webhook_deliveries"} {
		if _, err := p.pool.Exec(ctx, "DELETE FROM "+table+" WHERE expires_ns <= $1", now); err != nil {
			return p.fail(err)
		}
	}
	return nil
}

// --- errors, times, keys ---

// op bounds one store call.
func (p *Postgres) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.opTimeout)
}

// fail turns a driver error into what callers test for: a database that
// cannot be reached (or answer in time) wraps oauth.ErrUnavailable, text
// PostgreSQL cannot hold wraps ErrInvalidInput, and the caller's own
// cancellation stays what it is.
func (p *Postgres) fail(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources
			strings.HasPrefix(pgErr.Code, "57P"),         // shutting down, cannot connect now
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization failure, deadlock
			pgErr.Code == "55P03", pgErr.Code == "57014": // lock or statement timeout
			return fmt.Errorf("%w: PostgreSQL at %s: %s", oauth.ErrUnavailable, p.where, pgErr.Message)
		case strings.HasPrefix(pgErr.Code, "22"): // data exception: NUL in text, for one
			return unstorable("PostgreSQL cannot store it: %s", pgErr.Message)
		}
		return fmt.Errorf("auth_agent storage: PostgreSQL at %s: %w", p.where, err)
	}
	var netErr net.Error
	var connErr *pgconn.ConnectError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr), errors.As(err, &connErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), pgconn.Timeout(err),
		errors.Is(err, net.ErrClosed), strings.Contains(err.Error(), "conn closed"), strings.Contains(err.Error(), "closed pool"):
		return fmt.Errorf("%w: PostgreSQL at %s: %v", oauth.ErrUnavailable, p.where, err)
	}
	return err
}

// isUnique reports a unique-key violation.
func isUnique(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// storable reports whether a key can be stored: PostgreSQL text holds
// neither NUL nor invalid UTF-8, so nothing can be stored under such a
// key, and looking one up finds nothing.
func storable(key string) bool {
	return utf8.ValidString(key) && !strings.ContainsRune(key, 0)
}

func checkStorable(what, key string) error {
	if !storable(key) {
		return unstorable("%s %q cannot be stored in PostgreSQL (NUL or not UTF-8)", what, key)
	}
	return nil
}

// unstorable is the error of a value PostgreSQL cannot hold: invalid input
// for the store, and a 400 for the client that sent it.
func unstorable(format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrInvalidInput, oauth.ErrUnstorable}, args...)...)
}

// listPage returns up to limit rows of query (a SELECT of one table whose
// key is id) with an id above after in byte order. An after PostgreSQL
// cannot compare with (NUL, invalid UTF-8) is cut to its longest storable
// prefix, and the rows from there up to after are skipped here.
func listPage[T any](ctx context.Context, p *Postgres, query, after string, limit int, scan func(pgx.Row) (T, error), id func(T) string) ([]T, error) {
	ctx, cancel := p.op(ctx)
	defer cancel()
	limit = listLimit(limit)
	bound, op := after, ">"
	if !storable(after) {
		bound, op = storablePrefix(after), ">="
	}
	var out []T
	for {
		rows, err := p.pool.Query(ctx, query+" WHERE id "+op+" $1 ORDER BY id LIMIT $2", bound, limit)
		if err != nil {
			return nil, p.fail(err)
		}
		page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
		if err != nil {
			return nil, p.fail(err)
		}
		for _, r := range page {
			if id(r) > after && len(out) < limit {
				out = append(out, r)
			}
		}
		if len(page) < limit || len(out) == limit {
			return out, nil
		}
		bound, op = id(page[len(page)-1]), ">"
	}
}

// storablePrefix is the longest prefix of s that PostgreSQL text holds.
func storablePrefix(s string) string {
	for i, r := range s {
		if r == 0 || (r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD")) {
			return s[:i]
		}
	}
	return s
}

func listLimit(limit int) int {
	if limit <= 0 {
		return defaultListLimit
	}
	return limit
}

// ns is a time as stored: Unix nanoseconds, NULL for the zero time, and
// clamped to what int64 nanoseconds hold.
func ns(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	var v int64
	switch {
	case t.After(maxNS):
		v = math.MaxInt64
	case t.Before(minNS):
		v = math.MinInt64 + 1
	default:
		v = t.UnixNano()
	}
	return &v
}

var (
	maxNS = time.Unix(0, math.MaxInt64)
	minNS = time.Unix(0, math.MinInt64+1)
)

func fromNS(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.Unix(0, *v)
}

// expiryNS is an expiry as stored (never NULL: checkExpiry refused zero).
func expiryNS(t time.Time) int64 { return *ns(t) }

// tx runs fn in a transaction bounded by the op timeout.
func (p *Postgres) tx(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := p.op(ctx)
	defer cancel()
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// --- agents ---

const agentColumns = "id, secret_hash, model_name, owner_name, owner_email, permissions, created_ns, updated_ns, disabled, jwks, require_dpop"

func scanAgent(row pgx.Row) (*agents.Agent, error) {
	var (
		a                agents.Agent
		created, updated *int64
	)
	if err := row.Scan(&a.ID, &a.SecretHash, &a.ModelName, &a.OwnerName, &a.OwnerEmail, &a.Permissions, &created, &updated, &a.Disabled, &a.JWKS, &a.RequireDPoP); err != nil {
		return nil, err
	}
	a.CreatedAt, a.UpdatedAt = fromNS(created), fromNS(updated)
	return &a, nil
}

func agentArgs(a *agents.Agent) []any {
	return []any{a.ID, a.SecretHash, a.ModelName, a.OwnerName, a.OwnerEmail, nonNil(a.Permissions), ns(a.CreatedAt), ns(a.UpdatedAt), a.Disabled, a.JWKS, a.RequireDPoP}
}

// nonNil stores a nil list as an empty one (the columns are NOT NULL); it
// reads back as empty, as from every backend.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// CreateAgent stores a, or returns agents.ErrExists.
func (p *Postgres) CreateAgent(ctx context.Context, a *agents.Agent) error {
	if err := checkAgent(a); err != nil {
		return err
	}
	if err := checkStorable("agent id", a.ID); err != nil {
		return err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	_, err := p.pool.Exec(ctx, "INSERT INTO agents ("+agentColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", agentArgs(a)...)
	if isUnique(err) {
		return agents.ErrExists
	}
	return p.fail(err)
}

// GetAgent returns the agent, or agents.ErrNotFound.
func (p *Postgres) GetAgent(ctx context.Context, id string) (*agents.Agent, error) {
	if !storable(id) {
		return nil, agents.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	a, err := scanAgent(p.pool.QueryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, agents.ErrNotFound
	}
	return a, p.fail(err)
}

// UpdateAgent applies fn to the stored agent under its row lock and stores
// the result unless fn fails; see agents.Repository.
func (p *Postgres) UpdateAgent(ctx context.Context, id string, fn func(*agents.Agent) error) (*agents.Agent, error) {
	if !storable(id) {
		return nil, agents.ErrNotFound
	}
	var out *agents.Agent
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		a, err := scanAgent(tx.QueryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = $1 FOR UPDATE", id))
		if errors.Is(err, pgx.ErrNoRows) {
			return agents.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
		if err := checkAgentRename(id, a); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE agents SET secret_hash = $2, model_name = $3, owner_name = $4, owner_email = $5,
			permissions = $6, created_ns = $7, updated_ns = $8, disabled = $9, jwks = $10, require_dpop = $11 WHERE id = $1`, agentArgs(a)...)
		out = a
		return err
	})
	if err != nil {
		return nil, p.fail(err)
	}
	return out.Clone(), nil
}

// DeleteAgent removes the agent, or returns agents.ErrNotFound.
func (p *Postgres) DeleteAgent(ctx context.Context, id string) error {
	return p.deleteRow(ctx, "agents", id, agents.ErrNotFound)
}

// deleteRow deletes the row of table under id, or returns notFound.
func (p *Postgres) deleteRow(ctx context.Context, table, id string, notFound error) error {
	if !storable(id) {
		return notFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	tag, err := p.pool.Exec(ctx, "DELETE FROM "+table+" WHERE id = $1", id)
	if err != nil {
		return p.fail(err)
	}
	if tag.RowsAffected() == 0 {
		return notFound
	}
	return nil
}

// ListAgents returns up to limit agents (100 when limit <= 0) ordered by
// id, starting strictly after the id after.
func (p *Postgres) ListAgents(ctx context.Context, after string, limit int) ([]*agents.Agent, error) {
	return listPage(ctx, p, "SELECT "+agentColumns+" FROM agents", after, limit, scanAgent, func(a *agents.Agent) string { return a.ID })
}

// --- clients ---

const clientColumns = "id, name, secret_hash, public, redirect_uris, scopes, grant_types, source, created_ns, id_token_alg, jwks, jwks_uri, require_dpop, application_type"

func scanClient(row pgx.Row) (*oauth.Client, error) {
	var (
		c       oauth.Client
		created *int64
	)
	if err := row.Scan(&c.ID, &c.Name, &c.SecretHash, &c.Public, &c.RedirectURIs, &c.Scopes, &c.GrantTypes, &c.Source, &created, &c.IDTokenAlg, &c.JWKS, &c.JWKSURI, &c.RequireDPoP, &c.ApplicationType); err != nil {
		return nil, err
	}
	c.CreatedAt = fromNS(created)
	return &c, nil
}

func clientArgs(c *oauth.Client) []any {
	return []any{c.ID, c.Name, c.SecretHash, c.Public, nonNil(c.RedirectURIs), nonNil(c.Scopes), nonNil(c.GrantTypes), c.Source, ns(c.CreatedAt), c.IDTokenAlg, c.JWKS, c.JWKSURI, c.RequireDPoP, c.ApplicationType}
}

// CreateClient stores c, or returns oauth.ErrExists.
func (p *Postgres) CreateClient(ctx context.Context, c *oauth.Client) error {
	if err := checkClient(c); err != nil {
		return err
	}
	if err := checkStorable("client id", c.ID); err != nil {
		return err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	_, err := p.pool.Exec(ctx, "INSERT INTO clients ("+clientColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)", clientArgs(c)...)
	if isUnique(err) {
		return oauth.ErrExists
	}
	return p.fail(err)
}

// GetClient returns the client, or oauth.ErrNotFound.
func (p *Postgres) GetClient(ctx context.Context, id string) (*oauth.Client, error) {
	if !storable(id) {
		return nil, oauth.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	c, err := scanClient(p.pool.QueryRow(ctx, "SELECT "+clientColumns+" FROM clients WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, oauth.ErrNotFound
	}
	return c, p.fail(err)
}

// UpdateClient applies fn to the stored client under its row lock and
// stores the result unless fn fails.
func (p *Postgres) UpdateClient(ctx context.Context, id string, fn func(*oauth.Client) error) (*oauth.Client, error) {
	if !storable(id) {
		return nil, oauth.ErrNotFound
	}
	var out *oauth.Client
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		c, err := scanClient(tx.QueryRow(ctx, "SELECT "+clientColumns+" FROM clients WHERE id = $1 FOR UPDATE", id))
		if errors.Is(err, pgx.ErrNoRows) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
		if err := checkClientRename(id, c); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE clients SET name = $2, secret_hash = $3, public = $4, redirect_uris = $5,
			scopes = $6, grant_types = $7, source = $8, created_ns = $9, id_token_alg = $10, jwks = $11,
			jwks_uri = $12, require_dpop = $13, application_type = $14 WHERE id = $1`, clientArgs(c)...)
		out = c
		return err
	})
	if err != nil {
		return nil, p.fail(err)
	}
	return cloneClient(out), nil
}

// DeleteClient removes the client, or returns oauth.ErrNotFound.
func (p *Postgres) DeleteClient(ctx context.Context, id string) error {
	return p.deleteRow(ctx, "clients", id, oauth.ErrNotFound)
}

// ListClients returns up to limit clients (100 when limit <= 0) ordered by
// id, starting strictly after the id after.
func (p *Postgres) ListClients(ctx context.Context, after string, limit int) ([]*oauth.Client, error) {
	return listPage(ctx, p, "SELECT "+clientColumns+" FROM clients", after, limit, scanClient, func(c *oauth.Client) string { return c.ID })
}

// --- signing keys ---

// SigningKeys returns the stored set, its keys ordered by id, read in one
// snapshot.
func (p *Postgres) SigningKeys(ctx context.Context) (oauth.KeySet, error) {
	var set oauth.KeySet
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT version FROM key_set FOR SHARE").Scan(&set.Version); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT kid, algorithm, private, created_ns, active_ns, retired_ns FROM signing_keys ORDER BY kid")
		if err != nil {
			return err
		}
		set.Keys, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (oauth.StoredKey, error) {
			var (
				k                        oauth.StoredKey
				created, active, retired *int64
			)
			err := row.Scan(&k.ID, &k.Algorithm, &k.Private, &created, &active, &retired)
			k.CreatedAt, k.ActiveAt, k.RetiredAt = fromNS(created), fromNS(active), fromNS(retired)
			return k, err
		})
		return err
	})
	if err != nil {
		return oauth.KeySet{}, p.fail(err)
	}
	if len(set.Keys) == 0 {
		set.Keys = nil
	}
	return set, nil
}

// SwapSigningKeys replaces the set if the stored version is still version,
// under the row lock of the version, and returns the new version;
// oauth.ErrStale otherwise.
func (p *Postgres) SwapSigningKeys(ctx context.Context, version uint64, keys []oauth.StoredKey) (uint64, error) {
	if err := checkKeySet(keys); err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := checkStorable("signing key id", k.ID); err != nil {
			return 0, err
		}
	}
	if version > math.MaxInt64 {
		return 0, oauth.ErrStale
	}
	var next int64
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "UPDATE key_set SET version = version + 1 WHERE version = $1 RETURNING version", int64(version)).Scan(&next)
		if errors.Is(err, pgx.ErrNoRows) {
			return oauth.ErrStale
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM signing_keys"); err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := tx.Exec(ctx, "INSERT INTO signing_keys (kid, algorithm, private, created_ns, active_ns, retired_ns) VALUES ($1, $2, $3, $4, $5, $6)",
				k.ID, k.Algorithm, k.Private, ns(k.CreatedAt), ns(k.ActiveAt), ns(k.RetiredAt)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, p.fail(err)
	}
	return uint64(next), nil
}

// --- secrets ---

// EnsureSecret returns the secret stored under name, storing candidate
// first when there is none.
func (p *Postgres) EnsureSecret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	if err := checkSecret(name, candidate); err != nil {
		return nil, err
	}
	if err := checkStorable("secret name", name); err != nil {
		return nil, err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	if _, err := p.pool.Exec(ctx, "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, candidate); err != nil {
		return nil, p.fail(err)
	}
	var v []byte
	if err := p.pool.QueryRow(ctx, "SELECT value FROM secrets WHERE name = $1", name).Scan(&v); err != nil {
		return nil, p.fail(err)
	}
	return v, nil
}

// --- authorization requests ---

// Schema 2 turned the one resource of requests, codes and refresh tokens
// into a list. The old column stays for one release and is still written
// (the first resource), so instances of the previous version keep working
// alongside new ones during a rolling upgrade; rows they write, with only
// that column, read back as a list of one.
const resourcesRead = "CASE WHEN cardinality(resources) = 0 AND resource <> '' THEN ARRAY[resource] ELSE resources END"

// readColumns is a column list for SELECT and RETURNING: resources read
// with resourcesRead.
func readColumns(cols string) string { return strings.Replace(cols, "resources", resourcesRead, 1) }

var (
	authRequestRead = readColumns(authRequestColumns)
	codeRead        = readColumns(codeColumns)
	refreshRead     = readColumns(refreshColumns)
)

const authRequestColumns = `id, client_id, redirect_uri, scopes, state, nonce, code_challenge, resources, browser_hash,
	created_ns, expires_ns, approved_agent, approved_model, auth_ns, code_seed, dpop_jkt`

func scanAuthRequest(row pgx.Row) (*oauth.AuthRequest, error) {
	var (
		r                      oauth.AuthRequest
		created, authNS        *int64
		expires                int64
		agent, model, codeSeed *string
	)
	if err := row.Scan(&r.ID, &r.ClientID, &r.RedirectURI, &r.Scopes, &r.State, &r.Nonce, &r.CodeChallenge, &r.Resources, &r.BrowserHash,
		&created, &expires, &agent, &model, &authNS, &codeSeed, &r.DPoPJKT); err != nil {
		return nil, err
	}
	r.CreatedAt, r.ExpiresAt = fromNS(created), time.Unix(0, expires)
	if agent != nil {
		r.Approval = &oauth.Approval{AgentID: *agent, ModelName: deref(model), AuthTime: fromNS(authNS), CodeSeed: deref(codeSeed)}
	}
	return &r, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// CreateAuthRequest stores r until r.ExpiresAt, or returns oauth.ErrExists
// while a live request has the id (an expired one is replaced).
func (p *Postgres) CreateAuthRequest(ctx context.Context, r *oauth.AuthRequest) error {
	if err := checkAuthRequest(r); err != nil {
		return err
	}
	if err := checkStorable("authorization request id", r.ID); err != nil {
		return err
	}
	var agent, model, seed *string
	var authNS *int64
	if a := r.Approval; a != nil {
		agent, model, seed, authNS = &a.AgentID, &a.ModelName, &a.CodeSeed, ns(a.AuthTime)
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	tag, err := p.pool.Exec(ctx, `INSERT INTO auth_requests (`+authRequestColumns+`, resource)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, coalesce(($8::text[])[1], ''))
		ON CONFLICT (id) DO UPDATE SET client_id = $2, redirect_uri = $3, scopes = $4, state = $5, nonce = $6,
			code_challenge = $7, resources = $8, resource = coalesce(($8::text[])[1], ''), browser_hash = $9, created_ns = $10,
			expires_ns = $11, approved_agent = $12, approved_model = $13, auth_ns = $14, code_seed = $15, dpop_jkt = $16
		WHERE auth_requests.expires_ns <= $17`,
		r.ID, r.ClientID, r.RedirectURI, nonNil(r.Scopes), r.State, r.Nonce, r.CodeChallenge, nonNil(r.Resources), r.BrowserHash,
		ns(r.CreatedAt), expiryNS(r.ExpiresAt), agent, model, authNS, seed, r.DPoPJKT, p.now().UnixNano())
	if err != nil {
		return p.fail(err)
	}
	if tag.RowsAffected() == 0 {
		return oauth.ErrExists
	}
	return nil
}

// GetAuthRequest returns the request, or oauth.ErrNotFound when it is
// missing or expired.
func (p *Postgres) GetAuthRequest(ctx context.Context, id string) (*oauth.AuthRequest, error) {
	if !storable(id) {
		return nil, oauth.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	r, err := scanAuthRequest(p.pool.QueryRow(ctx, "SELECT "+authRequestRead+" FROM auth_requests WHERE id = $1 AND expires_ns > $2", id, p.now().UnixNano()))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, oauth.ErrNotFound
	}
	return r, p.fail(err)
}

// ApproveAuthRequest records a on the pending request in one conditional
// update, so exactly one of concurrent approvals succeeds.
func (p *Postgres) ApproveAuthRequest(ctx context.Context, id string, a oauth.Approval) (*oauth.AuthRequest, error) {
	if err := checkApproval(id, a); err != nil {
		return nil, err
	}
	if !storable(id) {
		return nil, oauth.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	now := p.now().UnixNano()
	r, err := scanAuthRequest(p.pool.QueryRow(ctx, `UPDATE auth_requests
		SET approved_agent = $2, approved_model = $3, auth_ns = $4, code_seed = $5
		WHERE id = $1 AND expires_ns > $6 AND approved_agent IS NULL
		RETURNING `+authRequestRead, id, a.AgentID, a.ModelName, ns(a.AuthTime), a.CodeSeed, now))
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, p.fail(err)
	}
	var live bool
	if err := p.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM auth_requests WHERE id = $1 AND expires_ns > $2)", id, now).Scan(&live); err != nil {
		return nil, p.fail(err)
	}
	if live {
		return nil, oauth.ErrNotPending
	}
	return nil, oauth.ErrNotFound
}

// --- authorization codes ---

const codeColumns = `client_id, redirect_uri, scopes, nonce, code_challenge, resources, agent_id, model_name, auth_ns, expires_ns,
	redeemed, access_token_id, access_expires_ns, family, dpop_jkt`

func scanCode(row pgx.Row) (*oauth.CodeGrant, error) {
	var (
		g                   oauth.CodeGrant
		authNS, accessNS    *int64
		expires             int64
		redeemed            bool
		accessToken, family *string
	)
	if err := row.Scan(&g.ClientID, &g.RedirectURI, &g.Scopes, &g.Nonce, &g.CodeChallenge, &g.Resources, &g.AgentID, &g.ModelName,
		&authNS, &expires, &redeemed, &accessToken, &accessNS, &family, &g.DPoPJKT); err != nil {
		return nil, err
	}
	g.AuthTime, g.ExpiresAt = fromNS(authNS), time.Unix(0, expires)
	if redeemed {
		g.Redemption = &oauth.Redemption{AccessTokenID: deref(accessToken), AccessTokenExpires: fromNS(accessNS), Family: deref(family)}
	}
	return &g, nil
}

// CreateCode stores g under hash until g.ExpiresAt, or returns
// oauth.ErrExists while a live code has the hash.
func (p *Postgres) CreateCode(ctx context.Context, hash string, g *oauth.CodeGrant) error {
	if err := checkCode(hash, g); err != nil {
		return err
	}
	if err := checkStorable("authorization code hash", hash); err != nil {
		return err
	}
	redeemed := g.Redemption != nil
	var red oauth.Redemption
	if redeemed {
		red = *g.Redemption
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	tag, err := p.pool.Exec(ctx, `INSERT INTO codes (hash, `+codeColumns+`, resource)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, coalesce(($7::text[])[1], ''))
		ON CONFLICT (hash) DO UPDATE SET client_id = $2, redirect_uri = $3, scopes = $4, nonce = $5, code_challenge = $6,
			resources = $7, resource = coalesce(($7::text[])[1], ''), agent_id = $8, model_name = $9, auth_ns = $10, expires_ns = $11, redeemed = $12,
			access_token_id = $13, access_expires_ns = $14, family = $15, dpop_jkt = $16
		WHERE codes.expires_ns <= $17`,
		hash, g.ClientID, g.RedirectURI, nonNil(g.Scopes), g.Nonce, g.CodeChallenge, nonNil(g.Resources), g.AgentID, g.ModelName,
		ns(g.AuthTime), expiryNS(g.ExpiresAt), redeemed, red.AccessTokenID, ns(red.AccessTokenExpires), red.Family, g.DPoPJKT, p.now().UnixNano())
	if err != nil {
		return p.fail(err)
	}
	if tag.RowsAffected() == 0 {
		return oauth.ErrExists
	}
	return nil
}

// RedeemCode redeems the code once, under the code's row lock; see
// oauth.CodeStore. redeem runs inside the transaction.
func (p *Postgres) RedeemCode(ctx context.Context, hash string, redeem func(*oauth.CodeGrant) (oauth.Redemption, error)) (*oauth.CodeGrant, error) {
	if err := checkRedeem(redeem); err != nil {
		return nil, err
	}
	if !storable(hash) {
		return nil, oauth.ErrNotFound
	}
	var out *oauth.CodeGrant
	var used bool
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		g, err := scanCode(tx.QueryRow(ctx, "SELECT "+codeRead+" FROM codes WHERE hash = $1 AND expires_ns > $2 FOR UPDATE", hash, p.now().UnixNano()))
		if errors.Is(err, pgx.ErrNoRows) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return err
		}
		if g.Redemption != nil {
			out, used = g, true
			return nil
		}
		red, err := redeem(cloneCodeGrant(g))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE codes SET redeemed = true, access_token_id = $2, access_expires_ns = $3, family = $4 WHERE hash = $1",
			hash, red.AccessTokenID, ns(red.AccessTokenExpires), red.Family); err != nil {
			return err
		}
		g.Redemption = &red
		out = g
		return nil
	})
	if err != nil {
		return nil, p.fail(err)
	}
	if used {
		return out, oauth.ErrCodeUsed
	}
	return out, nil
}

// --- refresh tokens ---

const refreshColumns = "family, client_id, agent_id, scopes, resources, model_name, auth_ns, expires_ns, rotated, dpop_jkt, rotated_ns, successor"

func scanRefresh(row pgx.Row) (*oauth.RefreshGrant, error) {
	var (
		g                 oauth.RefreshGrant
		authNS, rotatedNS *int64
		expires           int64
	)
	if err := row.Scan(&g.Family, &g.ClientID, &g.AgentID, &g.Scopes, &g.Resources, &g.ModelName, &authNS, &expires, &g.Rotated, &g.DPoPJKT,
		&rotatedNS, &g.Successor); err != nil {
		return nil, err
	}
	g.AuthTime, g.ExpiresAt, g.RotatedAt = fromNS(authNS), time.Unix(0, expires), fromNS(rotatedNS)
	return &g, nil
}

// putRefresh stores g under hash unless a live token has it (false then);
// an expired one is replaced.
func (p *Postgres) putRefresh(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, hash string, g *oauth.RefreshGrant) (bool, error) {
	tag, err := q.Exec(ctx, `INSERT INTO refresh_tokens (hash, `+refreshColumns+`, resource)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14, coalesce(($6::text[])[1], ''))
		ON CONFLICT (hash) DO UPDATE SET family = $2, client_id = $3, agent_id = $4, scopes = $5, resources = $6,
			resource = coalesce(($6::text[])[1], ''),
			model_name = $7, auth_ns = $8, expires_ns = $9, rotated = $10, dpop_jkt = $11, rotated_ns = $13, successor = $14
		WHERE refresh_tokens.expires_ns <= $12`,
		hash, g.Family, g.ClientID, g.AgentID, nonNil(g.Scopes), nonNil(g.Resources), g.ModelName, ns(g.AuthTime), expiryNS(g.ExpiresAt), g.Rotated, g.DPoPJKT, p.now().UnixNano(),
		ns(g.RotatedAt), g.Successor)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// CreateRefresh stores g under hash until g.ExpiresAt, or returns
// oauth.ErrExists while a live token has the hash.
func (p *Postgres) CreateRefresh(ctx context.Context, hash string, g *oauth.RefreshGrant) error {
	if err := checkRefresh(hash, g); err != nil {
		return err
	}
	if err := checkStorable("refresh token hash", hash); err != nil {
		return err
	}
	if err := checkStorable("refresh token family", g.Family); err != nil {
		return err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	ok, err := p.putRefresh(ctx, p.pool, hash, g)
	if err != nil {
		return p.fail(err)
	}
	if !ok {
		return oauth.ErrExists
	}
	return nil
}

// GetRefresh returns the grant, or oauth.ErrNotFound when it is missing,
// expired or its family was revoked.
func (p *Postgres) GetRefresh(ctx context.Context, hash string) (*oauth.RefreshGrant, error) {
	if !storable(hash) {
		return nil, oauth.ErrNotFound
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	g, err := scanRefresh(p.pool.QueryRow(ctx, "SELECT "+refreshRead+" FROM refresh_tokens WHERE hash = $1 AND expires_ns > $2", hash, p.now().UnixNano()))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, oauth.ErrNotFound
	}
	return g, p.fail(err)
}

// lockFamily takes the transaction lock that orders the rotations and the
// revocation of one family: a revocation that waits for a rotation sees
// the successor it stored and deletes it too.
func lockFamily(ctx context.Context, tx pgx.Tx, family string) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", int32(familyLockClass), family)
	return err
}

// RotateRefresh marks the token under oldHash rotated and stores next
// under newHash in one transaction, under the family's lock and the old
// token's row lock; see oauth.RefreshStore.
func (p *Postgres) RotateRefresh(ctx context.Context, oldHash, newHash string, next *oauth.RefreshGrant) error {
	if err := checkRotate(oldHash, newHash, next); err != nil {
		return err
	}
	if !storable(oldHash) || !storable(next.Family) {
		return oauth.ErrNotFound
	}
	if err := checkStorable("refresh token hash", newHash); err != nil {
		return err
	}
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// The family is the successor's (checked to be the old token's
		// below, under the lock).
		if err := lockFamily(ctx, tx, next.Family); err != nil {
			return err
		}
		old, err := scanRefresh(tx.QueryRow(ctx, "SELECT "+refreshRead+" FROM refresh_tokens WHERE hash = $1 AND expires_ns > $2 FOR UPDATE",
			oldHash, p.now().UnixNano()))
		if errors.Is(err, pgx.ErrNoRows) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return err
		}
		if old.Rotated {
			return oauth.ErrRefreshRotated
		}
		if err := checkSameFamily(old, next); err != nil {
			return err
		}
		ok, err := p.putRefresh(ctx, tx, newHash, next)
		if err != nil {
			return err
		}
		if !ok {
			return oauth.ErrExists
		}
		_, err = tx.Exec(ctx, "UPDATE refresh_tokens SET rotated = true, rotated_ns = $2, successor = $3 WHERE hash = $1",
			oldHash, ns(p.now()), newHash)
		return err
	})
	return p.fail(err)
}

// RetryRefresh replaces the successor of the rotated token under oldHash
// with next under newHash in one transaction, under the family's lock and
// the row locks of the old token and its successor; see
// oauth.RefreshStore.
func (p *Postgres) RetryRefresh(ctx context.Context, oldHash, successor, newHash string, next *oauth.RefreshGrant, grace time.Duration) error {
	if err := checkRetry(oldHash, successor, newHash, next, grace); err != nil {
		return err
	}
	if !storable(oldHash) || !storable(next.Family) {
		return oauth.ErrNotFound
	}
	if !storable(successor) {
		return oauth.ErrStale // no stored token names it as its successor
	}
	if err := checkStorable("refresh token hash", newHash); err != nil {
		return err
	}
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockFamily(ctx, tx, next.Family); err != nil {
			return err
		}
		now := p.now()
		old, err := scanRefresh(tx.QueryRow(ctx, "SELECT "+refreshRead+" FROM refresh_tokens WHERE hash = $1 AND expires_ns > $2 FOR UPDATE",
			oldHash, now.UnixNano()))
		if errors.Is(err, pgx.ErrNoRows) {
			return oauth.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := decideRetry(old, successor, grace, now); err != nil {
			return err
		}
		if err := checkSameFamily(old, next); err != nil {
			return err
		}
		succ, err := scanRefresh(tx.QueryRow(ctx, "SELECT "+refreshRead+" FROM refresh_tokens WHERE hash = $1 AND expires_ns > $2 FOR UPDATE",
			successor, now.UnixNano()))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			succ = nil
		case err != nil:
			return err
		}
		if err := decideSuperseded(old, succ); err != nil {
			return err
		}
		ok, err := p.putRefresh(ctx, tx, newHash, next)
		if err != nil {
			return err
		}
		if !ok {
			return oauth.ErrExists
		}
		if _, err := tx.Exec(ctx, "UPDATE refresh_tokens SET rotated = true, rotated_ns = $2, successor = '' WHERE hash = $1",
			successor, ns(now)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE refresh_tokens SET successor = $2 WHERE hash = $1", oldHash, newHash)
		return err
	})
	return p.fail(err)
}

// RevokeFamily deletes every refresh token of the family, under the
// family's lock; a family with no tokens is not an error.
func (p *Postgres) RevokeFamily(ctx context.Context, family string) error {
	if !storable(family) {
		return nil
	}
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockFamily(ctx, tx, family); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM refresh_tokens WHERE family = $1", family)
		return err
	})
	return p.fail(err)
}

// --- single-use keys ---

// UseOnce records key until until, or returns oauth.ErrExists while key is
// recorded and not expired, in one statement that also replaces an expired
// row: of concurrent callers, on any instance, the first to insert wins and
// the others find its live row; see oauth.ReplayStore.
func (p *Postgres) UseOnce(ctx context.Context, key string, until time.Time) error {
	if err := checkUseOnce(key, until); err != nil {
		return err
	}
	if err := checkStorable("use-once key", key); err != nil {
		return err
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	tag, err := p.pool.Exec(ctx, `INSERT INTO used_once (key, expires_ns) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET expires_ns = $2 WHERE used_once.expires_ns <= $3`,
		key, expiryNS(until), p.now().UnixNano())
	if err != nil {
		return p.fail(err)
	}
	if tag.RowsAffected() == 0 {
		return oauth.ErrExists
	}
	return nil
}

// --- change log ---

// AppendChange stores c with the next sequence number and notifies every
// listening process when the transaction commits.
func (p *Postgres) AppendChange(ctx context.Context, c oauth.Change) (uint64, error) {
	if err := checkChange(c); err != nil {
		return 0, err
	}
	if err := checkStorable("change key", c.Key); err != nil {
		return 0, err
	}
	var seq int64
	err := p.tx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// The row lock of change_seq is held until commit, so numbers are
		// handed out in commit order.
		if err := tx.QueryRow(ctx, "UPDATE change_seq SET seq = seq + 1 RETURNING seq").Scan(&seq); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO changes (seq, kind, key, before_ns, expires_ns, written_ns) VALUES ($1, $2, $3, $4, $5, $6)",
			seq, c.Kind, c.Key, ns(c.Before), expiryNS(c.Expires), ns(c.At)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", changeChannel, strconv.FormatInt(seq, 10))
		return err
	})
	if err != nil {
		return 0, p.fail(err)
	}
	return uint64(seq), nil
}

// ChangesSince returns up to limit unexpired changes (100 when limit <= 0)
// with a sequence number above after, in order.
func (p *Postgres) ChangesSince(ctx context.Context, after uint64, limit int) ([]oauth.Change, error) {
	if after > math.MaxInt64 {
		return nil, nil
	}
	ctx, cancel := p.op(ctx)
	defer cancel()
	rows, err := p.pool.Query(ctx, "SELECT seq, kind, key, before_ns, expires_ns, written_ns FROM changes WHERE seq > $1 AND expires_ns > $2 ORDER BY seq LIMIT $3",
		int64(after), p.now().UnixNano(), listLimit(limit))
	if err != nil {
		return nil, p.fail(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (oauth.Change, error) {
		var (
			c       oauth.Change
			seq     int64
			before  *int64
			expires int64
			written *int64
		)
		err := row.Scan(&seq, &c.Kind, &c.Key, &before, &expires, &written)
		c.Seq, c.Before, c.Expires, c.At = uint64(seq), fromNS(before), time.Unix(0, expires), fromNS(written)
		return c, err
	})
	return out, p.fail(err)
}

// WatchChanges calls notify whenever another process may have appended a
// change: on every notification of the change channel, and after every
// reconnection (notifications sent while the listener was away are lost,
// so the caller reads the log then). It returns when ctx ends.
func (p *Postgres) WatchChanges(ctx context.Context, notify func()) {
	const maxBackoff = 5 * time.Second
	backoff, failing := 100*time.Millisecond, false
	for ctx.Err() == nil {
		listened, err := p.listen(ctx, func() {
			if failing {
				failing = false
				p.log.Info("listening for changes again")
			}
			notify()
		})
		if ctx.Err() != nil {
			return
		}
		if listened {
			backoff = 100 * time.Millisecond
		}
		if !failing {
			failing = true
			p.log.Warn("listening for changes failed; the change log is read every second until the listener is back", zap.Error(p.fail(err)))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listen holds one connection listening on the change channel until it
// fails or ctx ends; listened reports whether it got as far as listening.
func (p *Postgres) listen(ctx context.Context, notify func()) (listened bool, err error) {
	dial, cancel := p.op(ctx)
	conn, err := p.pool.Acquire(dial)
	cancel()
	if err != nil {
		return false, err
	}
	// The session listens: it goes back to no pool, it is closed.
	defer func() {
		c := conn.Hijack()
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{changeChannel}.Sanitize()); err != nil {
		return false, err
	}
	notify() // anything appended while no one listened
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			return true, err
		}
		notify()
	}
}

// Compile-time proof that the change log pushes.
var _ oauth.ChangeWatcher = (*Postgres)(nil)
