// JWS verification and PKCE with Web Crypto alone (browsers and Node ≥ 20),
// for the few algorithms the issuer signs with.

import { AuthAgentError, ErrorCodes } from "./errors.js";

export interface JWK {
  kty: string;
  kid?: string;
  use?: string;
  alg?: string;
  crv?: string;
  n?: string;
  e?: string;
  x?: string;
  y?: string;
}

/** The claims of a verified ID token. */
export interface IDTokenClaims {
  iss: string;
  sub: string;
  aud: string | string[];
  exp: number;
  iat: number;
  nonce?: string;
  azp?: string;
  auth_time?: number;
  at_hash?: string;
  name?: string;
  email?: string;
  [claim: string]: unknown;
}

const encoder = new TextEncoder();

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) {
    s += String.fromCharCode(b);
  }
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function unbase64url(s: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) {
    throw new Error("not base64url");
  }
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

/** `n` random bytes, base64url-encoded. */
export function randomString(n = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

/** The PKCE S256 challenge of a verifier (RFC 7636 §4.2). */
export async function s256(verifier: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(verifier))));
}

type Algorithm = { import: RsaHashedImportParams | EcKeyImportParams | { name: string }; verify: AlgorithmIdentifier | RsaPssParams | EcdsaParams; hash: string };

const algorithms: Record<string, Algorithm> = {
  RS256: {
    import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    verify: { name: "RSASSA-PKCS1-v1_5" },
    hash: "SHA-256",
  },
  PS256: {
    import: { name: "RSA-PSS", hash: "SHA-256" },
    verify: { name: "RSA-PSS", saltLength: 32 },
    hash: "SHA-256",
  },
  ES256: {
    import: { name: "ECDSA", namedCurve: "P-256" },
    verify: { name: "ECDSA", hash: "SHA-256" },
    hash: "SHA-256",
  },
  EdDSA: {
    import: { name: "Ed25519" },
    verify: { name: "Ed25519" },
    hash: "SHA-512",
  },
};

/** The algorithms an ID token may be signed with. */
export const supportedAlgorithms = Object.keys(algorithms);

function fail(description: string, cause?: unknown): never {
  throw new AuthAgentError({ error: ErrorCodes.idToken, error_description: description, cause });
}

interface Parsed {
  header: { alg?: unknown; kid?: unknown; typ?: unknown; crit?: unknown };
  claims: IDTokenClaims;
  signingInput: Uint8Array<ArrayBuffer>;
  signature: Uint8Array<ArrayBuffer>;
}

function parse(jwt: string): Parsed {
  const parts = jwt.split(".");
  if (parts.length !== 3) {
    fail("the ID token is not a compact JWS");
  }
  const [h, p, s] = parts as [string, string, string];
  try {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const header = JSON.parse(decoder.decode(unbase64url(h)));
    const claims = JSON.parse(decoder.decode(unbase64url(p)));
    if (typeof header !== "object" || header === null || typeof claims !== "object" || claims === null) {
      throw new Error("not JSON objects");
    }
    return { header, claims, signingInput: encoder.encode(`${h}.${p}`), signature: unbase64url(s) };
  } catch (err) {
    fail("the ID token is not a valid JWT", err);
  }
}

export interface VerifyOptions {
  issuer: string;
  clientId: string;
  nonce?: string | undefined;
  accessToken?: string | undefined;
  /** Finds the key of `kid` (refetching the JWKS when it is unknown). */
  key: (kid: string | undefined, alg: string) => Promise<JWK | undefined>;
  now: number;
  /** Allowed clock difference, seconds. */
  leeway: number;
}

/**
 * Verifies an ID token (OpenID Connect Core §3.1.3.7): signature with the
 * issuer's key, `iss`, `aud` (and `azp` with several audiences), `exp`,
 * `iat`, `nonce`, and `at_hash` when both it and the access token are there.
 */
export async function verifyIDToken(jwt: string, o: VerifyOptions): Promise<IDTokenClaims> {
  const { header, claims, signingInput, signature } = parse(jwt);
  if (header.crit !== undefined) {
    fail("the ID token names critical header parameters this client does not understand");
  }
  const alg = typeof header.alg === "string" ? header.alg : "";
  const spec = algorithms[alg];
  if (!spec) {
    fail(`the ID token is signed with ${JSON.stringify(alg)}, not one of ${supportedAlgorithms.join(", ")}`);
  }
  const jwk = await o.key(typeof header.kid === "string" ? header.kid : undefined, alg);
  if (!jwk) {
    fail("no key of the issuer's JWKS matches the ID token's kid");
  }
  let ok = false;
  try {
    const { kid: _kid, use: _use, alg: _alg, ...material } = jwk;
    const key = await crypto.subtle.importKey("jwk", material as JsonWebKey, spec.import, false, ["verify"]);
    ok = await crypto.subtle.verify(spec.verify, key, signature, signingInput);
  } catch (err) {
    fail("the ID token's key could not be used", err);
  }
  if (!ok) {
    fail("the ID token's signature does not verify");
  }
  if (claims.iss !== o.issuer) {
    fail("the ID token is from another issuer");
  }
  const aud = typeof claims.aud === "string" ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
  if (!aud.includes(o.clientId)) {
    fail("the ID token is for another client");
  }
  if ((aud.length > 1 || claims.azp !== undefined) && claims.azp !== o.clientId) {
    fail("the ID token's azp is another client");
  }
  const now = Math.floor(o.now / 1000);
  if (typeof claims.exp !== "number" || claims.exp + o.leeway <= now) {
    fail("the ID token has expired");
  }
  if (typeof claims.iat !== "number" || claims.iat - o.leeway > now) {
    fail("the ID token was issued in the future");
  }
  if (typeof claims.sub !== "string" || claims.sub === "") {
    fail("the ID token has no subject");
  }
  if (o.nonce !== undefined && claims.nonce !== o.nonce) {
    fail("the ID token's nonce is not the one this sign-in sent");
  }
  if (o.accessToken !== undefined && typeof claims.at_hash === "string") {
    // The left half of the hash of alg; for EdDSA issuers differ (SHA-256,
    // as Auth Agent does, or SHA-512), so either is accepted.
    const hashes = spec.hash === "SHA-512" ? ["SHA-256", "SHA-512"] : [spec.hash];
    let matched = false;
    for (const h of hashes) {
      const digest = new Uint8Array(await crypto.subtle.digest(h, encoder.encode(o.accessToken)));
      matched ||= base64url(digest.slice(0, digest.length / 2)) === claims.at_hash;
    }
    if (!matched) {
      fail("the ID token's at_hash does not match the access token");
    }
  }
  return claims;
}

/** The claims of a JWT, unverified: only for tokens the caller already trusts. */
export function decodeClaims(jwt: string): Record<string, unknown> | undefined {
  try {
    return parse(jwt).claims;
  } catch {
    return undefined;
  }
}
