-- RFC 8707 resource indicators may repeat in an authorization request: a
-- request, its code and its refresh tokens carry the list of resources
-- authorized (empty: the issuer) instead of at most one. The old column
-- stays, still written with the first resource, so that instances of the
-- previous version go on working during a rolling upgrade; a later schema
-- drops it.

ALTER TABLE auth_requests ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
UPDATE auth_requests SET resources = ARRAY[resource] WHERE resource <> '';

ALTER TABLE codes ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
UPDATE codes SET resources = ARRAY[resource] WHERE resource <> '';

ALTER TABLE refresh_tokens ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
UPDATE refresh_tokens SET resources = ARRAY[resource] WHERE resource <> '';
