// Tests that need no server: PKCE, ID-token checks with keys made here,
// tokens that do not print, errors read from answers a fake fetch gives,
// and DPoP proofs and nonce retries (against a throwaway local HTTP server
// that plays the issuer and an API: a stand-in for the retry logic only;
// the real server is e2e.test.mjs's).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";
import { inspect } from "node:util";

import {
  AuthAgentClient,
  AuthAgentError,
  clientAssertion,
  dpopKey,
  dpopProof,
  ErrorCodes,
  generateKeyPair,
  jwkThumbprint,
  keyAlgorithm,
  publicJWK,
  publicJWKS,
  Tokens,
} from "../dist/index.js";
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

describe("an agent with a key, no secret", () => {
  const ISSUER = "https://auth.example";
  const decode = (part) => JSON.parse(Buffer.from(part, "base64url").toString());
  const parts = (jwt) => {
    const [h, p, s] = jwt.split(".");
    return { header: decode(h), claims: decode(p), input: enc.encode(`${h}.${p}`), signature: Buffer.from(s, "base64url") };
  };
  const verifyParams = {
    ES256: [{ name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
    EdDSA: [{ name: "Ed25519" }, { name: "Ed25519" }],
    RS256: [{ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
    PS256: [{ name: "RSA-PSS", hash: "SHA-256" }, { name: "RSA-PSS", saltLength: 32 }],
  };
  /** Verifies a JWT with the registered public JWK, as the issuer would. */
  const verifies = async (jwt, jwk) => {
    const { header, input, signature } = parts(jwt);
    const [imp, ver] = verifyParams[header.alg];
    const { kid: _k, alg: _a, use: _u, ...material } = jwk;
    return crypto.subtle.verify(ver, await crypto.subtle.importKey("jwk", material, imp, false, ["verify"]), signature, input);
  };

  /** A client whose fetch records each request and answers what `reply` says. */
  const recording = (reply = () => ({ success: true, data: { access_token: "at", token_type: "Bearer", expires_in: 3600, scope: "profile" } })) => {
    const seen = [];
    const client = new AuthAgentClient({
      issuer: ISSUER,
      fetch: async (url, init) => {
        const body = init.body === undefined ? undefined : init.body instanceof URLSearchParams ? Object.fromEntries(init.body) : JSON.parse(init.body);
        seen.push({ url: String(url), method: init.method, headers: init.headers, body });
        const answer = reply(String(url));
        return new Response(answer === undefined ? "" : JSON.stringify(answer), { status: 200, headers: { "Content-Type": "application/json" } });
      },
    });
    return { client, seen };
  };

  test("generateKeyPair: ES256 by default, the private key not extractable; publicJWKS holds the public members only", async () => {
    const pair = await generateKeyPair();
    assert.equal(keyAlgorithm(pair.privateKey), "ES256");
    assert.equal(pair.privateKey.extractable, false);
    await assert.rejects(crypto.subtle.exportKey("jwk", pair.privateKey));
    const jwks = await publicJWKS(pair, "bot-1");
    assert.deepEqual(Object.keys(jwks.keys[0]).sort(), ["alg", "crv", "kid", "kty", "use", "x", "y"]);
    assert.equal(jwks.keys[0].kid, "bot-1");
    assert.equal(jwks.keys[0].alg, "ES256");
    assert.equal(jwks.keys[0].use, "sig");
    // From the public key alone, and without a kid.
    assert.equal((await publicJWK(pair.publicKey)).kid, undefined);
    // An extractable private key gives its public half, never d.
    const open = await generateKeyPair({ algorithm: "EdDSA", extractable: true });
    assert.deepEqual(Object.keys(await publicJWK(open.privateKey)).sort(), ["alg", "crv", "kty", "use", "x"]);
    await assert.rejects(publicJWK(pair.privateKey), TypeError);
    for (const alg of ["RS256", "PS256"]) {
      const rsa = await generateKeyPair({ algorithm: alg });
      assert.deepEqual(Object.keys(await publicJWK(rsa)).sort(), ["alg", "e", "kty", "n", "use"]);
    }
    await assert.rejects(generateKeyPair({ algorithm: "HS256" }), TypeError);
  });

  for (const alg of ["ES256", "EdDSA", "RS256", "PS256"]) {
    test(`an assertion signed with ${alg} verifies with the public key and carries the claims`, async () => {
      const pair = await generateKeyPair({ algorithm: alg });
      const [jwk] = (await publicJWKS(pair, `k-${alg}`)).keys;
      const now = Date.now();
      const a = await clientAssertion({ clientId: "bot", audience: `${ISSUER}/oauth2/token`, privateKey: pair.privateKey, keyId: `k-${alg}` });
      assert.ok(await verifies(a, jwk), "the signature verifies");
      const { header, claims } = parts(a);
      assert.deepEqual(header, { alg, typ: "JWT", kid: `k-${alg}` });
      assert.equal(claims.iss, "bot");
      assert.equal(claims.sub, "bot");
      assert.equal(claims.aud, `${ISSUER}/oauth2/token`);
      assert.ok(Math.abs(claims.iat - now / 1000) < 5);
      assert.equal(claims.exp - claims.iat, 60);
      assert.ok(typeof claims.jti === "string" && claims.jti.length >= 22);
      const other = await generateKeyPair({ algorithm: alg });
      assert.equal(await verifies(a, (await publicJWKS(other)).keys[0]), false, "another key does not verify it");
    });
  }

  test("an ES256 signature is the JWS form r || s (64 bytes), as another verifier than Web Crypto reads it", async () => {
    const { createPublicKey, verify } = await import("node:crypto");
    const pair = await generateKeyPair();
    const jwk = (await publicJWKS(pair)).keys[0];
    for (let i = 0; i < 5; i++) {
      const { input, signature } = parts(await clientAssertion({ clientId: "bot", audience: ISSUER, privateKey: pair.privateKey }));
      assert.equal(signature.length, 64);
      assert.ok(verify("sha256", input, { key: createPublicKey({ key: jwk, format: "jwk" }), dsaEncoding: "ieee-p1363" }, signature));
    }
  });

  test("keys assertions cannot use are a TypeError", async () => {
    const p384 = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, false, ["sign", "verify"]);
    await assert.rejects(clientAssertion({ clientId: "bot", audience: ISSUER, privateKey: p384.privateKey }), TypeError);
    const small = await crypto.subtle.generateKey({ name: "RSASSA-PKCS1-v1_5", modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, false, ["sign", "verify"]);
    await assert.rejects(clientAssertion({ clientId: "bot", audience: ISSUER, privateKey: small.privateKey }), /2048/);
    const hmac = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    await assert.rejects(clientAssertion({ clientId: "bot", audience: ISSUER, privateKey: hmac }), TypeError);
    const pair = await generateKeyPair();
    await assert.rejects(clientAssertion({ clientId: "bot", audience: ISSUER, privateKey: pair.publicKey }), TypeError);
  });

  test("every request carries a new assertion for its endpoint, never a secret", async () => {
    const pair = await generateKeyPair();
    const [jwk] = (await publicJWKS(pair, "bot-1")).keys;
    const creds = { agentId: "bot", privateKey: pair.privateKey, keyId: "bot-1" };
    const { client, seen } = recording((url) =>
      url.endsWith("/oauth2/revoke") ? undefined
      : url.endsWith("/oauth2/introspect") ? { active: true }
      : url.endsWith("/oauth2/token") ? { access_token: "at", token_type: "Bearer", expires_in: 3600, refresh_token: "rt" }
      : { success: true, data: { access_token: "at", token_type: "Bearer", expires_in: 3600, agent_id: "bot", redirect_to: "https://site.example/cb?code=c" } },
    );
    await client.authenticate({ ...creds, scope: ["data:read"] });
    await client.authenticate(creds);
    await client.approve("req-1", creds, { clientId: "site" });
    await client.introspect("at", creds);
    await client.revoke("at", creds);
    await client.refresh("rt", { clientId: "bot", privateKey: pair.privateKey, keyId: "bot-1" });
    await client.replaceKeys({ keys: [jwk] }, creds);
    const session = client.agentSession(creds);
    await session.getAccessToken();

    const want = [
      ["/api/agent-auth", "POST"],
      ["/api/agent-auth", "POST"],
      ["/api/agent-auth", "POST"],
      ["/oauth2/introspect", "POST"],
      ["/oauth2/revoke", "POST"],
      ["/oauth2/token", "POST"],
      ["/api/agents/keys", "PUT"],
      ["/api/agent-auth", "POST"],
    ];
    assert.deepEqual(seen.map((r) => [r.url.slice(ISSUER.length), r.method]), want);
    const jtis = new Set();
    for (const r of seen) {
      assert.equal(r.headers.Authorization, undefined, r.url);
      assert.equal(r.body.agent_secret, undefined, r.url);
      assert.equal(r.body.client_secret, undefined, r.url);
      assert.equal(r.body.client_assertion_type, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
      assert.equal(r.body.agent_id ?? r.body.client_id, "bot");
      const a = r.body.client_assertion;
      assert.ok(await verifies(a, jwk), r.url);
      const { header, claims } = parts(a);
      assert.equal(header.kid, "bot-1");
      assert.equal(claims.aud, r.url, "aud is the endpoint the assertion goes to");
      assert.equal(claims.iss, "bot");
      jtis.add(claims.jti);
    }
    assert.equal(jtis.size, seen.length, "a new jti each time");
    assert.equal(seen[0].body.scope, "data:read");
    assert.equal(seen[2].body.request_id, "req-1");
    assert.equal(seen[2].body.client_id, "site");
    assert.equal(seen[3].body.token, "at");
    assert.equal(seen[5].body.grant_type, "refresh_token");
    assert.deepEqual(seen[6].body.jwks, { keys: [jwk] });
  });

  test("the assertion's aud is the endpoint discovery names", async () => {
    const pair = await generateKeyPair();
    const discovery = { issuer: ISSUER, authorization_endpoint: `${ISSUER}/oauth2/authorize`, token_endpoint: `${ISSUER}/oauth2/token`, jwks_uri: `${ISSUER}/jwks`, introspection_endpoint: `${ISSUER}/oauth2/introspect-here` };
    const { client, seen } = recording((url) => (url.endsWith("openid-configuration") ? discovery : { active: false }));
    await client.discover();
    await client.introspect("at", { agentId: "bot", privateKey: pair.privateKey });
    assert.equal(seen[1].url, `${ISSUER}/oauth2/introspect-here`);
    const { header, claims } = parts(seen[1].body.client_assertion);
    assert.equal(claims.aud, `${ISSUER}/oauth2/introspect-here`);
    assert.equal(header.kid, undefined, "no keyId, no kid: the issuer tries each key of the alg");
  });

  test("registration with public keys sends jwks and no secret", async () => {
    const pair = await generateKeyPair({ algorithm: "EdDSA" });
    const jwks = await publicJWKS(pair, "bot-1");
    const { client, seen } = recording(() => ({ success: true, data: { agent_id: "bot", permissions: [], token_endpoint_auth_method: "private_key_jwt", kids: ["bot-1"] } }));
    const agent = await client.registerAgent({ agentId: "bot", jwks, modelName: "m", ownerName: "O", ownerEmail: "o@example.com" });
    assert.deepEqual(seen[0].body, { agent_id: "bot", model_name: "m", owner_name: "O", owner_email: "o@example.com", jwks });
    assert.equal(agent.tokenEndpointAuthMethod, "private_key_jwt");
    assert.deepEqual(agent.kids, ["bot-1"]);
    await assert.rejects(client.registerAgent({ agentId: "bot", jwks, agentSecret: "s", modelName: "m", ownerName: "O", ownerEmail: "o@example.com" }), TypeError);
  });

  test("a secret and a key together are a TypeError, before any request", async () => {
    const pair = await generateKeyPair();
    const { client, seen } = recording();
    const both = { agentId: "bot", agentSecret: "s", privateKey: pair.privateKey };
    await assert.rejects(client.authenticate(both), TypeError);
    await assert.rejects(client.approve("r", both), TypeError);
    await assert.rejects(client.revoke("t", both), TypeError);
    await assert.rejects(client.introspect("t", { clientId: "bot", clientSecret: "s", privateKey: pair.privateKey }), TypeError);
    assert.equal(seen.length, 0);
  });
});

describe("DPoP proofs", () => {
  const decode = (part) => JSON.parse(Buffer.from(part, "base64url").toString());
  const verifyParams = {
    ES256: [{ name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
    EdDSA: [{ name: "Ed25519" }, { name: "Ed25519" }],
    RS256: [{ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
    PS256: [{ name: "RSA-PSS", hash: "SHA-256" }, { name: "RSA-PSS", saltLength: 32 }],
  };
  /** A proof's header and claims, and whether its signature verifies with the key in its own header (as a server checks it). */
  const open = async (jwt) => {
    const [h, p, s] = jwt.split(".");
    const header = decode(h);
    const [imp, ver] = verifyParams[header.alg];
    const key = await crypto.subtle.importKey("jwk", header.jwk, imp, false, ["verify"]);
    const ok = await crypto.subtle.verify(ver, key, Buffer.from(s, "base64url"), enc.encode(`${h}.${p}`));
    return { header, claims: decode(p), ok };
  };
  const sha256 = (s) => createHash("sha256").update(s, "ascii").digest("base64url");

  for (const alg of ["ES256", "EdDSA", "RS256", "PS256"]) {
    test(`a proof signed with ${alg}: typ, alg, the public JWK only; the claims; a signature the header's key verifies`, async () => {
      const pair = await generateKeyPair({ algorithm: alg });
      const now = Date.now();
      const proof = await dpopProof(pair, { method: "post", url: "https://api.example/v1/items?page=2&q=x#frag", accessToken: "the-access-token", nonce: "n-1" });
      const { header, claims, ok } = await open(proof);
      assert.ok(ok, "the signature verifies with the header's jwk");
      assert.deepEqual(Object.keys(header).sort(), ["alg", "jwk", "typ"]);
      assert.equal(header.typ, "dpop+jwt");
      assert.equal(header.alg, alg);
      const pub = await publicJWK(pair);
      const members = alg.startsWith("E") ? (alg === "ES256" ? ["crv", "kty", "x", "y"] : ["crv", "kty", "x"]) : ["e", "kty", "n"];
      assert.deepEqual(Object.keys(header.jwk).sort(), members, "public members only: no d, kid, alg or use");
      for (const m of members) {
        assert.equal(header.jwk[m], pub[m]);
      }
      assert.deepEqual(Object.keys(claims).sort(), ["ath", "htm", "htu", "iat", "jti", "nonce"]);
      assert.equal(claims.htm, "POST");
      assert.equal(claims.htu, "https://api.example/v1/items", "no query, no fragment");
      assert.ok(Math.abs(claims.iat - now / 1000) < 5);
      assert.ok(/^[A-Za-z0-9_-]{22,}$/.test(claims.jti), "at least 128 random bits");
      assert.equal(claims.ath, sha256("the-access-token"));
      assert.equal(claims.nonce, "n-1");
      const other = await generateKeyPair({ algorithm: alg });
      const forged = (await dpopProof(other, { method: "GET", url: "https://api.example/" })).split(".");
      const swapped = `${proof.split(".")[0]}.${forged[1]}.${forged[2]}`;
      assert.equal((await open(swapped)).ok, false, "another key's signature does not verify");
    });
  }

  test("without a token or nonce: no ath, no nonce; a new jti every time; methods as fetch sends them", async () => {
    const pair = await generateKeyPair();
    const a = (await open(await dpopProof(pair, { method: "GET", url: "https://auth.example/oauth2/token" }))).claims;
    const b = (await open(await dpopProof(pair, { method: "GET", url: "https://auth.example/oauth2/token" }))).claims;
    assert.deepEqual(Object.keys(a).sort(), ["htm", "htu", "iat", "jti"]);
    assert.notEqual(a.jti, b.jti);
    assert.equal((await open(await dpopProof(pair, { method: "patch", url: "https://a.example" }))).claims.htm, "patch", "fetch sends patch as written");
    assert.equal((await open(await dpopProof(pair, { method: "delete", url: new URL("https://a.example") }))).claims.htu, "https://a.example/");
  });

  test("keys a proof cannot use are a TypeError", async () => {
    const pair = await generateKeyPair({ extractable: true });
    const full = await crypto.subtle.exportKey("jwk", pair.privateKey);
    const options = { method: "GET", url: "https://a.example/" };
    await assert.rejects(dpopProof({ privateKey: pair.privateKey, publicJwk: full }, options), /private member/);
    await assert.rejects(dpopProof({ privateKey: pair.privateKey, publicJwk: await publicJWK(pair), alg: "RS256" }, options), /signs ES256/);
    await assert.rejects(dpopProof({ privateKey: pair.publicKey, publicJwk: await publicJWK(pair) }, options), TypeError);
    await assert.rejects(dpopProof({ privateKey: pair.privateKey, publicJwk: { kty: "oct", k: "x" } }, options), TypeError);
    const hmac = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    await assert.rejects(dpopProof({ privateKey: hmac, publicJwk: await publicJWK(pair) }, options), TypeError);
  });

  test("jwkThumbprint is RFC 7638's (§3.1's example), and a DPoPKey's is its public key's", async () => {
    const rfc = {
      kty: "RSA",
      n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
      e: "AQAB",
      alg: "RS256",
      kid: "2011-04-29",
    };
    assert.equal(await jwkThumbprint(rfc), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    const pair = await generateKeyPair();
    const key = await dpopKey(pair);
    assert.equal(await jwkThumbprint(key.publicJwk), await jwkThumbprint(await publicJWK(pair)));
    assert.equal(await dpopKey(pair), key, "a pair's public key is exported once");
  });

  test("DPoP-bound tokens keep their key out of JSON and print; fromJSON takes it back", async () => {
    const key = await dpopKey(await generateKeyPair());
    const t = Tokens.fromResponse({ access_token: "secret-at", token_type: "DPoP", expires_in: 60, scope: "profile" }, Date.now(), key);
    assert.equal(t.dpopKey, key);
    assert.ok(t.dpopBound);
    assert.ok(!JSON.stringify(t).includes("dpopKey") && !JSON.stringify(t).includes(key.publicJwk.x));
    assert.ok(!/secret-/.test(inspect(t)));
    assert.equal(Tokens.fromJSON(JSON.parse(JSON.stringify(t)), key).dpopKey, key);
    assert.equal(Tokens.fromJSON(JSON.parse(JSON.stringify(t))).dpopKey, undefined);
    const bearer = Tokens.fromResponse({ access_token: "at", token_type: "Bearer", expires_in: 60 }, Date.now(), key);
    assert.equal(bearer.dpopKey, undefined, "an issuer that ignored the proof gave a bearer token: nothing is bound");
    assert.equal(bearer.dpopBound, false);
  });
});

describe("DPoP against a throwaway local server (issuer and API): proofs, nonces, retries", () => {
  // The server plays an issuer with nonces on: /api/agent-auth and
  // /oauth2/token answer use_dpop_nonce (400) to a proof without the
  // current nonce, and an API at /api/items answers 401 with a
  // WWW-Authenticate DPoP challenge. `state.nonce` is the nonce it wants;
  // `state.always` makes it refuse every proof.
  let server;
  let base;
  const state = { nonce: "nonce-1", always: false, seen: [] };
  const decode = (part) => JSON.parse(Buffer.from(part, "base64url").toString());

  before(async () => {
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const proof = req.headers.dpop;
        const claims = proof ? decode(proof.split(".")[1]) : undefined;
        const header = proof ? decode(proof.split(".")[0]) : undefined;
        const fields = req.headers["content-type"]?.startsWith("application/json") ? JSON.parse(body || "{}") : Object.fromEntries(new URLSearchParams(body));
        state.seen.push({ method: req.method, path: req.url, authorization: req.headers.authorization, proof, header, claims, fields });
        const json = (status, value, headers = {}) => {
          res.writeHead(status, { "Content-Type": "application/json", ...headers });
          res.end(JSON.stringify(value));
        };
        const fresh = claims && claims.nonce === state.nonce && !state.always;
        if (req.url === "/api/agent-auth" || req.url === "/oauth2/token") {
          if (proof && !fresh) {
            return json(400, { error: "use_dpop_nonce", error_description: "Authorization server requires nonce in DPoP proof" }, { "DPoP-Nonce": state.nonce });
          }
          const token = { access_token: `at-${state.seen.length}`, token_type: proof ? "DPoP" : "Bearer", expires_in: 3600, scope: "profile", refresh_token: "rt" };
          return req.url === "/api/agent-auth" ? json(200, { success: true, data: token }, { "DPoP-Nonce": state.nonce }) : json(200, token, { "DPoP-Nonce": state.nonce });
        }
        if (req.url.startsWith("/api/items")) {
          if (!fresh) {
            return json(401, { error: "use_dpop_nonce", error_description: "Resource server requires nonce in DPoP proof" }, {
              "WWW-Authenticate": 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof", algs="ES256 EdDSA PS256 RS256"',
              "DPoP-Nonce": state.nonce,
            });
          }
          return json(200, { ok: true, body });
        }
        json(404, { error: "invalid_request" });
      });
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));
  const reset = (nonce) => {
    state.nonce = nonce;
    state.always = false;
    state.seen = [];
  };

  test("a token request is sent once more with the nonce the issuer asks for, with a new proof and a new assertion", async () => {
    reset("nonce-a");
    const pair = await generateKeyPair();
    const client = new AuthAgentClient({ issuer: base });
    const tokens = await client.authenticate({ agentId: "bot", ...pair, keyId: "bot-1", dpop: true });
    assert.equal(tokens.tokenType, "DPoP");
    assert.equal(tokens.dpopKey.privateKey, pair.privateKey, "dpop: true with both halves: the agent's own key pair");
    const [first, second] = state.seen;
    assert.equal(state.seen.length, 2);
    assert.equal(first.claims.nonce, undefined, "no nonce known at first");
    assert.equal(second.claims.nonce, "nonce-a");
    assert.notEqual(first.claims.jti, second.claims.jti);
    assert.notEqual(first.fields.client_assertion, second.fields.client_assertion, "a retry never replays an assertion");
    for (const r of state.seen) {
      assert.equal(r.claims.htm, "POST");
      assert.equal(r.claims.htu, `${base}/api/agent-auth`);
      assert.equal(r.claims.ath, undefined, "no ath at the token endpoint");
      assert.equal(r.header.typ, "dpop+jwt");
      assert.deepEqual(r.header.jwk, (await dpopKey(pair)).publicJwk);
    }

    // The nonce is remembered for the origin: the next request carries it at once.
    await client.authenticate({ agentId: "bot", ...pair, dpop: true });
    assert.equal(state.seen.length, 3);
    assert.equal(state.seen[2].claims.nonce, "nonce-a");
  });

  test("a guarded API: Authorization DPoP with a proof (ath, htm, htu), a retry on its use_dpop_nonce, never Bearer", async () => {
    reset("nonce-api");
    const client = new AuthAgentClient({ issuer: base });
    const tokens = await client.authenticate({ agentId: "bot", agentSecret: "s", dpop: true });
    assert.equal(tokens.tokenType, "DPoP");
    state.seen = [];
    const resp = await client.fetch(tokens, `${base}/api/items?page=2`, { method: "POST", body: "hello", headers: { "Content-Type": "text/plain" } });
    assert.equal(resp.status, 200);
    assert.equal((await resp.json()).body, "hello", "the body is sent again on the retry");
    // The nonce the issuer gave was for this origin: here the API shares it, so one request.
    assert.equal(state.seen.length, 1);
    state.nonce = "nonce-api-2";
    const again = await client.fetch(tokens, `${base}/api/items`);
    assert.equal(again.status, 200);
    assert.equal(state.seen.length, 3, "a stale nonce: one retry with the new one");
    for (const r of state.seen) {
      assert.equal(r.authorization, `DPoP ${tokens.accessToken}`);
      assert.equal(r.claims.ath, createHash("sha256").update(tokens.accessToken).digest("base64url"));
      assert.equal(r.claims.htu, `${base}/api/items`);
    }
    assert.equal(state.seen[0].claims.htm, "POST");
    assert.equal(state.seen[1].claims.nonce, "nonce-api");
    assert.equal(state.seen[2].claims.nonce, "nonce-api-2");
    assert.equal(state.seen[2].claims.htm, "GET");

    // A session renews and calls with the same key, and never as Bearer.
    state.seen = [];
    const session = client.agentSession({ agentId: "bot", agentSecret: "s", dpop: true });
    assert.equal((await session.fetch(`${base}/api/items`)).status, 200);
    assert.deepEqual(state.seen.map((r) => r.path), ["/api/agent-auth", "/api/items"]);
    assert.match(state.seen[1].authorization, /^DPoP /);
    assert.deepEqual(state.seen[1].header.jwk, tokens.dpopKey.publicJwk, "dpop: true with a secret: one key the client generated, for all its tokens");
    // A Request object works too (its body is copied for a retry).
    state.nonce = "nonce-api-3";
    const viaRequest = await session.fetch(new Request(`${base}/api/items`, { method: "PUT", body: "again" }));
    assert.equal((await viaRequest.json()).body, "again");

    // A DPoP-bound token without its key is a TypeError, not a bearer request.
    const keyless = Tokens.fromJSON(JSON.parse(JSON.stringify(tokens)));
    const before = state.seen.length;
    await assert.rejects(client.fetch(keyless, `${base}/api/items`), /needs the key/);
    await assert.rejects(client.getProfile(keyless), /needs the key/);
    assert.equal(state.seen.length, before);
  });

  test("one retry only: a server that keeps asking gets its use_dpop_nonce back as the error", async () => {
    reset("nonce-b");
    state.always = true;
    const client = new AuthAgentClient({ issuer: base, dpop: true });
    await rejects(client.authenticate({ agentId: "bot", agentSecret: "s" }), (e) => {
      assert.equal(e.error, "use_dpop_nonce");
      assert.equal(e.status, 400);
    });
    assert.equal(state.seen.length, 2);
    const key = await dpopKey(await generateKeyPair());
    const tokens = Tokens.fromResponse({ access_token: "at", token_type: "DPoP", expires_in: 60 }, Date.now(), key);
    const resp = await client.fetch(tokens, `${base}/api/items`);
    assert.equal(resp.status, 401);
    assert.equal(state.seen.length, 4);
  });

  test("refresh: the proof is by the key the tokens are bound to; dpop on credentials beats the client's; false opts out", async () => {
    reset("nonce-c");
    const client = new AuthAgentClient({ issuer: base, dpop: true });
    const own = await generateKeyPair({ algorithm: "EdDSA" });
    const tokens = await client.authenticate({ agentId: "bot", agentSecret: "s", dpop: own });
    assert.deepEqual(tokens.dpopKey.publicJwk, (await dpopKey(own)).publicJwk, "a separate key pair");
    state.seen = [];
    const refreshed = await client.refresh(tokens, { clientId: "public-app" });
    assert.equal(refreshed.tokenType, "DPoP");
    assert.equal(state.seen.at(-1).fields.grant_type, "refresh_token");
    assert.deepEqual(state.seen.at(-1).header.jwk, (await dpopKey(own)).publicJwk, "the bound key, not the client's");
    assert.equal(refreshed.dpopKey, tokens.dpopKey);

    state.seen = [];
    const plain = await client.authenticate({ agentId: "bot", agentSecret: "s", dpop: false });
    assert.equal(plain.tokenType, "Bearer");
    assert.equal(state.seen[0].proof, undefined);
    const resp = await client.fetch(plain, `${base}/api/items`);
    assert.equal(resp.status, 401);
    assert.match(state.seen.at(-1).authorization, /^Bearer /);
    assert.equal(state.seen.at(-1).proof, undefined, "a bearer token carries no proof");
  });
});

async function rejects(promise, check) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof AuthAgentError, `not an AuthAgentError: ${err}`);
    check(err);
    return true;
  });
}
