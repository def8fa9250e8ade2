-- The trusted IdPs added through the admin API (those of the
-- configuration live in it), whose ID-JAGs the token endpoint redeems.
-- Every instance reads this table on a grant whose issuer its
-- configuration does not list, so an IdP added or deleted at one is
-- honoured by all at once. (0008 is taken by another change.)

CREATE TABLE trusted_idps (
	issuer     text COLLATE "C" PRIMARY KEY,
	jwks_uri   text    NOT NULL,
	clients    text[]  NOT NULL,
	scopes     text[]  NOT NULL,
	subject    text    NOT NULL,
	allow_jwt  boolean NOT NULL,
	source     text    NOT NULL,
	created_ns bigint
);
