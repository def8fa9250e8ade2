// An agent (or a website's client) that holds a key instead of a secret:
// it registers the public half and proves possession of the private half
// with a short-lived JWT it signs for each request, the client assertion
// (private_key_jwt, RFC 7523 §2.2 and OpenID Connect Core §9). Web Crypto
// alone: the private key can stay non-extractable, so even this process's
// own code cannot read it out (a browser can keep it in IndexedDB).

import { type JWK, base64url, randomString } from "./jose.js";

/** The `client_assertion_type` of `private_key_jwt`. */
export const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/**
 * The algorithms a key signs assertions with: ECDSA P-256 (`ES256`),
 * Ed25519 (`EdDSA`), RSA of 2048 to 4096 bits with PKCS#1 v1.5 (`RS256`) or
 * PSS (`PS256`), each with SHA-256.
 */
export type KeyAlgorithm = "ES256" | "EdDSA" | "RS256" | "PS256";

/** A JWK Set (RFC 7517 §5), as registration and `replaceKeys` take it: public keys only. */
export interface JWKSet {
  keys: JWK[];
}

/** How long an assertion is good for (the issuer takes at most 5 minutes). */
const assertionLifetimeSeconds = 60;

const generateParams: Record<KeyAlgorithm, EcKeyGenParams | RsaHashedKeyGenParams | { name: string }> = {
  ES256: { name: "ECDSA", namedCurve: "P-256" },
  EdDSA: { name: "Ed25519" },
  RS256: { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
  PS256: { name: "RSA-PSS", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
};

const signParams: Record<KeyAlgorithm, AlgorithmIdentifier | EcdsaParams | RsaPssParams> = {
  // Web Crypto's ECDSA signature is r || s, 32 bytes each for P-256: the
  // JWS form (RFC 7518 §3.4), not DER.
  ES256: { name: "ECDSA", hash: "SHA-256" },
  EdDSA: { name: "Ed25519" },
  RS256: { name: "RSASSA-PKCS1-v1_5" },
  PS256: { name: "RSA-PSS", saltLength: 32 },
};

/**
 * Makes a key pair for an agent: ECDSA P-256 (`ES256`) by default, or
 * Ed25519 (`EdDSA`; Node ≥ 20 and current browsers — where Web Crypto lacks
 * it this rejects with a `NotSupportedError`), or RSA 2048 (`RS256`,
 * `PS256`). The private key is not extractable unless `extractable` is
 * true (to keep it, a browser can store the `CryptoKey` itself in
 * IndexedDB); the public key always is.
 */
export async function generateKeyPair(options: { algorithm?: KeyAlgorithm; extractable?: boolean } = {}): Promise<CryptoKeyPair> {
  const alg = options.algorithm ?? "ES256";
  const params = generateParams[alg];
  if (params === undefined) {
    throw new TypeError(`generateKeyPair: unsupported algorithm ${JSON.stringify(alg)} (ES256, EdDSA, RS256 or PS256)`);
  }
  return (await crypto.subtle.generateKey(params, options.extractable ?? false, ["sign", "verify"])) as CryptoKeyPair;
}

/** The JWS algorithm a Web Crypto key signs with, or a TypeError for a key assertions cannot use. */
export function keyAlgorithm(key: CryptoKey): KeyAlgorithm {
  const a = key.algorithm as { name: string; namedCurve?: string; hash?: { name: string }; modulusLength?: number; publicExponent?: Uint8Array };
  switch (a.name) {
    case "ECDSA":
      if (a.namedCurve === "P-256") {
        return "ES256";
      }
      break;
    case "Ed25519":
      return "EdDSA";
    case "RSASSA-PKCS1-v1_5":
    case "RSA-PSS":
      if (a.hash?.name !== "SHA-256") {
        throw new TypeError("an RSA key must be for SHA-256");
      }
      // The issuer takes 2048 to 4096 bits and an exponent up to 65537.
      if (!((a.modulusLength ?? 0) >= 2048 && (a.modulusLength ?? 0) <= 4096) || bigEndian(a.publicExponent) > 65537) {
        throw new TypeError("an RSA key must have 2048 to 4096 bits and a public exponent up to 65537");
      }
      return a.name === "RSA-PSS" ? "PS256" : "RS256";
  }
  throw new TypeError(`a ${a.name}${a.namedCurve ? ` ${a.namedCurve}` : ""} key cannot sign assertions: use ECDSA P-256, Ed25519 or RSA`);
}

function bigEndian(bytes: Uint8Array | undefined): number {
  return (bytes ?? new Uint8Array()).reduce((n, b) => n * 256 + b, 0);
}

/**
 * A key's public JWK, for registration: only the public members (`kty`,
 * `crv`, `x`, `y`, `n`, `e`) with `alg`, `use: "sig"` and `keyId` as `kid`.
 * Takes the public key or the pair (a private key only when it is
 * extractable).
 */
export async function publicJWK(key: CryptoKey | CryptoKeyPair, keyId?: string): Promise<JWK> {
  const k = "publicKey" in key ? key.publicKey : key;
  const alg = keyAlgorithm(k);
  if (!k.extractable) {
    throw new TypeError("publicJWK: pass the public key (or the key pair): this private key is not extractable");
  }
  const full = await crypto.subtle.exportKey("jwk", k);
  const jwk: JWK = { kty: full.kty ?? "" };
  for (const m of ["crv", "x", "y", "n", "e"] as const) {
    if (full[m] !== undefined) {
      jwk[m] = full[m];
    }
  }
  if (keyId !== undefined) {
    jwk.kid = keyId;
  }
  jwk.alg = alg;
  jwk.use = "sig";
  return jwk;
}

/** The JWK Set of one key's public half, for `registerAgent({jwks})` and `replaceKeys`. */
export async function publicJWKS(key: CryptoKey | CryptoKeyPair, keyId?: string): Promise<JWKSet> {
  return { keys: [await publicJWK(key, keyId)] };
}

/** What a client assertion is made of. */
export interface AssertionOptions {
  /** The client id: an agent's id when the agent authenticates as itself. `iss` and `sub`. */
  clientId: string;
  /** The URL of the endpoint the assertion is sent to, or the issuer. `aud`. */
  audience: string;
  /** The private key (ECDSA P-256, Ed25519 or RSA of 2048 to 4096 bits). */
  privateKey: CryptoKey;
  /** The registered key's `kid`; without it the issuer tries each registered key of the algorithm. */
  keyId?: string | undefined;
  /** Seconds it is good for (default 60; the issuer takes at most 300). */
  lifetimeSeconds?: number | undefined;
  /** The time it is made at, ms since the epoch (default now). */
  now?: number | undefined;
}

/**
 * Signs a client assertion (RFC 7523 §2.2): header `alg`, `typ: "JWT"` and
 * `kid`; claims `iss` = `sub` = the client id, `aud`, `iat`, `exp` (a minute
 * later by default) and a random `jti`, so each one works once. The SDK
 * makes one per request; this is for sending one elsewhere (any OAuth
 * library's `private_key_jwt`).
 */
export async function clientAssertion(o: AssertionOptions): Promise<string> {
  const alg = keyAlgorithm(o.privateKey);
  if (o.privateKey.type !== "private") {
    throw new TypeError("clientAssertion: the key must be the private key");
  }
  const iat = Math.floor((o.now ?? Date.now()) / 1000);
  const header: { alg: KeyAlgorithm; typ: string; kid?: string } = { alg, typ: "JWT" };
  if (o.keyId !== undefined) {
    header.kid = o.keyId;
  }
  const claims = { iss: o.clientId, sub: o.clientId, aud: o.audience, iat, exp: iat + (o.lifetimeSeconds ?? assertionLifetimeSeconds), jti: randomString(18) };
  return signJWS(o.privateKey, header, claims);
}

/**
 * Signs a compact JWS of `header` and `claims` (JSON) with a private key
 * whose algorithm `header.alg` names (`keyAlgorithm`). Assertions and DPoP
 * proofs are made with it.
 */
export async function signJWS(privateKey: CryptoKey, header: { alg: KeyAlgorithm } & Record<string, unknown>, claims: Record<string, unknown>): Promise<string> {
  const enc = new TextEncoder();
  const input = `${base64url(enc.encode(JSON.stringify(header)))}.${base64url(enc.encode(JSON.stringify(claims)))}`;
  const signature = await crypto.subtle.sign(signParams[header.alg], privateKey, enc.encode(input));
  return `${input}.${base64url(new Uint8Array(signature))}`;
}
