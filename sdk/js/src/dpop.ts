// DPoP (RFC 9449): tokens bound to a key the client holds. Each request
// that carries such a token, and each token request that asks for one,
// carries a proof: a JWT signed with the key for that one request (method,
// URL, time, a random jti, the token's hash), with the public key in its
// header. A token stolen from a log or a proxy is then useless without the
// private key, which can stay non-extractable in Web Crypto.

import { base64url, type JWK, randomString } from "./jose.js";
import { type KeyAlgorithm, keyAlgorithm, publicJWK, signJWS } from "./keys.js";

/**
 * A key that signs DPoP proofs: the private key and its public half as a
 * JWK (what the proof's header carries and the token is bound to).
 */
export interface DPoPKey {
  /** ECDSA P-256, Ed25519 or RSA of 2048 to 4096 bits (see `generateKeyPair`). */
  privateKey: CryptoKey;
  /** The public key as a JWK; only its public members go into a proof. */
  publicJwk: JWK;
  /** The JWS algorithm; default (and it must be) the one of the private key (`keyAlgorithm`). */
  alg?: KeyAlgorithm | undefined;
}

/**
 * Which key proves possession for DPoP: `true` for the agent's own key pair
 * when the credentials carry both halves (`{agentId, ...pair, keyId}`), else
 * a key pair the client generates once (ECDSA P-256, not extractable); or a
 * key pair (or `DPoPKey`) of your own; `false` for none.
 */
export type DPoPOption = boolean | CryptoKeyPair | DPoPKey;

/** What one proof is for. */
export interface DPoPProofOptions {
  /** The request's HTTP method (`htm`). */
  method: string;
  /** The request's URL; the proof's `htu` is it without query and fragment. */
  url: string | URL;
  /** The access token the request carries, at a resource server (`ath`); none at the token endpoint. */
  accessToken?: string | undefined;
  /** The server's latest `DPoP-Nonce` for that origin, when it sent one. */
  nonce?: string | undefined;
  /** The time it is made at, ms since the epoch (default now). */
  now?: number | undefined;
}

/** The members of each key type that make up its public key (and its RFC 7638 thumbprint). */
const publicMembers: Record<string, readonly ("crv" | "e" | "kty" | "n" | "x" | "y")[]> = {
  EC: ["crv", "kty", "x", "y"],
  OKP: ["crv", "kty", "x"],
  RSA: ["e", "kty", "n"],
};

/** A JWK's public members only, in the lexicographic order RFC 7638 hashes; a TypeError for a private or unknown key. */
function publicMembersOf(jwk: JWK): JWK {
  const names = publicMembers[jwk.kty];
  if (names === undefined) {
    throw new TypeError(`a ${JSON.stringify(jwk.kty)} JWK cannot sign DPoP proofs: use EC, OKP or RSA`);
  }
  const leaked = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"].filter((m) => m in jwk);
  if (leaked.length > 0) {
    throw new TypeError(`the DPoP public JWK holds the private member(s) ${leaked.join(", ")}: pass the public key only`);
  }
  const out: JWK = { kty: jwk.kty };
  for (const m of names) {
    const v = jwk[m];
    if (typeof v !== "string" || v === "") {
      throw new TypeError(`the DPoP public JWK lacks ${m}`);
    }
    out[m] = v;
  }
  return out;
}

/**
 * The JWK SHA-256 thumbprint of a public key (RFC 7638): what a DPoP-bound
 * token's `cnf.jkt` names, and what `dpop_jkt` at the authorization
 * endpoint takes.
 */
export async function jwkThumbprint(jwk: JWK): Promise<string> {
  const members = publicMembersOf(jwk);
  const json = JSON.stringify(members, Object.keys(members).sort());
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(json))));
}

const fromPairs = new WeakMap<CryptoKey, Promise<DPoPKey>>();

/**
 * A `DPoPKey` of a key pair (its public key exported once per pair) or of a
 * `DPoPKey`, checked: a public JWK with public members only, and the
 * algorithm the private key signs with.
 */
export async function dpopKey(key: CryptoKeyPair | DPoPKey): Promise<DPoPKey> {
  if ("publicJwk" in key) {
    const alg = keyAlgorithm(key.privateKey);
    if (key.alg !== undefined && key.alg !== alg) {
      throw new TypeError(`the DPoP key signs ${alg}, not ${key.alg}`);
    }
    if (key.privateKey.type !== "private") {
      throw new TypeError("the DPoP key's privateKey must be the private key");
    }
    return { privateKey: key.privateKey, publicJwk: publicMembersOf(key.publicJwk), alg };
  }
  let made = fromPairs.get(key.publicKey);
  if (made === undefined) {
    made = publicJWK(key.publicKey).then((jwk) => dpopKey({ privateKey: key.privateKey, publicJwk: jwk }));
    made.catch(() => fromPairs.delete(key.publicKey));
    fromPairs.set(key.publicKey, made);
  }
  const k = await made;
  if (k.privateKey !== key.privateKey) {
    // The same public key with another private key: not a pair this SDK made; check it afresh.
    return dpopKey({ privateKey: key.privateKey, publicJwk: k.publicJwk });
  }
  return k;
}

/** `htu`: the URL without query and fragment (RFC 9449 §4.2). */
export function dpopTarget(url: string | URL): string {
  const u = new URL(url);
  u.search = "";
  u.hash = "";
  return u.href;
}

/** The methods fetch sends upper-cased whatever their case (Fetch standard, "normalize a method"); others go as written. */
const normalised = new Set(["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]);

/** `htm`: the method as fetch sends it. */
export function dpopMethod(method: string): string {
  return normalised.has(method.toUpperCase()) ? method.toUpperCase() : method;
}

/**
 * Signs a DPoP proof (RFC 9449 §4.2) for one request: header `typ:
 * "dpop+jwt"`, `alg` and `jwk` (the public key's public members only);
 * claims a random `jti`, `htm`, `htu` (the URL without query and fragment),
 * `iat`, and `ath` (the base64url SHA-256 of the access token) and `nonce`
 * when given. Make a new one for each request: the server takes each once.
 */
export async function dpopProof(key: DPoPKey | CryptoKeyPair, o: DPoPProofOptions): Promise<string> {
  const k = await dpopKey(key);
  const claims: Record<string, unknown> = {
    jti: randomString(18),
    htm: dpopMethod(o.method),
    htu: dpopTarget(o.url),
    iat: Math.floor((o.now ?? Date.now()) / 1000),
  };
  if (o.accessToken !== undefined) {
    claims.ath = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(o.accessToken))));
  }
  if (o.nonce !== undefined) {
    claims.nonce = o.nonce;
  }
  return signJWS(k.privateKey, { typ: "dpop+jwt", alg: k.alg ?? keyAlgorithm(k.privateKey), jwk: k.publicJwk }, claims);
}

/**
 * The servers' latest `DPoP-Nonce`s, by origin (an authorization server
 * and a resource server each send their own). The oldest are dropped past
 * 1,000 origins.
 */
export class DPoPNonces {
  private readonly byOrigin = new Map<string, string>();

  get(url: string | URL): string | undefined {
    return this.byOrigin.get(new URL(url).origin);
  }

  set(url: string | URL, nonce: string): void {
    const origin = new URL(url).origin;
    this.byOrigin.delete(origin);
    this.byOrigin.set(origin, nonce);
    if (this.byOrigin.size > 1000) {
      const oldest = this.byOrigin.keys().next();
      if (!oldest.done) {
        this.byOrigin.delete(oldest.value);
      }
    }
  }
}

/**
 * Sends a request with a new proof (`send` builds the whole request around
 * it, so anything single-use in it — an assertion — is new too), keeps
 * the `DPoP-Nonce` the answer carries, and when the server asks for a
 * nonce (`use_dpop_nonce`: a 400 from an authorization server, a 401 with
 * `WWW-Authenticate` from a resource server) sends it once more with a
 * proof carrying that nonce (unless `retry` is false).
 */
export async function sendWithProof(
  nonces: DPoPNonces,
  key: DPoPKey,
  request: { method: string; url: string; accessToken?: string | undefined; retry?: boolean | undefined },
  send: (proof: string) => Promise<Response>,
): Promise<Response> {
  const { method, url, accessToken } = request;
  let nonce = nonces.get(url);
  for (let attempt = 0; ; attempt++) {
    const resp = await send(await dpopProof(key, { method, url, accessToken, nonce }));
    const next = resp.headers.get("DPoP-Nonce");
    if (next === null || next === "") {
      return resp;
    }
    nonces.set(url, next);
    if (attempt > 0 || request.retry === false || !(await asksForNonce(resp))) {
      return resp;
    }
    await resp.body?.cancel().catch(() => {});
    nonce = next;
  }
}

/** Whether an answer is `use_dpop_nonce` (RFC 9449 §8 and §9). */
async function asksForNonce(resp: Response): Promise<boolean> {
  if (resp.status === 401 && /\berror\s*=\s*"?use_dpop_nonce\b/.test(resp.headers.get("WWW-Authenticate") ?? "")) {
    return true;
  }
  if ((resp.status !== 400 && resp.status !== 401) || Number(resp.headers.get("Content-Length") ?? 0) > 65_536) {
    return false;
  }
  try {
    const body: unknown = await resp.clone().json();
    return typeof body === "object" && body !== null && (body as { error?: unknown }).error === "use_dpop_nonce";
  } catch {
    return false;
  }
}
