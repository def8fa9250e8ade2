-- Auth Agent for Caddy: the first PostgreSQL schema. Ids and hashes are
-- text in the "C" collation, so listings follow byte order as in every
-- other backend. Times are Unix nanoseconds (bigint, NULL for "not set"),
-- so they come back exactly as they went in.

CREATE TABLE agents (
	id          text COLLATE "C" PRIMARY KEY,
	secret_hash text    NOT NULL,
	model_name  text    NOT NULL,
	owner_name  text    NOT NULL,
	owner_email text    NOT NULL,
	permissions text[]  NOT NULL,
	created_ns  bigint,
	updated_ns  bigint,
	disabled    boolean NOT NULL
);

CREATE TABLE clients (
	id            text COLLATE "C" PRIMARY KEY,
	name          text    NOT NULL,
	secret_hash   text    NOT NULL,
	public        boolean NOT NULL,
	redirect_uris text[]  NOT NULL,
	scopes        text[]  NOT NULL,
	grant_types   text[]  NOT NULL,
	source        text    NOT NULL,
	created_ns    bigint
);

-- The signing keys are one versioned set: the one row of key_set holds the
-- version a rotation compares and swaps.
CREATE TABLE key_set (
	id      boolean PRIMARY KEY DEFAULT true CHECK (id),
	version bigint  NOT NULL
);
INSERT INTO key_set (version) VALUES (0);

CREATE TABLE signing_keys (
	kid        text COLLATE "C" PRIMARY KEY,
	algorithm  text  NOT NULL,
	private    bytea NOT NULL,
	created_ns bigint,
	active_ns  bigint,
	retired_ns bigint
);

CREATE TABLE secrets (
	name  text COLLATE "C" PRIMARY KEY,
	value bytea NOT NULL
);

CREATE TABLE auth_requests (
	id             text COLLATE "C" PRIMARY KEY,
	client_id      text   NOT NULL,
	redirect_uri   text   NOT NULL,
	scopes         text[] NOT NULL,
	state          text   NOT NULL,
	nonce          text   NOT NULL,
	code_challenge text   NOT NULL,
	resource       text   NOT NULL,
	browser_hash   text   NOT NULL,
	created_ns     bigint,
	expires_ns     bigint NOT NULL,
	-- The approval, set once (approved_agent IS NOT NULL).
	approved_agent text,
	approved_model text,
	auth_ns        bigint,
	code_seed      text
);
CREATE INDEX auth_requests_expiry ON auth_requests (expires_ns);

CREATE TABLE codes (
	hash           text COLLATE "C" PRIMARY KEY,
	client_id      text   NOT NULL,
	redirect_uri   text   NOT NULL,
	scopes         text[] NOT NULL,
	nonce          text   NOT NULL,
	code_challenge text   NOT NULL,
	resource       text   NOT NULL,
	agent_id       text   NOT NULL,
	model_name     text   NOT NULL,
	auth_ns        bigint,
	expires_ns     bigint NOT NULL,
	-- The redemption, set once (redeemed).
	redeemed           boolean NOT NULL DEFAULT false,
	access_token_id    text,
	access_expires_ns  bigint,
	family             text
);
CREATE INDEX codes_expiry ON codes (expires_ns);

CREATE TABLE refresh_tokens (
	hash       text COLLATE "C" PRIMARY KEY,
	family     text COLLATE "C" NOT NULL,
	client_id  text    NOT NULL,
	agent_id   text    NOT NULL,
	scopes     text[]  NOT NULL,
	resource   text    NOT NULL,
	model_name text    NOT NULL,
	auth_ns    bigint,
	expires_ns bigint  NOT NULL,
	rotated    boolean NOT NULL DEFAULT false
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_agent ON refresh_tokens (agent_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_ns);

-- The change log. Sequence numbers come from the one row of change_seq,
-- whose row lock is held until the appending transaction commits: numbers
-- are handed out in commit order, so a reader that goes on from the last
-- number it saw misses nothing.
CREATE TABLE change_seq (
	id  boolean PRIMARY KEY DEFAULT true CHECK (id),
	seq bigint  NOT NULL
);
INSERT INTO change_seq (seq) VALUES (0);

CREATE TABLE changes (
	seq        bigint PRIMARY KEY,
	kind       text   NOT NULL,
	key        text   NOT NULL,
	before_ns  bigint,
	expires_ns bigint NOT NULL
);
CREATE INDEX changes_expiry ON changes (expires_ns);
