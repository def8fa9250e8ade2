// Server rendering (Next.js and the like render client components on the
// server too): no window there, so the provider must render signed out
// instead of throwing. Run in a fresh Node without the jsdom setup.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";

const script = `
import React from "react";
import { renderToString } from "react-dom/server";
import { AuthAgentProvider, SignInWithAuthAgent } from "./dist/index.js";
const h = React.createElement;
process.stdout.write(typeof window + " " + renderToString(
  h(AuthAgentProvider, { issuer: "http://localhost:8080", clientId: "demo-site", redirectUri: "http://localhost:3000/callback" },
    h(SignInWithAuthAgent, { className: "signin" }))));
`;

test("renders on a server, signed out, without a window", async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
    cwd: new URL("..", import.meta.url),
  });
  assert.equal(stdout, 'undefined <button class="signin" type="button" aria-busy="false">Sign in with Auth Agent</button>');
});
