-- MCP 2026-07-28. A client's application_type (native or web) decides the
-- redirect URIs it may register. Rows written before, and those an earlier
-- version writes during a rolling upgrade, hold '': the server infers the
-- type from their redirect URIs, as it did before it stored one.

ALTER TABLE clients ADD COLUMN application_type text NOT NULL DEFAULT '';
