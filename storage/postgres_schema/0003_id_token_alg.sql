-- A client may register the algorithm of its ID tokens
-- (id_token_signed_response_alg); empty means RS256.

ALTER TABLE clients ADD COLUMN id_token_alg text NOT NULL DEFAULT '';
