// Server rendering (Next.js and the like render client components on the
// server too): no window there, so the provider must render without one,
// and the browser must hydrate that HTML without a mismatch, whatever it
// finds in sessionStorage or the address bar. The HTML is made in a fresh
// Node without the jsdom setup, and hydrated here, in jsdom.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { afterEach, before, test } from "node:test";
import { promisify } from "node:util";
import { act } from "@testing-library/react";
import React from "react";
import { hydrateRoot } from "react-dom/client";
import { goTo } from "./harness.mjs";
import { App } from "./ssr-app.mjs";

const script = `
import React from "react";
import { renderToString } from "react-dom/server";
import { App } from "./test/ssr-app.mjs";
process.stdout.write(typeof window + " " + renderToString(React.createElement(App)));
`;

const sessionKey = "authagent.session.http://127.0.0.1:9.demo-site";
let serverHTML;

before(async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
    cwd: new URL("..", import.meta.url),
  });
  assert.ok(stdout.startsWith("undefined "), "the server side had a window");
  serverHTML = stdout.slice("undefined ".length);
});

afterEach(() => {
  document.body.replaceChildren();
  goTo("/");
  window.sessionStorage.clear();
});

/**
 * Hydrates the server's HTML in the page as a browser would, and resolves to
 * the container and every hydration problem React reported: recoverable
 * errors (a mismatch makes React 19 throw the HTML away and render afresh)
 * and console errors (how it reports mismatched attributes).
 */
async function hydrate() {
  const container = document.createElement("div");
  container.innerHTML = serverHTML;
  document.body.append(container);
  const problems = [];
  const consoleError = console.error;
  console.error = (...args) => problems.push(args.map(String).join(" "));
  let root;
  try {
    await act(async () => {
      root = hydrateRoot(container, React.createElement(App), { onRecoverableError: (err) => problems.push(String(err)) });
    });
    await act(async () => {});
  } finally {
    console.error = consoleError;
  }
  const text = (id) => container.querySelector(`[data-testid=${id}]`).textContent;
  return { container, problems, text, unmount: () => act(() => root.unmount()) };
}

test("renders on a server without a window: signed out, loading until the browser has looked", () => {
  assert.equal(
    serverHTML,
    '<main><p data-testid="user">signed out</p><p data-testid="loading">true</p><p role="alert"></p>' +
      '<button class="signin" type="button" aria-disabled="true" aria-busy="true">Sign in with Auth Agent</button></main>',
  );
});

test("hydrates on a page with nothing kept: no mismatch, then signed out and ready", async () => {
  const page = await hydrate();
  assert.deepEqual(page.problems, []);
  assert.equal(page.text("user"), "signed out");
  assert.equal(page.text("loading"), "false");
  assert.equal(page.container.querySelector("button").getAttribute("aria-disabled"), null);
  await page.unmount();
});

test("hydrates over a kept session: no mismatch, then the session is restored", async () => {
  const tokens = { accessToken: "at-1", tokenType: "Bearer", expiresIn: 3600, scope: "openid", expiresAt: Date.now() + 3_600_000 };
  window.sessionStorage.setItem(sessionKey, JSON.stringify({ tokens, user: { sub: "agent-1" } }));
  const page = await hydrate();
  assert.deepEqual(page.problems, []);
  assert.equal(page.text("user"), "agent-1");
  assert.equal(page.text("loading"), "false");
  await page.unmount();
});

test("hydrates at a callback: no mismatch, then the callback is handled", async () => {
  // A state this tab never started: refused before any request to the issuer.
  goTo("/callback?code=c&state=not-mine");
  const page = await hydrate();
  assert.deepEqual(page.problems, []);
  assert.equal(page.container.querySelector("[role=alert]").textContent, "invalid_callback");
  assert.equal(page.text("loading"), "false");
  assert.equal(window.location.href, "http://localhost:3000/callback");
  await page.unmount();
});
