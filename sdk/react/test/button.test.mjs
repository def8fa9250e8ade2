// The button, the hook's contract and callback detection: no issuer needed
// (nothing here reaches the network).
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import React from "react";
import { isCallback, withoutCallbackParams } from "../dist/callback.js";
import { AuthAgentProvider, SignInWithAuthAgent, useAuthAgent } from "../dist/index.js";
import { discoveryOnly, goTo, mount } from "./harness.mjs";

const h = React.createElement;
// Never contacted: a click that reaches the network would fail the test by
// calling navigate or setting an error.
const props = { issuer: "http://127.0.0.1:9", clientId: "spa", redirectUri: "http://localhost:3000/callback" };
const sessionKey = "authagent.session.http://127.0.0.1:9.spa";

/** Lets the effects of the last render run. */
const settle = () => act(async () => {});

/** Keeps a session in sessionStorage as the provider would, its access token expiring `inMs` from now. */
function keepSession(inMs, { refreshToken } = {}) {
  const tokens = { accessToken: "at-1", tokenType: "Bearer", expiresIn: 3600, scope: "openid", expiresAt: Date.now() + inMs, refreshToken };
  window.sessionStorage.setItem(sessionKey, JSON.stringify({ tokens, user: { sub: "agent-1" } }));
}

afterEach(() => {
  cleanup();
  goTo("/");
  window.sessionStorage.clear();
});

describe("SignInWithAuthAgent", () => {
  test("is a button named by its default label", () => {
    mount(props, h(SignInWithAuthAgent));
    const button = screen.getByRole("button", { name: "Sign in with Auth Agent" });
    assert.equal(button.getAttribute("type"), "button");
    assert.equal(button.disabled, false);
    assert.equal(button.getAttribute("aria-busy"), "false");
  });

  test("takes a label, classes and other button attributes", () => {
    mount(
      props,
      h(SignInWithAuthAgent, { label: "Continue with your agent", className: "btn btn-primary", id: "signin", title: "Auth Agent" }),
    );
    const button = screen.getByRole("button", { name: "Continue with your agent" });
    assert.equal(button.className, "btn btn-primary");
    assert.equal(button.id, "signin");
    assert.equal(button.title, "Auth Agent");
    assert.equal(screen.queryByRole("button", { name: "Sign in with Auth Agent" }), null);
  });

  test("an icon-only label gets its accessible name from aria-label", () => {
    mount(props, h(SignInWithAuthAgent, { label: h("svg", { "aria-hidden": "true" }), "aria-label": "Sign in with Auth Agent" }));
    assert.ok(screen.getByRole("button", { name: "Sign in with Auth Agent" }));
  });

  test("an onClick that prevents the default keeps the sign-in from starting", async () => {
    let clicked = 0;
    const states = [];
    function Probe() {
      states.push(useAuthAgent());
      return null;
    }
    const { navigated } = mount(
      props,
      h(
        React.Fragment,
        null,
        h(Probe),
        h(SignInWithAuthAgent, {
          onClick: (e) => {
            clicked++;
            e.preventDefault();
          },
        }),
      ),
    );
    fireEvent.click(screen.getByRole("button"));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(clicked, 1);
    assert.deepEqual(navigated, []);
    // A started sign-in would have shown isLoading, then the unreachable issuer's network_error.
    assert.equal(states.length, 1);
    assert.equal(states[0].isLoading, false);
    assert.equal(states[0].error, null);
  });

  test("a click starts the sign-in and its failure lands in error", async () => {
    const states = [];
    function Probe() {
      states.push(useAuthAgent());
      return null;
    }
    const { navigated } = mount(props, h(React.Fragment, null, h(Probe), h(SignInWithAuthAgent)));
    fireEvent.click(screen.getByRole("button"));
    await waitFor(() => assert.equal(states.at(-1).error?.error, "network_error"));
    assert.ok(states.some((s) => s.isLoading), "isLoading while the sign-in was prepared");
    assert.equal(states.at(-1).isLoading, false);
    assert.deepEqual(navigated, []);
  });

  test("a disabled button stays disabled", () => {
    mount(props, h(SignInWithAuthAgent, { disabled: true }));
    assert.equal(screen.getByRole("button").disabled, true);
  });

  test("while busy it keeps focus and its name, says aria-disabled, and ignores clicks", async () => {
    let clicked = 0;
    const { navigated } = mount({ ...props, fetch: discoveryOnly(props.issuer).fetch }, h(SignInWithAuthAgent, { onClick: () => clicked++ }));
    const button = screen.getByRole("button", { name: "Sign in with Auth Agent" });
    assert.equal(button.getAttribute("aria-disabled"), null);
    button.focus();
    fireEvent.click(button);
    await waitFor(() => assert.equal(navigated.length, 1));
    await settle();

    // Leaving for the issuer: busy, yet still in the tab order and focused.
    assert.equal(screen.getByRole("button", { name: "Sign in with Auth Agent" }), button);
    assert.equal(button.getAttribute("aria-busy"), "true");
    assert.equal(button.getAttribute("aria-disabled"), "true");
    assert.equal(button.disabled, false);
    assert.equal(button.tabIndex, 0);
    assert.equal(document.activeElement, button);

    fireEvent.click(button);
    await settle();
    assert.equal(navigated.length, 1, "a click while busy started another sign-in");
    assert.equal(clicked, 1, "a click while busy reached onClick, as a disabled button's would not");
  });
});

describe("useAuthAgent", () => {
  test("outside a provider it says where it belongs", () => {
    function Lost() {
      useAuthAgent();
      return null;
    }
    const quiet = console.error;
    console.error = () => {};
    try {
      assert.throws(() => render(h(Lost)), /useAuthAgent must be used inside <AuthAgentProvider>/);
    } finally {
      console.error = quiet;
    }
  });

  test("starts signed out, not loading, on a page that is not a callback", () => {
    goTo("/callback");
    const { latest } = mount(props);
    const auth = latest();
    assert.equal(auth.user, null);
    assert.equal(auth.accessToken, null);
    assert.equal(auth.tokens, null);
    assert.equal(auth.isLoading, false);
    assert.equal(auth.error, null);
    assert.equal(screen.getByTestId("user").textContent, "signed out");
    assert.equal(window.location.pathname, "/callback");
  });

  test("a restored session that is damaged counts as none and is dropped", () => {
    window.sessionStorage.setItem(sessionKey, "{not json");
    const { latest } = mount({ ...props, tokenStorage: "sessionStorage" });
    assert.equal(latest().user, null);
    assert.equal(window.sessionStorage.getItem(sessionKey), null);
  });

  test("a restored session still valid shows on the first render", () => {
    keepSession(60_000);
    const { seen } = mount({ ...props, tokenStorage: "sessionStorage" });
    assert.equal(seen[0].user?.sub, "agent-1");
    assert.equal(seen[0].accessToken, "at-1");
    assert.equal(seen[0].isLoading, false);
    assert.notEqual(window.sessionStorage.getItem(sessionKey), null);
  });

  test("a restored session that expired with no refresh token counts as none and is dropped", async () => {
    keepSession(-1_000);
    const { seen, latest } = mount({ ...props, tokenStorage: "sessionStorage" });
    await settle();
    assert.ok(
      seen.every((s) => s.user === null && s.accessToken === null),
      "an expired session with no way to renew it appeared signed in",
    );
    assert.equal(latest().error, null);
    assert.equal(window.sessionStorage.getItem(sessionKey), null);
  });

  test("after navigating to the issuer it stays loading until the page comes back from the back/forward cache", async () => {
    const { navigated, latest } = mount({ ...props, fetch: discoveryOnly(props.issuer).fetch });
    fireEvent.click(screen.getByRole("button", { name: "Sign in with Auth Agent" }));
    await waitFor(() => assert.equal(navigated.length, 1));
    await settle();
    assert.ok(navigated[0].startsWith(`${props.issuer}/oauth2/authorize?`), navigated[0]);
    assert.equal(latest().isLoading, true, "the page is leaving: the button must stay busy");
    assert.equal(latest().error, null);

    // A first load of a page is not a return to this one.
    act(() => window.dispatchEvent(new window.PageTransitionEvent("pageshow", { persisted: false })));
    assert.equal(latest().isLoading, true);

    // Back from the issuer, restored as it was left: the user can start again.
    act(() => window.dispatchEvent(new window.PageTransitionEvent("pageshow", { persisted: true })));
    assert.equal(latest().isLoading, false);
    assert.equal(screen.getByRole("button", { name: "Sign in with Auth Agent" }).getAttribute("aria-disabled"), null);
    fireEvent.click(screen.getByRole("button", { name: "Sign in with Auth Agent" }));
    await waitFor(() => assert.equal(navigated.length, 2));
  });

  test("a navigate that throws ends the loading with the error", async () => {
    const { latest } = mount({
      ...props,
      fetch: discoveryOnly(props.issuer).fetch,
      navigate: () => {
        throw new Error("navigation blocked");
      },
    });
    fireEvent.click(screen.getByRole("button", { name: "Sign in with Auth Agent" }));
    await waitFor(() => assert.equal(latest().error?.error, "client_error"));
    assert.equal(latest().error.error_description, "navigation blocked");
    assert.equal(latest().isLoading, false);
  });
});

describe("callback detection", () => {
  const redirect = "http://localhost:3000/callback";
  for (const [href, want] of [
    ["http://localhost:3000/callback?code=c&state=s", true],
    ["http://localhost:3000/callback?error=access_denied&state=s", true],
    ["http://localhost:3000/callback", false],
    ["http://localhost:3000/callback?state=s", false],
    ["http://localhost:3000/other?code=c&state=s", false],
    ["http://localhost:3001/callback?code=c&state=s", false],
    ["https://localhost:3000/callback?code=c&state=s", false],
  ]) {
    test(`${href} → ${want}`, () => assert.equal(isCallback(href, redirect), want));
  }

  test("removes only the issuer's parameters", () => {
    assert.equal(
      withoutCallbackParams("http://localhost:3000/callback?code=c&state=s&iss=i&tab=2&error=e&error_description=d#top"),
      "http://localhost:3000/callback?tab=2#top",
    );
  });
});
