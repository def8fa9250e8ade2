// Tests that need no server: PKCE, ID-token checks with keys made here,
// tokens that do not print, and errors read from answers a fake fetch gives.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { inspect } from "node:util";

import { AuthAgentClient, AuthAgentError, ErrorCodes, Tokens } from "../dist/index.js";
import { base64url, s256, verifyIDToken } from "../dist/jose.js";

const enc = new TextEncoder();

test("PKCE S256 matches RFC 7636 appendix B", async () => {
  assert.equal(await s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
});

const algs = {
  RS256: { gen: { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, sign: { name: "RSASSA-PKCS1-v1_5" } },
  ES256: { gen: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } },
  EdDSA: { gen: { name: "Ed25519" }, sign: { name: "Ed25519" } },
};

async function signer(alg) {
  const pair = await crypto.subtle.generateKey(algs[alg].gen, true, ["sign", "verify"]);
  const jwk = { ...(await crypto.subtle.exportKey("jwk", pair.publicKey)), kid: `k-${alg}`, use: "sig", alg };
  const sign = async (claims, header = {}) => {
    const h = base64url(enc.encode(JSON.stringify({ alg, kid: jwk.kid, typ: "JWT", ...header })));
    const p = base64url(enc.encode(JSON.stringify(claims)));
    const sig = new Uint8Array(await crypto.subtle.sign(algs[alg].sign, pair.privateKey, enc.encode(`${h}.${p}`)));
    return `${h}.${p}.${base64url(sig)}`;
  };
  return { jwk, sign };
}

describe("verifyIDToken", () => {
  const now = Date.now();
  const claims = { iss: "https://auth.example", sub: "agent-1", aud: "site", exp: Math.floor(now / 1000) + 300, iat: Math.floor(now / 1000), nonce: "n-1" };
  const opts = (jwk, o = {}) => ({ issuer: "https://auth.example", clientId: "site", nonce: "n-1", key: async (kid) => (kid === jwk.kid ? jwk : undefined), now, leeway: 60, ...o });

  for (const alg of Object.keys(algs)) {
    test(`accepts a good ${alg} token and refuses every bad one`, async () => {
      const { jwk, sign } = await signer(alg);
      assert.equal((await verifyIDToken(await sign(claims), opts(jwk))).sub, "agent-1");
      const bad = {
        "another issuer": [{ ...claims, iss: "https://evil.example" }],
        "another audience": [{ ...claims, aud: "other" }],
        "several audiences without azp": [{ ...claims, aud: ["site", "other"] }],
        "azp of another client": [{ ...claims, azp: "other" }],
        expired: [{ ...claims, exp: Math.floor(now / 1000) - 61 }],
        "issued in the future": [{ ...claims, iat: Math.floor(now / 1000) + 120 }],
        "another nonce": [{ ...claims, nonce: "n-2" }],
        "no subject": [{ ...claims, sub: "" }],
        "an unknown kid": [claims, { kid: "nope" }],
        "alg none": [claims, { alg: "none" }],
        "HS256": [claims, { alg: "HS256" }],
      };
      for (const [name, [c, header]] of Object.entries(bad)) {
        await assert.rejects(verifyIDToken(await sign(c, header), opts(jwk)), (e) => e instanceof AuthAgentError && e.error === ErrorCodes.idToken, name);
      }
      assert.equal((await verifyIDToken(await sign({ ...claims, aud: ["site", "other"], azp: "site" }), opts(jwk))).sub, "agent-1");
      const good = await sign(claims);
      const flipped = good.slice(0, -3) + (good.at(-3) === "A" ? "B" : "A") + good.slice(-2);
      await assert.rejects(verifyIDToken(flipped, opts(jwk)), (e) => e.error === ErrorCodes.idToken, "a changed signature");
      for (const junk of ["", "a.b", "a.b.c", "!!.!!.!!", `${good}.x`]) {
        await assert.rejects(verifyIDToken(junk, opts(jwk)), (e) => e.error === ErrorCodes.idToken, JSON.stringify(junk));
      }
    });
  }

  test("refuses critical header parameters", async () => {
    const { jwk, sign } = await signer("ES256");
    await assert.rejects(verifyIDToken(await sign(claims, { crit: ["exp"] }), opts(jwk)), (e) => e.error === ErrorCodes.idToken);
  });

  test("checks an EdDSA token's at_hash with SHA-256 (as Auth Agent) or SHA-512", async () => {
    const { jwk, sign } = await signer("EdDSA");
    for (const [hash, size] of [["SHA-256", 16], ["SHA-512", 32]]) {
      const digest = new Uint8Array(await crypto.subtle.digest(hash, enc.encode("the-access-token")));
      const token = await sign({ ...claims, at_hash: base64url(digest.slice(0, size)) });
      assert.equal((await verifyIDToken(token, opts(jwk, { accessToken: "the-access-token" }))).sub, "agent-1");
      await assert.rejects(verifyIDToken(token, opts(jwk, { accessToken: "another" })), (e) => e.error === ErrorCodes.idToken);
    }
  });

  test("checks at_hash against the access token", async () => {
    const { jwk, sign } = await signer("ES256");
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode("the-access-token")));
    const token = await sign({ ...claims, at_hash: base64url(digest.slice(0, 16)) });
    assert.equal((await verifyIDToken(token, opts(jwk, { accessToken: "the-access-token" }))).sub, "agent-1");
    await assert.rejects(verifyIDToken(token, opts(jwk, { accessToken: "another" })), (e) => e.error === ErrorCodes.idToken);
  });
});

test("tokens never print their secrets, and survive JSON", () => {
  const t = Tokens.fromResponse({ access_token: "secret-at", token_type: "Bearer", expires_in: 3600, scope: "profile data:read", refresh_token: "secret-rt", id_token: "secret-id" }, 1_000_000);
  assert.equal(t.expiresAt, 1_000_000 + 3_600_000);
  assert.ok(t.valid(0, 1_000_000) && !t.valid(3_600_000, 1_000_000));
  for (const shown of [inspect(t), String(t), inspect({ nested: [t] })]) {
    assert.ok(!/secret-/.test(shown), shown);
  }
  const back = Tokens.fromJSON(JSON.parse(JSON.stringify(t)));
  assert.deepEqual({ ...back }, { ...t });
  assert.equal(Tokens.fromJSON({ accessToken: 1 }), undefined);
  assert.equal(Tokens.fromJSON(null), undefined);
});

describe("errors read from answers", () => {
  const answer = (status, body, headers = {}) => async () =>
    new Response(typeof body === "string" ? body : JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

  test("the error shape, status and rate-limit headers", async () => {
    const client = new AuthAgentClient({
      issuer: "https://auth.example",
      fetch: answer(429, { error: "rate_limit_exceeded", error_description: "slow down" }, { "Retry-After": "42", "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1900000000" }),
    });
    await assert.rejects(client.authenticate({ agentId: "a", agentSecret: "s" }), (e) => {
      assert.ok(e instanceof AuthAgentError && e instanceof Error);
      assert.equal(e.name, "AuthAgentError");
      assert.equal(e.error, "rate_limit_exceeded");
      assert.equal(e.error_description, "slow down");
      assert.equal(e.status, 429);
      assert.equal(e.retryAfter, 42);
      assert.deepEqual(e.rateLimit, { limit: 10, remaining: 0, reset: new Date(1_900_000_000_000) });
      return true;
    });
  });

  test("answers that are not the API's", async () => {
    for (const [status, body] of [[502, "<html>bad gateway</html>"], [200, "not json"], [200, { success: false }], [200, { success: true, data: { nothing: 1 } }]]) {
      const client = new AuthAgentClient({ issuer: "https://auth.example", fetch: answer(status, body) });
      await assert.rejects(client.authenticate({ agentId: "a", agentSecret: "s" }), (e) => e.error === ErrorCodes.response, JSON.stringify(body));
    }
  });

  test("no answer, and an answer too late", async () => {
    const refused = new AuthAgentClient({ issuer: "https://auth.example", fetch: async () => { throw new TypeError("fetch failed"); } });
    await assert.rejects(refused.getProfile("t"), (e) => e.error === ErrorCodes.network && e.status === 0);
    const slow = new AuthAgentClient({
      issuer: "https://auth.example",
      timeoutMs: 50,
      // Never answers; the timer only keeps Node's event loop alive (the SDK's own time limit is unref'd, as a socket would not be).
      fetch: (_, init) =>
        new Promise((_, reject) => {
          const alive = setTimeout(() => {}, 5000);
          init.signal.addEventListener("abort", () => {
            clearTimeout(alive);
            reject(init.signal.reason);
          });
        }),
    });
    await assert.rejects(slow.getProfile("t"), (e) => e.error === ErrorCodes.network && /in time/.test(e.error_description));
  });

  test("sign-in URLs of another issuer are refused before any request", async () => {
    let calls = 0;
    const client = new AuthAgentClient({ issuer: "https://auth.example", fetch: async () => { calls++; return new Response("{}"); } });
    for (const url of ["https://evil.example/oauth2/authorize", "http://auth.example/oauth2/authorize", "https://auth.example.evil.example/", "not a url"]) {
      await assert.rejects(client.signIn(url, { agentId: "a", agentSecret: "s" }), (e) => e.error === "invalid_request", url);
    }
    assert.equal(calls, 0);
  });

  test("an answer larger than 1 MiB is not read", async () => {
    const client = new AuthAgentClient({ issuer: "https://auth.example", fetch: answer(200, "{}", { "Content-Length": String(2 << 20) }) });
    await assert.rejects(client.getProfile("t"), (e) => e.error === ErrorCodes.response && /too large/.test(e.error_description));
  });

  test("a kept sign-in request is used once, and a damaged one is refused", async () => {
    const kept = new Map();
    const storage = { getItem: (k) => kept.get(k) ?? null, setItem: (k, v) => void kept.set(k, v), removeItem: (k) => void kept.delete(k) };
    const discovery = { issuer: "https://auth.example", authorization_endpoint: "https://auth.example/oauth2/authorize", token_endpoint: "https://auth.example/oauth2/token", jwks_uri: "https://auth.example/jwks" };
    const client = new AuthAgentClient({ issuer: "https://auth.example", clientId: "site", redirectUri: "https://site.example/cb", transactionStorage: storage, fetch: answer(200, discovery) });
    const request = await client.createSignInUrl();
    assert.equal(kept.size, 1);
    // Passing the request itself still spends the kept copy.
    await assert.rejects(client.handleCallback(`https://site.example/cb?error=access_denied&state=${request.state}&iss=https://auth.example`, { request }), (e) => e.error === "access_denied");
    assert.equal(kept.size, 0);
    const second = await client.createSignInUrl();
    const [key] = kept.keys();
    kept.set(key, JSON.stringify({ ...JSON.parse(kept.get(key)), createdAt: undefined }));
    await assert.rejects(client.handleCallback(`https://site.example/cb?code=c&state=${second.state}&iss=https://auth.example`), (e) => e.error === ErrorCodes.callback);
  });

  test("a bad issuer is a TypeError at construction", () => {
    assert.throws(() => new AuthAgentClient({ issuer: "auth.example" }), TypeError);
    assert.throws(() => new AuthAgentClient({ issuer: "ftp://auth.example" }), TypeError);
  });
});
