package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/internal/pgtest"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage/storagetest"
)

// pgSchemas returns a func that makes a new, empty schema on srv (named
// prefix and a number) and returns the DSN whose search_path is it.
func pgSchemas(srv *pgtest.Server, prefix string) func(t *testing.T) string {
	var n atomic.Int64
	return func(t *testing.T) string {
		t.Helper()
		name := fmt.Sprintf("%s%d", prefix, n.Add(1))
		conn, err := pgx.Connect(context.Background(), srv.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "CREATE SCHEMA "+name); err != nil {
			t.Fatal(err)
		}
		return srv.DSN("postgres") + "&search_path=" + name
	}
}

// openPG opens a store on dsn, closed when t ends.
func openPG(t *testing.T, dsn string, now func() time.Time) *Postgres {
	t.Helper()
	p, err := OpenPostgres(PostgresOptions{DSN: dsn, Now: now, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestPostgres runs everything against one real PostgreSQL server; each
// store lives in a schema of its own (the DSN's search_path), so every
// test starts empty.
func TestPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	newSchema, open := pgSchemas(srv, "t"), openPG

	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T, now func() time.Time) storagetest.Store {
			return open(t, newSchema(t), now)
		})
	})

	t.Run("Shared", func(t *testing.T) {
		if !open(t, newSchema(t), nil).Shared() {
			t.Fatal("Postgres.Shared() = false")
		}
	})

	t.Run("InstancesStartingAtOnceMigrateOnce", func(t *testing.T) {
		dsn := newSchema(t)
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := OpenPostgres(PostgresOptions{DSN: dsn, MaxConns: 2})
				if err == nil {
					p.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("instance %d: %v", i, err)
			}
		}
		p := open(t, dsn, nil)
		var versions int
		if err := p.pool.QueryRow(context.Background(), "SELECT count(*) FROM auth_agent_schema").Scan(&versions); err != nil {
			t.Fatal(err)
		}
		files, _ := postgresSchema.ReadDir("postgres_schema")
		if versions != len(files) {
			t.Fatalf("schema versions recorded: %d, want %d", versions, len(files))
		}
	})

	t.Run("MigratesRecordsOfTheFirstSchema", func(t *testing.T) {
		// A database at schema 1 holds a refresh token with one resource;
		// the migration to lists keeps it.
		dsn := newSchema(t)
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		first, _ := postgresSchema.ReadFile("postgres_schema/0001_initial.sql")
		for _, stmt := range []string{
			string(first),
			"CREATE TABLE auth_agent_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
			"INSERT INTO auth_agent_schema (version) VALUES (1)",
			`INSERT INTO refresh_tokens (hash, family, client_id, agent_id, scopes, resource, model_name, expires_ns)
				VALUES ('h1', 'fam', 'app', 'agent-1', '{data:read}', 'https://api.example.com/', 'm', 9000000000000000000),
				       ('h2', 'fam', 'app', 'agent-1', '{data:read}', '', 'm', 9000000000000000000)`,
		} {
			if _, err := conn.Exec(context.Background(), stmt); err != nil {
				t.Fatal(err)
			}
		}
		conn.Close(context.Background())
		p := open(t, dsn, nil)
		// During a rolling upgrade an instance of the previous version
		// writes only the old column, and reads only it.
		if _, err := p.pool.Exec(context.Background(), `INSERT INTO refresh_tokens (hash, family, client_id, agent_id, scopes, resource, model_name, expires_ns)
			VALUES ('h3', 'fam', 'app', 'agent-1', '{data:read}', 'https://old.example.com/', 'm', 9000000000000000000)`); err != nil {
			t.Fatal(err)
		}
		if err := p.CreateRefresh(context.Background(), "h4", &oauth.RefreshGrant{Family: "fam", ClientID: "app", AgentID: "agent-1",
			Scopes: []string{"data:read"}, Resources: []string{"https://a.example.com/", "https://b.example.com/"}, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var old string
		if err := p.pool.QueryRow(context.Background(), "SELECT resource FROM refresh_tokens WHERE hash = 'h4'").Scan(&old); err != nil || old != "https://a.example.com/" {
			t.Fatalf("the old column of a new row: %q %v", old, err)
		}
		for hash, want := range map[string][]string{"h1": {"https://api.example.com/"}, "h2": nil, "h3": {"https://old.example.com/"},
			"h4": {"https://a.example.com/", "https://b.example.com/"}} {
			g, err := p.GetRefresh(context.Background(), hash)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g.Resources, want) {
				t.Errorf("%s: resources %q, want %q", hash, g.Resources, want)
			}
		}
	})

	// schemaAt returns the DSN of a new schema migrated by hand to version
	// n, as a build that knows no later file leaves it.
	schemaAt := func(t *testing.T, n int) string {
		t.Helper()
		ctx := context.Background()
		dsn := newSchema(t)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		files, err := postgresSchema.ReadDir("postgres_schema")
		if err != nil || len(files) < n {
			t.Fatalf("schema files: %d, %v", len(files), err)
		}
		stmts := []string{"CREATE TABLE auth_agent_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"}
		for v, f := range files[:n] {
			sql, err := postgresSchema.ReadFile("postgres_schema/" + f.Name())
			if err != nil {
				t.Fatal(err)
			}
			stmts = append(stmts, string(sql), fmt.Sprintf("INSERT INTO auth_agent_schema (version) VALUES (%d)", v+1))
		}
		for _, stmt := range stmts {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		return dsn
	}

	t.Run("MigratesAFileNumberedBelowTheLatestApplied", func(t *testing.T) {
		// Schema files are numbered on branches: a database that has the
		// latest file but not one merged later with a lower number still
		// gets that one.
		ctx := context.Background()
		dsn := schemaAt(t, 6)
		files, _ := postgresSchema.ReadDir("postgres_schema")
		last := files[len(files)-1].Name()
		if !strings.HasPrefix(last, "0009_") {
			t.Skipf("the latest schema file is %s; this test skips 0007 below 0009", last)
		}
		sql, _ := postgresSchema.ReadFile("postgres_schema/" + last)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		must(t, func() error { _, err := conn.Exec(ctx, string(sql)); return err }())
		must(t, func() error {
			_, err := conn.Exec(ctx, "INSERT INTO auth_agent_schema (version) VALUES (9)")
			return err
		}())
		conn.Close(ctx)
		p := open(t, dsn, nil)
		var dpop bool
		if err := p.pool.QueryRow(ctx, "SELECT count(*) = 0 FROM auth_agent_schema WHERE version = 7").Scan(&dpop); err != nil || dpop {
			t.Fatalf("0007 not applied below 0009: %v", err)
		}
		if err := p.CreateClient(ctx, &oauth.Client{ID: "c", RequireDPoP: true}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("MigratesClientsAndAgentsBeforeKeys", func(t *testing.T) {
		// A database at schema 5 holds an agent and a client; the migration
		// to keys gives them none, and an instance of the previous version
		// (a rolling upgrade) still writes rows the new one reads.
		ctx := context.Background()
		dsn := schemaAt(t, 5)
		const oldAgent = `INSERT INTO agents (id, secret_hash, model_name, owner_name, owner_email, permissions, created_ns, updated_ns, disabled)
			VALUES ($1, 'hash', 'm', 'Ada', 'ada@example.com', '{data:read}', 1, 2, false)`
		const oldClient = `INSERT INTO clients (id, name, secret_hash, public, redirect_uris, scopes, grant_types, source, created_ns, id_token_alg)
			VALUES ($1, 'App', 'abc', false, '{https://app/cb}', '{openid}', '{authorization_code}', 'admin', 1, 'ES256')`
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		must(t, func() error { _, err := conn.Exec(ctx, oldAgent, "before"); return err }())
		must(t, func() error { _, err := conn.Exec(ctx, oldClient, "before"); return err }())
		conn.Close(ctx)

		p := open(t, dsn, nil)
		must(t, func() error { _, err := p.pool.Exec(ctx, oldAgent, "during"); return err }())
		must(t, func() error { _, err := p.pool.Exec(ctx, oldClient, "during"); return err }())
		for _, id := range []string{"before", "during"} {
			a, err := p.GetAgent(ctx, id)
			if err != nil || a.SecretHash != "hash" || a.OwnerEmail != "ada@example.com" || a.JWKS != "" {
				t.Errorf("agent %s: %+v, %v", id, a, err)
			}
			c, err := p.GetClient(ctx, id)
			if err != nil || c.SecretHash != "abc" || c.IDTokenAlg != "ES256" || c.JWKS != "" || c.JWKSURI != "" {
				t.Errorf("client %s: %+v, %v", id, c, err)
			}
		}
		must(t, p.UseOnce(ctx, "jti", time.Now().Add(time.Hour)))
	})

	t.Run("MigratesRecordsBeforeDPoP", func(t *testing.T) {
		// A database at schema 6 holds one row of each table DPoP adds a
		// column to; the migration leaves them requiring no proof and bound
		// to no key. An instance of the previous version (a rolling
		// upgrade) still writes rows the new one reads the same way, and
		// its updates keep a policy the new one set.
		ctx := context.Background()
		dsn := schemaAt(t, 6)
		old := []string{
			`INSERT INTO agents (id, secret_hash, model_name, owner_name, owner_email, permissions, created_ns, updated_ns, disabled, jwks)
				VALUES ($1, 'hash', 'm', 'Ada', 'ada@example.com', '{data:read}', 1, 2, false, '')`,
			`INSERT INTO clients (id, name, secret_hash, public, redirect_uris, scopes, grant_types, source, created_ns, id_token_alg, jwks, jwks_uri)
				VALUES ($1, 'App', '', true, '{https://app/cb}', '{openid}', '{authorization_code}', 'dynamic', 1, '', '', '')`,
			`INSERT INTO auth_requests (id, client_id, redirect_uri, scopes, state, nonce, code_challenge, resources, resource, browser_hash, created_ns, expires_ns)
				VALUES ($1, 'app', 'https://app/cb', '{openid}', 's', 'n', 'c', '{}', '', 'b', 1, 9000000000000000000)`,
			`INSERT INTO codes (hash, client_id, redirect_uri, scopes, nonce, code_challenge, resources, resource, agent_id, model_name, auth_ns, expires_ns, redeemed)
				VALUES ($1, 'app', 'https://app/cb', '{openid}', 'n', 'c', '{}', '', 'agent-1', 'm', 1, 9000000000000000000, false)`,
			`INSERT INTO refresh_tokens (hash, family, client_id, agent_id, scopes, resources, resource, model_name, auth_ns, expires_ns, rotated)
				VALUES ($1, 'fam-' || $1, 'app', 'agent-1', '{openid}', '{}', '', 'm', 1, 9000000000000000000, false)`,
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range old {
			must(t, func() error { _, err := conn.Exec(ctx, stmt, "before"); return err }())
		}
		conn.Close(ctx)

		p := open(t, dsn, nil)
		for _, stmt := range old {
			must(t, func() error { _, err := p.pool.Exec(ctx, stmt, "during"); return err }())
		}
		for _, id := range []string{"before", "during"} {
			a, err := p.GetAgent(ctx, id)
			if err != nil || a.OwnerEmail != "ada@example.com" || a.RequireDPoP {
				t.Errorf("agent %s: %+v, %v", id, a, err)
			}
			c, err := p.GetClient(ctx, id)
			if err != nil || !c.Public || c.RequireDPoP {
				t.Errorf("client %s: %+v, %v", id, c, err)
			}
			r, err := p.ApproveAuthRequest(ctx, id, oauth.Approval{AgentID: "agent-1", CodeSeed: "seed"})
			if err != nil || r.State != "s" || r.DPoPJKT != "" {
				t.Errorf("authorization request %s: %+v, %v", id, r, err)
			}
			g, err := p.RedeemCode(ctx, id, func(*oauth.CodeGrant) (oauth.Redemption, error) { return oauth.Redemption{AccessTokenID: "at"}, nil })
			if err != nil || g.AgentID != "agent-1" || g.DPoPJKT != "" {
				t.Errorf("code %s: %+v, %v", id, g, err)
			}
			rt, err := p.GetRefresh(ctx, id)
			if err != nil || rt.Family != "fam-"+id || rt.DPoPJKT != "" {
				t.Errorf("refresh token %s: %+v, %v", id, rt, err)
			}
		}

		// The previous version's updates name only the columns it knows.
		_, err = p.UpdateAgent(ctx, "during", func(a *agents.Agent) error { a.RequireDPoP = true; return nil })
		must(t, err)
		_, err = p.UpdateClient(ctx, "during", func(c *oauth.Client) error { c.RequireDPoP = true; return nil })
		must(t, err)
		must(t, func() error {
			_, err := p.pool.Exec(ctx, `UPDATE agents SET secret_hash = $2, model_name = $3, owner_name = $4, owner_email = $5,
				permissions = $6, created_ns = $7, updated_ns = $8, disabled = $9, jwks = $10 WHERE id = $1`,
				"during", "hash", "m2", "Ada", "ada@example.com", []string{"data:read"}, 1, 3, false, "")
			return err
		}())
		must(t, func() error {
			_, err := p.pool.Exec(ctx, `UPDATE clients SET name = $2, secret_hash = $3, public = $4, redirect_uris = $5,
				scopes = $6, grant_types = $7, source = $8, created_ns = $9, id_token_alg = $10, jwks = $11,
				jwks_uri = $12 WHERE id = $1`,
				"during", "App 2", "", true, []string{"https://app/cb"}, []string{"openid"}, []string{"authorization_code"}, "dynamic", 1, "", "", "")
			return err
		}())
		if a, err := p.GetAgent(ctx, "during"); err != nil || a.ModelName != "m2" || !a.RequireDPoP {
			t.Errorf("agent updated by the previous version: %+v, %v", a, err)
		}
		if c, err := p.GetClient(ctx, "during"); err != nil || c.Name != "App 2" || !c.RequireDPoP {
			t.Errorf("client updated by the previous version: %+v, %v", c, err)
		}
	})

	t.Run("MigratesRecordsBeforeMCPRevision", func(t *testing.T) {
		// A database at schema 7 holds a client and a rotated refresh
		// token; the migration leaves the client without a declared
		// application_type and the token with no recorded rotation (never
		// retried). An instance of the previous version (a rolling upgrade)
		// still writes rows the new one reads the same way, and its updates
		// keep a type the new one set.
		ctx := context.Background()
		dsn := schemaAt(t, 7)
		const oldClient = `INSERT INTO clients (id, name, secret_hash, public, redirect_uris, scopes, grant_types, source, created_ns, id_token_alg, jwks, jwks_uri, require_dpop)
			VALUES ($1, 'App', '', true, '{com.example.app:/cb}', '{openid}', '{authorization_code}', 'dynamic', 1, '', '', '', false)`
		const oldRefresh = `INSERT INTO refresh_tokens (hash, family, client_id, agent_id, scopes, resources, resource, model_name, auth_ns, expires_ns, rotated, dpop_jkt)
			VALUES ($1, 'fam-' || $1, 'app', 'agent-1', '{openid}', '{}', '', 'm', 1, 9000000000000000000, true, '')`
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		must(t, func() error { _, err := conn.Exec(ctx, oldClient, "before"); return err }())
		must(t, func() error { _, err := conn.Exec(ctx, oldRefresh, "before"); return err }())
		conn.Close(ctx)

		p := open(t, dsn, nil)
		must(t, func() error { _, err := p.pool.Exec(ctx, oldClient, "during"); return err }())
		must(t, func() error { _, err := p.pool.Exec(ctx, oldRefresh, "during"); return err }())
		for _, id := range []string{"before", "during"} {
			c, err := p.GetClient(ctx, id)
			if err != nil || !c.Public || c.ApplicationType != "" || c.AppType() != oauth.AppNative {
				t.Errorf("client %s: %+v, %v", id, c, err)
			}
			g, err := p.GetRefresh(ctx, id)
			if err != nil || !g.Rotated || !g.RotatedAt.IsZero() || g.Successor != "" {
				t.Errorf("refresh token %s: %+v, %v", id, g, err)
			}
			next := *g
			next.Rotated = false
			if err := p.RetryRefresh(ctx, id, "anything", id+"-retry", &next, time.Hour); !errors.Is(err, oauth.ErrRefreshRotated) {
				t.Errorf("retry of refresh token %s rotated before the migration: %v, want ErrRefreshRotated", id, err)
			}
		}
		_, err = p.UpdateClient(ctx, "during", func(c *oauth.Client) error { c.ApplicationType = oauth.AppNative; return nil })
		must(t, err)
		must(t, func() error {
			_, err := p.pool.Exec(ctx, `UPDATE clients SET name = $2, secret_hash = $3, public = $4, redirect_uris = $5,
				scopes = $6, grant_types = $7, source = $8, created_ns = $9, id_token_alg = $10, jwks = $11,
				jwks_uri = $12, require_dpop = $13 WHERE id = $1`,
				"during", "App 2", "", true, []string{"com.example.app:/cb"}, []string{"openid"}, []string{"authorization_code"}, "dynamic", 1, "", "", "", false)
			return err
		}())
		if c, err := p.GetClient(ctx, "during"); err != nil || c.Name != "App 2" || c.ApplicationType != oauth.AppNative {
			t.Errorf("client updated by the previous version: %+v, %v", c, err)
		}
	})

	t.Run("RefusesNewerSchema", func(t *testing.T) {
		dsn := newSchema(t)
		p := open(t, dsn, nil)
		if _, err := p.pool.Exec(context.Background(), "INSERT INTO auth_agent_schema (version) VALUES (9999)"); err != nil {
			t.Fatal(err)
		}
		_, err := OpenPostgres(PostgresOptions{DSN: dsn})
		if err == nil || !strings.Contains(err.Error(), "newer than this build") {
			t.Fatalf("opening a newer schema: %v", err)
		}
	})

	t.Run("SurvivesReopen", func(t *testing.T) {
		dsn := newSchema(t)
		ctx := context.Background()
		p := open(t, dsn, nil)
		if err := p.CreateAgent(ctx, &agents.Agent{ID: "kept", SecretHash: "h"}); err != nil {
			t.Fatal(err)
		}
		seq, err := p.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "j", Expires: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		q := open(t, dsn, nil)
		if _, err := q.GetAgent(ctx, "kept"); err != nil {
			t.Fatalf("agent after reopen: %v", err)
		}
		next, err := q.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "k", Expires: time.Now().Add(time.Hour)})
		if err != nil || next <= seq {
			t.Fatalf("sequence after reopen: %d (%v), before %d", next, err, seq)
		}
	})

	t.Run("UnstorableText", func(t *testing.T) {
		ctx := context.Background()
		p := open(t, newSchema(t), nil)
		if _, err := p.GetAgent(ctx, "a\x00b"); !errors.Is(err, agents.ErrNotFound) {
			t.Errorf("GetAgent with NUL: %v", err)
		}
		if _, err := p.GetClient(ctx, "\xff"); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("GetClient with invalid UTF-8: %v", err)
		}
		if err := p.CreateAgent(ctx, &agents.Agent{ID: "a\x00b"}); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("CreateAgent with NUL id: %v", err)
		}
		err := p.CreateClient(ctx, &oauth.Client{ID: "c", Name: "x\x00y"})
		if !errors.Is(err, ErrInvalidInput) || !errors.Is(err, oauth.ErrUnstorable) {
			t.Errorf("CreateClient with NUL name: %v", err)
		}
		if e := oauth.AsError(err); e.Status != 400 {
			t.Errorf("a NUL in a value answers %d, want 400", e.Status)
		}
		if _, err := p.GetClient(ctx, "c"); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("the refused client was stored: %v", err)
		}
		if list, err := p.ListAgents(ctx, "a\x00", 10); err != nil || len(list) != 0 {
			t.Errorf("ListAgents after NUL: %v %v", list, err)
		}
		if err := p.UseOnce(ctx, "jti\x00", time.Now().Add(time.Hour)); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("UseOnce with NUL: %v", err)
		}
		if err := p.CreateAgent(ctx, &agents.Agent{ID: "keys", JWKS: "{\x00}"}); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("CreateAgent with NUL in its keys: %v", err)
		}
	})

	t.Run("NotifiesAppends", func(t *testing.T) {
		dsn := newSchema(t)
		writer, reader := open(t, dsn, nil), open(t, dsn, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		news := make(chan struct{}, 16)
		go reader.WatchChanges(ctx, func() {
			select {
			case news <- struct{}{}:
			default:
			}
		})
		// The first call says the listener is up.
		select {
		case <-news:
		case <-time.After(10 * time.Second):
			t.Fatal("the listener did not start")
		}
		if _, err := writer.AppendChange(context.Background(), oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "j", Expires: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-news:
		case <-time.After(10 * time.Second):
			t.Fatal("no notification of an append")
		}
	})

	t.Run("DeleteExpired", func(t *testing.T) {
		ctx := context.Background()
		clock := storagetest.NewClock()
		p := open(t, newSchema(t), clock.Now)
		short := clock.Now().Add(time.Second)
		must(t, p.CreateAuthRequest(ctx, &oauth.AuthRequest{ID: "r", ExpiresAt: short}))
		must(t, p.CreateCode(ctx, "c", &oauth.CodeGrant{ExpiresAt: short}))
		must(t, p.CreateRefresh(ctx, "h", &oauth.RefreshGrant{Family: "f", ExpiresAt: short}))
		must(t, p.CreateRefresh(ctx, "kept", &oauth.RefreshGrant{Family: "f", ExpiresAt: short.Add(time.Hour)}))
		if _, err := p.AppendChange(ctx, oauth.Change{Kind: oauth.ChangeTokenRevoked, Key: "j", Expires: short}); err != nil {
			t.Fatal(err)
		}
		must(t, p.UseOnce(ctx, "jti", short))
		must(t, p.UseOnce(ctx, "kept", short.Add(time.Hour)))
		clock.Advance(2 * time.Second)
		must(t, p.DeleteExpired(ctx))
		var rows int
		err := p.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM auth_requests) + (SELECT count(*) FROM codes)
			+ (SELECT count(*) FROM refresh_tokens) + (SELECT count(*) FROM changes) + (SELECT count(*) FROM used_once)`).Scan(&rows)
		if err != nil || rows != 2 {
			t.Fatalf("rows left after the sweep: %d (%v), want 2", rows, err)
		}
	})

	t.Run("PasswordNeverShown", func(t *testing.T) {
		const password = "s3cret-Pa55word"
		for _, dsn := range []string{
			fmt.Sprintf("postgres://postgres:%s@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", password),
			fmt.Sprintf("host=127.0.0.1 port=1 user=postgres password=%s dbname=db sslmode=disable connect_timeout=2", password),
			fmt.Sprintf("postgres://postgres:%s@127.0.0.1:1/db?sslmode=nonsense", password),
			fmt.Sprintf("postgres://postgres:%s@[::1/db", password),
		} {
			_, err := OpenPostgres(PostgresOptions{DSN: dsn})
			if err == nil {
				t.Fatalf("%s: opened", dsn)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("the error shows the password: %v", err)
			}
		}
		_, err := OpenPostgres(PostgresOptions{DSN: fmt.Sprintf("postgres://postgres:%s@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", password)})
		if !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("the error does not name the server: %v", err)
		}
	})

	// Last: it stops the server.
	t.Run("ServerDownAndBack", func(t *testing.T) {
		ctx := context.Background()
		core, logs := observer.New(zap.WarnLevel)
		p, err := OpenPostgres(PostgresOptions{DSN: newSchema(t), OpTimeout: 2 * time.Second, Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		must(t, p.CreateAgent(ctx, &agents.Agent{ID: "before", SecretHash: "h"}))
		srv.Stop()
		start := time.Now()
		_, err = p.GetAgent(ctx, "before")
		if !errors.Is(err, oauth.ErrUnavailable) {
			t.Fatalf("GetAgent with the server down: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the failing call took %v", d)
		}
		if err := p.CreateAgent(ctx, &agents.Agent{ID: "during", SecretHash: "h"}); !errors.Is(err, oauth.ErrUnavailable) {
			t.Fatalf("CreateAgent with the server down: %v", err)
		}
		if e := oauth.AsError(err); e.Status != 503 {
			t.Fatalf("the error answers %d, want 503", e.Status)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, err := p.GetAgent(ctx, "before")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still failing after the server came back: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		must(t, p.CreateAgent(ctx, &agents.Agent{ID: "after", SecretHash: "h"}))
		for _, e := range logs.All() {
			if strings.Contains(fmt.Sprint(e.ContextMap()), "password") {
				t.Errorf("a log line mentions a password: %v", e)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
