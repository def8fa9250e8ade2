// End to end: the provider, hook and button in jsdom against a real Caddy
// with the auth_agent app, and an agent answering the sign-in with
// @authagent/sdk. `go test ./e2e -run TestReactSDK` starts the server and sets:
//   AUTHAGENT_ISSUER               the issuer (http://127.0.0.1:PORT)
//   AUTHAGENT_GUARDED_URL          a site behind `agent_guard { scopes data:read }`
//   AUTHAGENT_PUBLIC_CLIENT_ID     a public client allowed openid profile email permissions data:read
//   AUTHAGENT_PUBLIC_REDIRECT_URI  its redirect URI, http://localhost:3000/callback (the jsdom page's origin)
//   AUTHAGENT_CLOSED_PORT          a port nothing listens on
// Without AUTHAGENT_ISSUER the tests skip.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { act, cleanup, fireEvent, screen, waitFor } from "@testing-library/react";
import { AuthAgentClient, AuthAgentError } from "@authagent/sdk";
import { goTo, mount, sessionStorageValues } from "./harness.mjs";

const env = process.env;
const issuer = env.AUTHAGENT_ISSUER;
const guardedUrl = env.AUTHAGENT_GUARDED_URL;
const clientId = env.AUTHAGENT_PUBLIC_CLIENT_ID ?? "spa";
const redirectUri = env.AUTHAGENT_PUBLIC_REDIRECT_URI ?? "http://localhost:3000/callback";
const scope = "openid profile email permissions data:read";
const props = { issuer, clientId, redirectUri, scope };

/** The agent's side: its own client of the issuer, and the one agent all tests sign in as (registration is rate-limited per IP). */
const agentClient = issuer ? new AuthAgentClient({ issuer }) : undefined;
const creds = { agentId: `react-e2e-${randomBytes(4).toString("hex")}`, agentSecret: "Test123456!" };

/** Waits long enough for a request to the issuer (the server is local). */
const waitLong = { timeout: 10_000, interval: 20 };

/** Lets the effects of the last render run (waitFor returns once the render is in, which can be before them). */
const settle = () => act(async () => {});

/** GETs the guarded API with a bearer token: the status, and the agent the API was told it serves (the test upstream echoes the X-Agent-Id the guard set). */
async function callGuarded(accessToken) {
  const resp = await fetch(`${guardedUrl}/x`, { headers: accessToken ? { Authorization: `Bearer ${accessToken}` } : {} });
  const text = await resp.text();
  let agent;
  try {
    agent = JSON.parse(text)["X-Agent-Id"];
  } catch {
    agent = undefined;
  }
  return { status: resp.status, agent };
}

/**
 * A `fetch` for the provider's `fetch` prop: the real one, counting the
 * authorization-code exchanges it carries. `exchanged` resolves to the first
 * exchange's answer as the issuer sent it; with `hold`, that answer reaches
 * the provider only after `release()`.
 */
function watchedFetch({ hold = false } = {}) {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  let answered;
  const exchanged = new Promise((resolve) => (answered = resolve));
  const watch = {
    exchanges: 0,
    exchanged,
    release,
    fetch: async (url, init) => {
      const exchange = init?.body instanceof URLSearchParams && init.body.get("grant_type") === "authorization_code";
      if (exchange) {
        watch.exchanges++;
      }
      const resp = await fetch(url, init);
      if (exchange) {
        answered(await resp.clone().json());
        if (hold) {
          await gate;
        }
      }
      return resp;
    },
  };
  return watch;
}

/** Clicks the sign-in button and resolves to the authorization URL the provider navigated to. */
async function clickSignIn(navigated) {
  fireEvent.click(screen.getByRole("button", { name: "Sign in with Auth Agent" }));
  await waitFor(() => assert.equal(navigated.length, 1), waitLong);
  return navigated[0];
}

/**
 * The whole round trip: click the button on the home page, let the agent
 * approve the authorization URL, come back at the redirect URI (a new page
 * load: a fresh provider) and wait for the sign-in to finish.
 */
async function signInThroughIssuer(extra = {}, options = {}) {
  goTo("/");
  const first = mount({ ...props, ...extra }, undefined, options);
  const authorizationUrl = await clickSignIn(first.navigated);
  const redirect = await agentClient.signIn(authorizationUrl, creds);
  assert.ok(redirect.startsWith(`${redirectUri}?`), redirect);
  goTo(redirect);
  const back = mount({ ...props, ...extra }, undefined, options);
  await waitFor(() => assert.equal(back.latest().user?.sub, creds.agentId), waitLong);
  await settle();
  return { authorizationUrl, redirect, ...back };
}

describe("@authagent/react against a real issuer", { skip: issuer ? false : "AUTHAGENT_ISSUER is not set" }, () => {
  before(async () => {
    const agent = await agentClient.registerAgent({
      ...creds,
      modelName: "react-e2e",
      ownerName: "React E2E",
      ownerEmail: "react-e2e@example.com",
    });
    assert.equal(agent.agentId, creds.agentId);
  });

  afterEach(() => {
    cleanup();
    goTo("/");
    window.sessionStorage.clear();
  });

  after(() => cleanup());

  test("signs in with the button, calls the API, signs out and the token is revoked", async () => {
    const { authorizationUrl, redirect, seen, latest } = await signInThroughIssuer();

    // The authorization request the button made: PKCE S256, state, nonce, this client.
    const q = new URL(authorizationUrl).searchParams;
    assert.ok(authorizationUrl.startsWith(`${issuer}/oauth2/authorize?`), authorizationUrl);
    assert.equal(q.get("client_id"), clientId);
    assert.equal(q.get("redirect_uri"), redirectUri);
    assert.equal(q.get("scope"), scope);
    assert.equal(q.get("code_challenge_method"), "S256");
    assert.ok(q.get("state") && q.get("nonce") && q.get("code_challenge"));
    assert.equal(new URL(redirect).searchParams.get("state"), q.get("state"));

    // The page loaded at the callback showed isLoading before the user.
    assert.equal(seen[0].isLoading, true);
    assert.equal(seen[0].user, null);
    const auth = latest();
    assert.equal(auth.isLoading, false);
    assert.equal(auth.error, null);
    assert.equal(screen.getByTestId("user").textContent, creds.agentId);

    // user: the verified ID-token claims.
    assert.equal(auth.user.iss, issuer);
    assert.equal(auth.user.aud, clientId);
    assert.equal(auth.user.nonce, q.get("nonce"));
    assert.equal(auth.user.email, "react-e2e@example.com");
    assert.equal(auth.tokens.idToken.split(".").length, 3);
    assert.ok(auth.tokens.refreshToken);
    assert.deepEqual(auth.tokens.scopes().sort(), scope.split(" ").sort());

    // The code, state and iss are gone from the address bar; the pending sign-in from sessionStorage.
    assert.equal(window.location.href, redirectUri);
    assert.equal(window.sessionStorage.getItem(`authagent.signin.${q.get("state")}`), null);

    // Memory by default: no token in sessionStorage.
    for (const v of sessionStorageValues()) {
      assert.ok(!v.includes(auth.accessToken) && !v.includes(auth.tokens.refreshToken), "a token is in sessionStorage");
    }

    // The access token works at the guarded API.
    assert.deepEqual(await callGuarded(auth.accessToken), { status: 200, agent: creds.agentId });
    assert.equal(await auth.getAccessToken(), auth.accessToken);

    // Sign out: state cleared, both tokens revoked at the issuer.
    const { accessToken, tokens } = auth;
    await act(() => auth.signOut());
    assert.equal(latest().user, null);
    assert.equal(latest().accessToken, null);
    assert.equal(latest().error, null);
    assert.equal(screen.getByTestId("user").textContent, "signed out");
    assert.equal(await latest().getAccessToken(), null);
    await waitFor(async () => assert.equal((await callGuarded(accessToken)).status, 401), waitLong);
    const introspection = await agentClient.introspect(accessToken, { clientId: creds.agentId, clientSecret: creds.agentSecret });
    assert.equal(introspection.active, false);
    await assert.rejects(agentClient.refresh(tokens.refreshToken, { clientId }), (err) => {
      assert.ok(err instanceof AuthAgentError);
      assert.equal(err.error, "invalid_grant");
      return true;
    });
  });

  test("under StrictMode (effects run twice) the code is exchanged once", async () => {
    const watch = watchedFetch();
    const { seen, latest } = await signInThroughIssuer({ fetch: watch.fetch }, { strict: true });
    // Both runs of the effect happen at mount, so a second exchange would
    // have been sent before the first one's answer and ID token were through.
    assert.equal(watch.exchanges, 1);
    // A second attempt refused (the pending sign-in is used once) would have shown an error, if only for a render.
    assert.deepEqual(seen.filter((s) => s.error !== null).map((s) => s.error.error), []);
    assert.equal(window.location.href, redirectUri);
    assert.deepEqual(await callGuarded(latest().accessToken), { status: 200, agent: creds.agentId });
  });

  for (const [what, end, shown] of [
    ["signOut()", (page) => act(() => page.latest().signOut()), true],
    ["the provider unmounts", () => cleanup(), false],
  ]) {
    test(`a code exchange that finishes after ${what} signs nobody in and its tokens are revoked`, async () => {
      goTo("/");
      const first = mount(props);
      goTo(await agentClient.signIn(await clickSignIn(first.navigated), creds));
      const watch = watchedFetch({ hold: true });
      const back = mount({ ...props, fetch: watch.fetch });
      const issued = await watch.exchanged; // The issuer has answered; the provider has not seen it yet.
      assert.equal(back.latest().isLoading, true);
      await end(back);
      const ended = back.seen.length;
      watch.release();

      await waitFor(async () => assert.equal((await callGuarded(issued.access_token)).status, 401), waitLong);
      await assert.rejects(agentClient.refresh(issued.refresh_token, { clientId }), { name: "AuthAgentError", error: "invalid_grant" });
      await settle();
      assert.deepEqual(back.seen.slice(ended).filter((s) => s.user !== null || s.accessToken !== null), [], "signed in after all");
      if (shown) {
        const { user, accessToken, isLoading, error } = back.latest();
        assert.deepEqual({ user, accessToken, isLoading, error }, { user: null, accessToken: null, isLoading: false, error: null });
        assert.equal(screen.getByTestId("user").textContent, "signed out");
      }
    });
  }

  test("with tokenStorage=\"sessionStorage\" the tokens are kept, restored on a new page and removed on sign-out", async () => {
    const { latest } = await signInThroughIssuer({ tokenStorage: "sessionStorage" });
    const key = `authagent.session.${issuer}.${clientId}`;
    const kept = JSON.parse(window.sessionStorage.getItem(key));
    assert.equal(kept.tokens.accessToken, latest().accessToken);
    assert.equal(kept.tokens.refreshToken, latest().tokens.refreshToken);
    assert.equal(kept.user.sub, creds.agentId);

    // A new page load (not a callback): the same user and token, at once.
    goTo("/");
    const again = mount({ ...props, tokenStorage: "sessionStorage" });
    assert.equal(again.seen[0].isLoading, false);
    assert.equal(again.seen[0].user.sub, creds.agentId);
    assert.equal(again.seen[0].accessToken, kept.tokens.accessToken);
    assert.deepEqual(await callGuarded(again.latest().accessToken), { status: 200, agent: creds.agentId });

    // A callback this tab never started (a forged link) is refused and leaves the kept session alone.
    goTo(`${redirectUri}?code=made-up&state=not-mine&iss=${encodeURIComponent(issuer)}`);
    const forged = mount({ ...props, tokenStorage: "sessionStorage" });
    assert.equal(forged.seen[0].isLoading, true);
    await waitFor(() => assert.equal(forged.latest().isLoading, false), waitLong);
    await settle();
    assert.equal(forged.latest().error?.error, "invalid_callback");
    assert.equal(forged.latest().user?.sub, creds.agentId);
    assert.equal(forged.latest().accessToken, kept.tokens.accessToken);
    assert.equal(JSON.parse(window.sessionStorage.getItem(key)).tokens.accessToken, kept.tokens.accessToken);
    assert.equal(window.location.href, redirectUri);

    // Without the opt-in, a new page does not read them.
    const memory = mount(props);
    assert.equal(memory.latest().user, null);
    assert.notEqual(window.sessionStorage.getItem(key), null);

    const withStorage = mount({ ...props, tokenStorage: "sessionStorage" });
    await act(() => withStorage.latest().signOut());
    assert.equal(window.sessionStorage.getItem(key), null);
    await waitFor(async () => assert.equal((await callGuarded(kept.tokens.accessToken)).status, 401), waitLong);

    // Kept tokens whose refresh token the issuer no longer honours: the
    // renewal is refused, so the provider signs out with that error.
    kept.tokens.expiresAt = Date.now() + 500;
    window.sessionStorage.setItem(key, JSON.stringify(kept));
    const stale = mount({ ...props, tokenStorage: "sessionStorage", refreshMarginMs: 1_000 });
    assert.equal(stale.seen[0].user.sub, creds.agentId);
    await waitFor(() => assert.equal(stale.latest().user, null), waitLong);
    await settle();
    assert.equal(stale.latest().error?.error, "invalid_grant");
    assert.equal(stale.latest().accessToken, null);
    assert.equal(window.sessionStorage.getItem(key), null);
  });

  test("renews the access token with the refresh token before it expires", async () => {
    const { latest } = await signInThroughIssuer({ tokenStorage: "sessionStorage" });
    const key = `authagent.session.${issuer}.${clientId}`;
    const old = latest().tokens;

    // Make the kept token look 1.5 s from expiry; with a 1 s margin the new
    // page's provider must renew it about 0.5 s after it starts.
    const kept = JSON.parse(window.sessionStorage.getItem(key));
    kept.tokens.expiresAt = Date.now() + 1_500;
    window.sessionStorage.setItem(key, JSON.stringify(kept));
    goTo("/");
    const page = mount({ ...props, tokenStorage: "sessionStorage", refreshMarginMs: 1_000 });
    assert.equal(page.seen[0].accessToken, old.accessToken);

    await waitFor(() => assert.notEqual(page.latest().accessToken, old.accessToken), waitLong);
    await settle();
    const renewed = page.latest();
    assert.equal(renewed.error, null);
    assert.equal(renewed.user.sub, creds.agentId);
    assert.notEqual(renewed.tokens.refreshToken, old.refreshToken, "the refresh token rotates");
    assert.ok(renewed.tokens.expiresAt > Date.now() + 60_000);
    assert.deepEqual(await callGuarded(renewed.accessToken), { status: 200, agent: creds.agentId });
    assert.equal(await renewed.getAccessToken(), renewed.accessToken, "no second renewal while the new token is fresh");

    // The renewal was kept for the next page, rotated refresh token included.
    const stored = JSON.parse(window.sessionStorage.getItem(key));
    assert.equal(stored.tokens.accessToken, renewed.accessToken);
    assert.equal(stored.tokens.refreshToken, renewed.tokens.refreshToken);

    // The old refresh token was spent by that renewal (using it again is refused).
    await assert.rejects(agentClient.refresh(old.refreshToken, { clientId }), { name: "AuthAgentError", error: "invalid_grant" });
  });

  test("a sign-in cancelled on the issuer's page comes back as access_denied", async () => {
    goTo("/");
    const first = mount(props);
    const authorizationUrl = await clickSignIn(first.navigated);

    // What a browser sees at the authorization URL: the sign-in page with its cancel link.
    const resp = await fetch(authorizationUrl, { headers: { Accept: "text/html" } });
    assert.equal(resp.status, 200);
    const page = new window.DOMParser().parseFromString(await resp.text(), "text/html");
    const cancel = page.getElementById("cancel")?.getAttribute("href");
    assert.ok(cancel?.startsWith(`${redirectUri}?`), cancel);
    assert.equal(new URL(cancel).searchParams.get("error"), "access_denied");

    goTo(cancel);
    const back = mount(props);
    assert.equal(back.seen[0].isLoading, true);
    await waitFor(() => assert.equal(back.latest().isLoading, false), waitLong);
    const { error, user, accessToken } = back.latest();
    assert.ok(error instanceof AuthAgentError);
    assert.equal(error.error, "access_denied");
    assert.match(error.error_description, /cancelled/);
    assert.equal(user, null);
    assert.equal(accessToken, null);
    assert.equal(screen.getByRole("alert").textContent, "access_denied");
    assert.equal(window.location.href, redirectUri);
    assert.deepEqual(sessionStorageValues(), [], "the pending sign-in was used up");
  });

  test("a callback with a state this browser never started is refused", async () => {
    goTo(`${redirectUri}?code=made-up&state=not-mine&iss=${encodeURIComponent(issuer)}`);
    const back = mount(props);
    await waitFor(() => assert.equal(back.latest().isLoading, false), waitLong);
    const { error, accessToken } = back.latest();
    assert.ok(error instanceof AuthAgentError);
    assert.equal(error.error, "invalid_callback");
    assert.match(error.error_description, /state/);
    assert.equal(accessToken, null);
    assert.equal(window.location.href, redirectUri);
  });

  test("an unreachable issuer surfaces as network_error", { skip: env.AUTHAGENT_CLOSED_PORT ? false : "AUTHAGENT_CLOSED_PORT is not set" }, async () => {
    goTo("/");
    const page = mount({ ...props, issuer: `http://127.0.0.1:${env.AUTHAGENT_CLOSED_PORT}` });
    fireEvent.click(screen.getByRole("button", { name: "Sign in with Auth Agent" }));
    await waitFor(() => assert.ok(page.latest().error), waitLong);
    const { error, isLoading } = page.latest();
    assert.ok(error instanceof AuthAgentError);
    assert.equal(error.error, "network_error");
    assert.equal(error.status, 0);
    assert.equal(isLoading, false);
    assert.deepEqual(page.navigated, []);
    assert.equal(screen.getByRole("alert").textContent, "network_error");
  });
});
