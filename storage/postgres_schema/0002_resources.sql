-- RFC 8707 resource indicators may repeat in an authorization request: a
-- request, its code and its refresh tokens carry the list of resources
-- authorized (empty: the issuer) instead of at most one.

ALTER TABLE auth_requests ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
UPDATE auth_requests SET resources = ARRAY[resource] WHERE resource <> '';
ALTER TABLE auth_requests DROP COLUMN resource;

ALTER TABLE codes ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
UPDATE codes SET resources = ARRAY[resource] WHERE resource <> '';
ALTER TABLE codes DROP COLUMN resource;

ALTER TABLE refresh_tokens ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
UPDATE refresh_tokens SET resources = ARRAY[resource] WHERE resource <> '';
ALTER TABLE refresh_tokens DROP COLUMN resource;
