-- DPoP (RFC 9449). A client or an agent may be required to prove a key
-- with every token request; an authorization request carries the key
-- thumbprint the client sent (dpop_jkt), its code is bound to it, and the
-- refresh tokens of a public client's family are bound to the key that
-- obtained them. Rows written before, and those an earlier version writes
-- during a rolling upgrade, require nothing and are bound to no key.

ALTER TABLE clients ADD COLUMN require_dpop boolean NOT NULL DEFAULT false;
ALTER TABLE agents ADD COLUMN require_dpop boolean NOT NULL DEFAULT false;
ALTER TABLE auth_requests ADD COLUMN dpop_jkt text NOT NULL DEFAULT '';
ALTER TABLE codes ADD COLUMN dpop_jkt text NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt text NOT NULL DEFAULT '';
