// The button, the hook's contract and callback detection: no issuer needed
// (nothing here reaches the network).
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import React from "react";
import { isCallback, withoutCallbackParams } from "../dist/callback.js";
import { AuthAgentProvider, SignInWithAuthAgent, useAuthAgent } from "../dist/index.js";
import { goTo, mount } from "./harness.mjs";

const h = React.createElement;
// Never contacted: a click that reaches the network would fail the test by
// calling navigate or setting an error.
const props = { issuer: "http://127.0.0.1:9", clientId: "spa", redirectUri: "http://localhost:3000/callback" };

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
    window.sessionStorage.setItem("authagent.session.http://127.0.0.1:9.spa", "{not json");
    const { latest } = mount({ ...props, tokenStorage: "sessionStorage" });
    assert.equal(latest().user, null);
    assert.equal(window.sessionStorage.getItem("authagent.session.http://127.0.0.1:9.spa"), null);
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
