-- Clients and agents may authenticate with keys instead of a secret
-- (private_key_jwt, RFC 7523): their public keys as a JWK Set's JSON, or,
-- for a client, the URL they are fetched from. Kept as text, not jsonb, so
-- the document comes back as it was registered. Rows of clients and
-- agents with a secret, and those an earlier version writes, leave them
-- empty.

ALTER TABLE clients ADD COLUMN jwks text NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN jwks_uri text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN jwks text NOT NULL DEFAULT '';

-- Values that may be used once (the jti of a client assertion, of a DPoP
-- proof), each until it expires: UseOnce inserts, and replaces an expired
-- row, in one statement, so of the instances presenting one key at once
-- exactly one succeeds. The sweep deletes expired rows.
CREATE TABLE used_once (
	key        text COLLATE "C" PRIMARY KEY,
	expires_ns bigint NOT NULL
);
CREATE INDEX used_once_expiry ON used_once (expires_ns);
