-- MCP 2026-07-28. A client's application_type (native or web) decides the
-- redirect URIs it may register. Rows written before, and those an earlier
-- version writes during a rolling upgrade, hold '': the server infers the
-- type from their redirect URIs, as it did before it stored one.

ALTER TABLE clients ADD COLUMN application_type text NOT NULL DEFAULT '';

-- A refresh token presented again shortly after it was rotated, by a client
-- that lost the answer, may be answered as a retry (refresh_reuse_grace):
-- that needs when it was rotated and the hash of its successor. Tokens
-- rotated before, or by an earlier version during a rolling upgrade, have
-- neither and are never retried: presenting them again is a reuse.
ALTER TABLE refresh_tokens ADD COLUMN rotated_ns bigint;
ALTER TABLE refresh_tokens ADD COLUMN successor text NOT NULL DEFAULT '';
