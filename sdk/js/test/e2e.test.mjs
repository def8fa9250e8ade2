// End to end against a real Caddy built from this repository. The Go test
// e2e/sdk_test.go (TestJavaScriptSDK) starts that Caddy, a guarded API and
// the tiny website of test/site.mjs, and runs these tests with their
// addresses in the environment; run alone, they skip.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { inspect } from "node:util";

import {
  AuthAgentClient,
  AuthAgentError,
  clientAssertion,
  clientAssertionType,
  dpopKey,
  dpopProof,
  ErrorCodes,
  generateKeyPair,
  jwkThumbprint,
  publicJWK,
  publicJWKS,
  Tokens,
} from "../dist/index.js";

const env = process.env;
const ISSUER = env.AUTHAGENT_ISSUER ?? "";
const GUARDED = env.AUTHAGENT_GUARDED_URL ?? "";
const SITE = env.AUTHAGENT_SITE_URL ?? "";
const website = { clientId: env.AUTHAGENT_CLIENT_ID ?? "", clientSecret: env.AUTHAGENT_CLIENT_SECRET ?? "", redirectUri: env.AUTHAGENT_REDIRECT_URI ?? "" };
const spa = { clientId: env.AUTHAGENT_PUBLIC_CLIENT_ID ?? "", redirectUri: env.AUTHAGENT_PUBLIC_REDIRECT_URI ?? "" };
// A second Caddy with `dpop_nonce on`, and its API behind `agent_guard { dpop required }`.
const NONCE_ISSUER = env.AUTHAGENT_DPOP_NONCE_ISSUER ?? "";
const NONCE_GUARDED = env.AUTHAGENT_DPOP_NONCE_GUARDED_URL ?? "";
const noNonceWorld = NONCE_ISSUER === "" && "no AUTHAGENT_DPOP_NONCE_ISSUER";
const skip = ISSUER === "" && "run through `go test ./e2e -run TestJavaScriptSDK`, which starts Caddy";

const SECRET = "Test123456!";

async function register(client, agentId) {
  return client.registerAgent({ agentId, agentSecret: SECRET, modelName: "js-model", ownerName: "JS Owner", ownerEmail: "js@example.com" });
}

async function guardedStatus(token) {
  const resp = await fetch(`${GUARDED}/x`, { headers: { Authorization: `Bearer ${token}` } });
  await resp.arrayBuffer();
  return resp.status;
}

/** A token's claims, unverified (the test only reads what the issuer put in). */
function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString());
}

/** A client whose requests are recorded: URL, method, and the DPoP proof's claims when there is one. */
function recordingClient(issuer, options = {}) {
  const seen = [];
  const client = new AuthAgentClient({
    issuer,
    ...options,
    fetch: async (input, init = {}) => {
      const proof = new Headers(init.headers).get("DPoP");
      const resp = await fetch(input, init);
      seen.push({ url: String(input), status: resp.status, proof: proof ? claimsOf(proof) : undefined, nonce: resp.headers.get("DPoP-Nonce") });
      return resp;
    },
  });
  return { client, seen };
}

async function rejects(promise, check) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof AuthAgentError, `not an AuthAgentError: ${err}`);
    assert.equal(err.name, "AuthAgentError");
    check(err);
    return true;
  });
}

describe("against a real Caddy", { skip }, () => {
  // The rate-limit test's agent, registered before any authentication fails
  // (a registration is refused too once this address's budget is spent).
  before(async () => {
    await register(new AuthAgentClient({ issuer: ISSUER }), "js-limited");
  });

  test("the agent's side: register, authenticate, profile", async () => {
    const client = new AuthAgentClient({ issuer: ISSUER });
    const agent = await register(client, "js-agent");
    assert.equal(agent.agentId, "js-agent");
    assert.equal(agent.agentSecret, undefined);
    assert.deepEqual(agent.permissions, ["data:read"]);
    const generated = await client.registerAgent({ agentId: "js-generated", modelName: "m", ownerName: "O", ownerEmail: "o@example.com" });
    assert.ok(generated.agentSecret && generated.agentSecret.length >= 32);

    const tokens = await client.authenticate({ agentId: "js-agent", agentSecret: SECRET });
    assert.equal(tokens.tokenType, "Bearer");
    assert.ok(tokens.valid(60_000));
    assert.deepEqual(tokens.scopes(), ["profile", "data:read"]);
    for (const shown of [inspect(tokens), String(tokens), `${tokens}`]) {
      assert.ok(!shown.includes(tokens.accessToken), "printing tokens shows the token");
    }
    const narrow = await client.authenticate({ agentId: "js-agent", agentSecret: SECRET, scope: ["data:read"] });
    assert.equal(narrow.scope, "data:read");

    const profile = await client.getProfile(tokens.accessToken);
    assert.equal(profile.modelName, "js-model");
    assert.equal(profile.ownerEmail, "js@example.com");
    const updated = await client.updateProfile(tokens.accessToken, { modelName: "js-model-2" });
    assert.equal(updated.modelName, "js-model-2");
    assert.equal((await client.getProfile(tokens.accessToken)).modelName, "js-model-2");
    await assert.rejects(client.updateProfile(tokens.accessToken, { nickname: "x" }), TypeError);
    await rejects(client.updateProfile(tokens.accessToken, { ownerEmail: "not an address" }), (e) => {
      assert.equal(e.error, "invalid_request");
      assert.equal(e.status, 400);
    });

    // The agent calls an API with a session that renews its token.
    const session = client.agentSession({ agentId: "js-agent", agentSecret: SECRET });
    const first = await session.getAccessToken();
    assert.equal(await session.getAccessToken(), first, "a fresh token is reused");
    assert.equal((await session.fetch(`${GUARDED}/x`)).status, 200);
    const eager = client.agentSession({ agentId: "js-agent", agentSecret: SECRET }, { refreshMarginMs: 2 * 3600_000 });
    const [a, b] = await Promise.all([eager.getAccessToken(), eager.getAccessToken()]);
    assert.equal(a, b, "concurrent callers share one renewal");
    assert.notEqual(await eager.getAccessToken(), a, "a token within the margin of its expiry is renewed");

    // The agent revokes a token it got for itself, as its own client.
    const self = { clientId: "js-agent", clientSecret: SECRET };
    assert.equal((await client.introspect(tokens.accessToken, self)).active, true);
    await client.revoke(tokens.accessToken, self);
    assert.equal((await client.introspect(tokens.accessToken, self)).active, false);
    assert.equal(await guardedStatus(tokens.accessToken), 401);
  });

  test("sign in to a confidential website, refresh, revoke, and the guard refuses the revoked token", async () => {
    const agentSide = new AuthAgentClient({ issuer: ISSUER });
    await register(agentSide, "js-signin");
    const creds = { agentId: "js-signin", agentSecret: SECRET };
    const site = new AuthAgentClient({ issuer: ISSUER, ...website });

    const request = await site.createSignInUrl({ scope: "openid profile email data:read" });
    const url = new URL(request.url);
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    assert.equal(url.searchParams.get("state"), request.state);
    assert.equal(url.searchParams.get("nonce"), request.nonce);
    assert.ok(request.codeVerifier.length >= 43);

    const redirect = await agentSide.signIn(request.url, creds);
    assert.ok(redirect.startsWith(`${website.redirectUri}?`), redirect);
    const back = new URL(redirect).searchParams;
    assert.equal(back.get("state"), request.state);
    assert.equal(back.get("iss"), ISSUER);

    const { tokens, claims } = await site.handleCallback(redirect);
    assert.equal(claims.sub, "js-signin");
    assert.equal(claims.nonce, request.nonce);
    assert.equal(claims.email, "js@example.com");
    assert.ok(tokens.refreshToken && tokens.idToken);
    assert.deepEqual(tokens.scopes().sort(), ["data:read", "email", "openid", "profile"]);
    assert.equal((await site.userinfo(tokens.accessToken)).sub, "js-signin");

    // A tampered ID token, or one checked for another nonce, fails.
    const [h, p, s] = tokens.idToken.split(".");
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: "someone-else" })).toString("base64url")}.${s}`;
    await rejects(site.verifyIDToken(forged, { clientId: website.clientId }), (e) => assert.equal(e.error, ErrorCodes.idToken));
    await rejects(site.verifyIDToken(tokens.idToken, { clientId: website.clientId, nonce: "other" }), (e) => assert.equal(e.error, ErrorCodes.idToken));
    await rejects(site.verifyIDToken(tokens.idToken, { clientId: "other-site" }), (e) => assert.equal(e.error, ErrorCodes.idToken));
    assert.equal((await site.verifyIDToken(tokens.idToken, { clientId: website.clientId })).sub, "js-signin");
    assert.ok(p);

    // Refresh: the refresh token rotates, a new ID token comes.
    const auth = { clientId: website.clientId, clientSecret: website.clientSecret };
    const refreshed = await site.refresh(tokens.refreshToken, auth);
    assert.ok(refreshed.refreshToken && refreshed.refreshToken !== tokens.refreshToken);
    assert.ok(refreshed.idToken);
    assert.equal((await site.introspect(refreshed.accessToken, auth)).sub, "js-signin");
    assert.equal(await guardedStatus(refreshed.accessToken), 200);

    // A session refreshes before expiry, once for concurrent callers, and
    // hands each new set to onTokens.
    const seen = [];
    const session = site.session(refreshed, auth, { refreshMarginMs: 2 * 3600_000, onTokens: (t) => seen.push(t) });
    const [x, y] = await Promise.all([session.getAccessToken(), session.getAccessToken()]);
    assert.equal(x, y);
    assert.notEqual(x, refreshed.accessToken);
    assert.equal(seen.length, 1);
    assert.notEqual(seen[0].refreshToken, refreshed.refreshToken);
    await rejects(site.refresh(refreshed.refreshToken, auth), (e) => assert.equal(e.error, "invalid_grant"));

    await site.revoke(x, auth);
    assert.equal(await guardedStatus(x), 401);
    assert.equal((await site.introspect(x, auth)).active, false);

    // The callback is good once: its state is spent, and so is its code
    // (whose replay also ends the grant's refresh family).
    await rejects(site.handleCallback(redirect), (e) => assert.equal(e.error, ErrorCodes.callback));
    await rejects(site.handleCallback(redirect, { request }), (e) => {
      assert.equal(e.error, "invalid_grant");
      assert.equal(e.status, 400);
    });
    await rejects(site.refresh(seen[0].refreshToken, auth), (e) => assert.equal(e.error, "invalid_grant"));
  });

  test("sign in to a public client (PKCE only) and to the tiny website", async () => {
    const agentSide = new AuthAgentClient({ issuer: ISSUER });
    await register(agentSide, "js-public");
    const creds = { agentId: "js-public", agentSecret: SECRET };

    const app = new AuthAgentClient({ issuer: ISSUER, clientId: spa.clientId, redirectUri: spa.redirectUri });
    const request = await app.createSignInUrl({ scope: ["openid", "profile", "data:read"] });
    const { tokens, claims } = await app.handleCallback(await agentSide.signIn(request.url, creds));
    assert.equal(claims.sub, "js-public");
    assert.equal(await guardedStatus(tokens.accessToken), 200);
    const next = await app.refresh(tokens.refreshToken, { clientId: spa.clientId });
    await app.revoke(next.refreshToken, { clientId: spa.clientId });
    await rejects(app.refresh(next.refreshToken, { clientId: spa.clientId }), (e) => assert.equal(e.error, "invalid_grant"));

    // The tiny website (test/site.mjs, a separate process): its /login
    // sends the agent to the issuer, its /callback finishes the sign-in.
    const login = await fetch(`${SITE}/login`, { redirect: "manual" });
    assert.equal(login.status, 302);
    const cookie = login.headers.get("Set-Cookie").split(";")[0];
    const redirect = await agentSide.signIn(login.headers.get("Location"), creds);
    // Login CSRF: the same callback link in another browser (without the
    // session that started it) signs nobody in.
    const elsewhere = await fetch(redirect);
    assert.equal(elsewhere.status, 400);
    assert.equal((await elsewhere.json()).error, "invalid_callback");
    const done = await fetch(redirect, { headers: { Cookie: cookie } });
    const body = await done.json();
    assert.equal(done.status, 200, JSON.stringify(body));
    assert.equal(body.sub, "js-public");
    assert.equal(await guardedStatus(body.access_token), 200);
  });

  test("errors: wrong secret, refused and foreign sign-ins, bad callbacks, network", async () => {
    const client = new AuthAgentClient({ issuer: ISSUER });
    await register(client, "js-errors");
    const creds = { agentId: "js-errors", agentSecret: SECRET };

    await rejects(client.authenticate({ agentId: "js-errors", agentSecret: "Wrong-Secret-1!" }), (e) => {
      assert.equal(e.error, "invalid_client");
      assert.equal(e.status, 401);
      assert.ok(e.error_description);
      assert.ok(!e.message.includes("Wrong-Secret-1!"));
    });
    await rejects(client.authenticate({ ...creds, scope: "admin:everything" }), (e) => assert.equal(e.error, "invalid_scope"));

    const site = new AuthAgentClient({ issuer: ISSUER, ...website });
    const refused = await site.createSignInUrl({ scope: "openid nonsense:scope" });
    await rejects(client.signIn(refused.url, creds), (e) => assert.equal(e.error, "invalid_scope"));
    const foreign = new URL(refused.url);
    foreign.host = "elsewhere.example";
    await rejects(client.signIn(foreign.href, creds), (e) => assert.equal(e.error, "invalid_request"));

    // Callbacks: unknown state, another issuer, an error the issuer sent.
    const request = await site.createSignInUrl();
    const cb = (params) => `${website.redirectUri}?${new URLSearchParams(params)}`;
    await rejects(site.handleCallback(cb({ code: "c", state: "unknown", iss: ISSUER })), (e) => assert.equal(e.error, ErrorCodes.callback));
    await rejects(site.handleCallback(cb({ code: "c", state: request.state, iss: "https://evil.example" })), (e) => assert.equal(e.error, ErrorCodes.callback));
    const again = await site.createSignInUrl();
    await rejects(site.handleCallback(cb({ error: "access_denied", error_description: "the agent said no", state: again.state, iss: ISSUER })), (e) => {
      assert.equal(e.error, "access_denied");
      assert.equal(e.error_description, "the agent said no");
    });

    const down = new AuthAgentClient({ issuer: `http://127.0.0.1:${env.AUTHAGENT_CLOSED_PORT}`, timeoutMs: 5000 });
    await rejects(down.authenticate(creds), (e) => {
      assert.equal(e.error, ErrorCodes.network);
      assert.equal(e.status, 0);
    });
    await rejects(down.createSignInUrl({ clientId: "x", redirectUri: "http://localhost/cb" }), (e) => assert.equal(e.error, ErrorCodes.network));
  });

  test("an expired sign-in request (the server runs with request_lifetime 10s)", async () => {
    const client = new AuthAgentClient({ issuer: ISSUER });
    await register(client, "js-late");
    const site = new AuthAgentClient({ issuer: ISSUER, ...website });
    const request = await site.createSignInUrl();
    const resp = await fetch(request.url, { headers: { Accept: "application/json" } });
    const { request_id: requestId } = await resp.json();
    assert.ok(requestId);
    // Insisting on another client approves nothing (request-id phishing).
    await rejects(client.approve(requestId, { agentId: "js-late", agentSecret: SECRET }, { clientId: "another-site" }), (e) => {
      assert.equal(e.error, "invalid_request");
      assert.match(e.error_description, /not approved/);
    });
    await sleep(10_500);
    await rejects(client.approve(requestId, { agentId: "js-late", agentSecret: SECRET }), (e) => {
      assert.equal(e.error, "invalid_request");
      assert.equal(e.status, 400);
    });
  });

  test("DPoP: bound tokens from /api/agent-auth and client_credentials, proofs at the guarded API, refused as Bearer", async () => {
    const client = new AuthAgentClient({ issuer: ISSUER });
    const pair = await generateKeyPair();
    await client.registerAgent({ agentId: "js-dpop", jwks: await publicJWKS(pair, "js-dpop-1"), modelName: "js-model", ownerName: "JS Owner", ownerEmail: "js@example.com" });
    const jkt = await jwkThumbprint((await dpopKey(pair)).publicJwk);

    // The agent's own key pair binds its tokens (dpop: true with both halves).
    const creds = { agentId: "js-dpop", ...pair, keyId: "js-dpop-1", dpop: true };
    const tokens = await client.authenticate(creds);
    assert.equal(tokens.tokenType, "DPoP");
    assert.equal(claimsOf(tokens.accessToken).cnf?.jkt, jkt, "the access token names the key's thumbprint");
    const resp = await client.fetch(tokens, `${GUARDED}/x?q=1`);
    assert.equal(resp.status, 200);
    const upstream = await resp.json();
    assert.equal(upstream["X-Agent-Id"], "js-dpop");
    assert.equal(upstream.Authorization, `DPoP ${tokens.accessToken}`);
    const posted = await client.fetch(tokens, `${GUARDED}/x`, { method: "POST", body: "{}" });
    assert.equal(posted.status, 200, "a proof for POST");
    await posted.arrayBuffer();

    // The same token as a bearer token is refused (no downgrade), and a proof
    // by another key, or one made for another URL, does not pass either.
    const bearer = await fetch(`${GUARDED}/x`, { headers: { Authorization: `Bearer ${tokens.accessToken}` } });
    assert.equal(bearer.status, 401);
    assert.match(bearer.headers.get("WWW-Authenticate") ?? "", /invalid_token/);
    await bearer.arrayBuffer();
    const stranger = await generateKeyPair();
    for (const [what, proof] of [
      ["another key", await dpopProof(stranger, { method: "GET", url: `${GUARDED}/x`, accessToken: tokens.accessToken })],
      ["another URL", await dpopProof(pair, { method: "GET", url: `${GUARDED}/elsewhere`, accessToken: tokens.accessToken })],
      ["no ath", await dpopProof(pair, { method: "GET", url: `${GUARDED}/x` })],
    ]) {
      const r = await fetch(`${GUARDED}/x`, { headers: { Authorization: `DPoP ${tokens.accessToken}`, DPoP: proof } });
      assert.equal(r.status, 401, what);
      await r.arrayBuffer();
    }
    // The proof the SDK made is used once: sent again, it is refused.
    const once = await dpopProof(pair, { method: "GET", url: `${GUARDED}/x`, accessToken: tokens.accessToken });
    const first = await fetch(`${GUARDED}/x`, { headers: { Authorization: `DPoP ${tokens.accessToken}`, DPoP: once } });
    const replay = await fetch(`${GUARDED}/x`, { headers: { Authorization: `DPoP ${tokens.accessToken}`, DPoP: once } });
    assert.deepEqual([first.status, replay.status], [200, 401]);
    await first.arrayBuffer();
    await replay.arrayBuffer();

    // The issuer's own endpoints take the bound token with its proof.
    assert.equal((await client.getProfile(tokens)).agentId, "js-dpop");
    const seen = await client.introspect(tokens.accessToken, creds);
    assert.equal(seen.active, true);
    assert.equal(seen.token_type, "DPoP");
    assert.equal(seen.cnf?.jkt, jkt);

    // client_credentials at /oauth2/token, a request the SDK does not make:
    // dpopProof and clientAssertion for any HTTP client.
    const tokenURL = `${ISSUER}/oauth2/token`;
    const cc = await fetch(tokenURL, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", DPoP: await dpopProof(pair, { method: "POST", url: tokenURL }) },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_id: "js-dpop",
        client_assertion_type: clientAssertionType,
        client_assertion: await clientAssertion({ clientId: "js-dpop", audience: tokenURL, privateKey: pair.privateKey, keyId: "js-dpop-1" }),
      }),
    });
    const ccBody = await cc.json();
    assert.equal(cc.status, 200, JSON.stringify(ccBody));
    assert.equal(ccBody.token_type, "DPoP");
    const ccTokens = Tokens.fromResponse(ccBody, Date.now(), await dpopKey(pair));
    assert.equal(claimsOf(ccTokens.accessToken).cnf?.jkt, jkt);
    const ccResp = await client.fetch(ccTokens, `${GUARDED}/x`);
    assert.equal(ccResp.status, 200);
    await ccResp.arrayBuffer();

    // A separate DPoP key for an agent with a key.
    const separate = await generateKeyPair({ algorithm: "EdDSA" });
    const bound = await client.authenticate({ agentId: "js-dpop", privateKey: pair.privateKey, keyId: "js-dpop-1", dpop: separate });
    assert.equal(claimsOf(bound.accessToken).cnf?.jkt, await jwkThumbprint((await dpopKey(separate)).publicJwk));
    assert.equal((await client.fetch(bound, `${GUARDED}/x`)).status, 200);

    // An agent with a secret: a key pair the client generates, one for all its tokens.
    await register(client, "js-dpop-secret");
    const secretCreds = { agentId: "js-dpop-secret", agentSecret: SECRET, dpop: true };
    const session = client.agentSession(secretCreds, { refreshMarginMs: 2 * 3600_000 });
    const viaSession = await session.fetch(`${GUARDED}/x`);
    assert.equal(viaSession.status, 200);
    assert.equal((await viaSession.json())["X-Agent-Id"], "js-dpop-secret");
    const held = session.tokens;
    assert.equal(held.tokenType, "DPoP");
    const renewed = await session.getTokens();
    assert.notEqual(renewed.accessToken, held.accessToken, "renewed within the margin");
    assert.equal(renewed.dpopKey, held.dpopKey);
    assert.equal(claimsOf(renewed.accessToken).cnf?.jkt, await jwkThumbprint(renewed.dpopKey.publicJwk));
    assert.equal(await guardedStatus(renewed.accessToken), 401, "a bound token never works as Bearer");
  });

  test("DPoP with server nonces (dpop_nonce on; the API's guard has dpop required): one retry, then the nonce is kept", { skip: noNonceWorld }, async () => {
    const { client, seen } = recordingClient(NONCE_ISSUER);
    const pair = await generateKeyPair();
    await client.registerAgent({ agentId: "js-nonce", jwks: await publicJWKS(pair, "js-nonce-1"), modelName: "m", ownerName: "O", ownerEmail: "o@example.com" });
    seen.length = 0;
    const creds = { agentId: "js-nonce", ...pair, keyId: "js-nonce-1", dpop: true };
    const tokens = await client.authenticate(creds);
    assert.equal(tokens.tokenType, "DPoP");
    assert.deepEqual(seen.map((r) => r.status), [400, 200], "use_dpop_nonce, then the retry");
    assert.equal(seen[0].proof.nonce, undefined);
    assert.ok(seen[0].nonce);
    assert.equal(seen[1].proof.nonce, seen[0].nonce);
    assert.notEqual(seen[1].proof.jti, seen[0].proof.jti);

    // The kept nonce goes into the next proof to the issuer at once.
    seen.length = 0;
    await client.authenticate(creds);
    assert.deepEqual(seen.map((r) => r.status), [200]);
    assert.ok(seen[0].proof.nonce);

    // The API is another origin: its first call learns its nonce, the next uses it.
    seen.length = 0;
    const resp = await client.fetch(tokens, `${NONCE_GUARDED}/x`);
    assert.equal(resp.status, 200);
    assert.equal((await resp.json())["X-Agent-Id"], "js-nonce");
    assert.deepEqual(seen.map((r) => r.status), [401, 200]);
    assert.equal(seen[1].proof.nonce, seen[0].nonce);
    assert.ok(seen[1].proof.ath);
    seen.length = 0;
    assert.equal((await client.fetch(tokens, `${NONCE_GUARDED}/x`)).status, 200);
    assert.deepEqual(seen.map((r) => r.status), [200]);

    // A guard with dpop required refuses a bearer token outright.
    const plain = await client.authenticate({ agentId: "js-nonce", privateKey: pair.privateKey, keyId: "js-nonce-1" });
    assert.equal(plain.tokenType, "Bearer");
    const refused = await client.fetch(plain, `${NONCE_GUARDED}/x`);
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get("WWW-Authenticate") ?? "", /^DPoP /);
  });

  // In the world with nonces (and no rate limits, as a refused refresh
  // counts against the first world's budget): the code exchange and the
  // refreshes are retried with the issuer's nonce too.
  test("DPoP: a public client's refresh token is bound to the key of the code exchange", { skip: noNonceWorld }, async () => {
    const agentSide = new AuthAgentClient({ issuer: NONCE_ISSUER });
    await register(agentSide, "js-dpop-spa");
    const app = new AuthAgentClient({ issuer: NONCE_ISSUER, ...spa, dpop: true });
    const request = await app.createSignInUrl({ scope: "openid profile data:read" });
    const { tokens } = await app.handleCallback(await agentSide.signIn(request.url, { agentId: "js-dpop-spa", agentSecret: SECRET }));
    assert.equal(tokens.tokenType, "DPoP");
    assert.ok(tokens.refreshToken);
    // Another key cannot refresh it; the bound key can (the SDK proves it from the Tokens).
    const other = new AuthAgentClient({ issuer: NONCE_ISSUER, dpop: true });
    await rejects(other.refresh(tokens.refreshToken, { clientId: spa.clientId }), (e) => assert.ok(["invalid_grant", "invalid_dpop_proof"].includes(e.error), e.error));
    const refreshed = await app.refresh(tokens, { clientId: spa.clientId });
    assert.equal(refreshed.tokenType, "DPoP");
    assert.equal(refreshed.dpopKey, tokens.dpopKey);
    assert.equal((await app.fetch(refreshed, `${NONCE_GUARDED}/x`)).status, 200);
    assert.equal((await app.refresh(refreshed, { clientId: spa.clientId })).tokenType, "DPoP", "the rotated refresh token stays bound");
  });

  // Next to last: its two failed authentications come at its end, and with
  // the errors test's one they are this address's whole budget (3/m), after
  // which nothing from this address authenticates or registers for the rest
  // of the minute; only the rate-limit test, which wants it spent, follows.
  test("an agent with a key, no secret: register, authenticate, sign in, introspect, revoke, replace its keys", async () => {
    const client = new AuthAgentClient({ issuer: ISSUER });
    const pair = await generateKeyPair();
    const agent = await client.registerAgent({ agentId: "js-keyed", jwks: await publicJWKS(pair, "js-keyed-1"), modelName: "js-model", ownerName: "JS Owner", ownerEmail: "js@example.com" });
    assert.equal(agent.tokenEndpointAuthMethod, "private_key_jwt");
    assert.deepEqual(agent.kids, ["js-keyed-1"]);
    assert.equal(agent.agentSecret, undefined, "an agent with keys gets no secret");
    const creds = { agentId: "js-keyed", privateKey: pair.privateKey, keyId: "js-keyed-1" };

    // Every call signs a new assertion: the same credentials work again and again.
    const tokens = await client.authenticate(creds);
    assert.deepEqual(tokens.scopes(), ["profile", "data:read"]);
    assert.equal(await guardedStatus(tokens.accessToken), 200);
    assert.equal((await client.authenticate({ ...creds, scope: "data:read" })).scope, "data:read");
    const profile = await client.getProfile(tokens.accessToken);
    assert.equal(profile.tokenEndpointAuthMethod, "private_key_jwt");
    assert.deepEqual(profile.kids, ["js-keyed-1"]);
    const session = client.agentSession(creds, { refreshMarginMs: 2 * 3600_000 });
    assert.equal((await session.fetch(`${GUARDED}/x`)).status, 200);
    const first = await session.getAccessToken();
    assert.notEqual(await session.getAccessToken(), first, "each renewal signs a new assertion");

    // Sign in to the tiny website (the confidential demo-site) with the key.
    const login = await fetch(`${SITE}/login?scope=openid+profile+email`, { redirect: "manual" });
    assert.equal(login.status, 302);
    const redirect = await client.signIn(login.headers.get("Location"), creds);
    const done = await fetch(redirect, { headers: { Cookie: login.headers.get("Set-Cookie").split(";")[0] } });
    const body = await done.json();
    assert.equal(done.status, 200, JSON.stringify(body));
    assert.equal(body.sub, "js-keyed");
    assert.equal(body.claims.email, "js@example.com");

    // Introspection and revocation as itself: the agent's credentials (or
    // the same as a client's) sign assertions for those endpoints.
    assert.equal((await client.introspect(tokens.accessToken, creds)).active, true);
    await client.revoke(tokens.accessToken, { clientId: "js-keyed", privateKey: pair.privateKey, keyId: "js-keyed-1" });
    assert.equal((await client.introspect(tokens.accessToken, creds)).active, false);
    assert.equal(await guardedStatus(tokens.accessToken), 401);

    // Replace the keys (an Ed25519 key and a PS256 one), proving possession
    // of the current key; the new keys work, with or without a kid.
    const ed = await generateKeyPair({ algorithm: "EdDSA" });
    const ps = await generateKeyPair({ algorithm: "PS256" });
    const replaced = await client.replaceKeys({ keys: [await publicJWK(ed, "js-keyed-2"), await publicJWK(ps, "js-keyed-3")] }, creds);
    assert.deepEqual(replaced.kids, ["js-keyed-2", "js-keyed-3"]);
    assert.equal(replaced.tokenEndpointAuthMethod, "private_key_jwt");
    const next = { agentId: "js-keyed", privateKey: ed.privateKey, keyId: "js-keyed-2" };
    assert.equal(await guardedStatus((await client.authenticate(next)).accessToken), 200);
    assert.equal((await client.introspect((await client.authenticate({ agentId: "js-keyed", privateKey: ps.privateKey })).accessToken, next)).sub, "js-keyed");

    // The replaced key no longer works, and no secret ever does.
    await rejects(client.authenticate(creds), (e) => {
      assert.equal(e.error, "invalid_client");
      assert.equal(e.status, 401);
    });
    await rejects(client.authenticate({ agentId: "js-keyed", agentSecret: SECRET }), (e) => {
      assert.equal(e.error, "invalid_client");
      assert.equal(e.status, 401);
    });
  });

  // Last: it spends this address's budget of failed authentications.
  test("rate-limited: a 429 with its headers (the server runs with authentication 3/m)", async () => {
    const client = new AuthAgentClient({ issuer: ISSUER });
    let last;
    for (let i = 0; i < 5 && last?.status !== 429; i++) {
      await rejects(client.authenticate({ agentId: "js-limited", agentSecret: "Wrong-Secret-1!" }), (e) => {
        last = e;
      });
    }
    assert.equal(last.error, "rate_limit_exceeded");
    assert.equal(last.status, 429);
    assert.ok(last.retryAfter > 0);
    assert.equal(last.rateLimit.limit, 3);
    assert.equal(last.rateLimit.remaining, 0);
    assert.ok(last.rateLimit.reset instanceof Date && last.rateLimit.reset.getTime() > Date.now() - 1000);
  });
});
