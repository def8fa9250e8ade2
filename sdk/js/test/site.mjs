// A tiny website that offers "Sign in with Auth Agent" with this SDK's
// website side, for the end-to-end tests of every SDK's agent side:
//
//   GET /login?scope=…  → 302 to the issuer's authorization URL
//                         (createSignInUrl: PKCE S256, state, nonce); the
//                         request is kept in this browser's session (a
//                         cookie), as a server that signs in many users
//                         must, against login CSRF
//   GET /callback?…     → handleCallback with that session's request
//                         (state, iss, code exchange, ID token verified);
//                         200 with the claims and the tokens as JSON (a
//                         test site shows them so the agent's tests can
//                         refresh and revoke them), or the error's status
//                         (400, or its own) and shape.
//
// Run: node test/site.mjs <port> <issuer> <client_id> <client_secret>
// It prints "listening <url>" once it accepts connections and stops on
// SIGTERM or when its standard input closes.

import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { AuthAgentClient, AuthAgentError } from "../dist/index.js";

const [port, issuer, clientId, clientSecret] = process.argv.slice(2);
if (!port || !issuer || !clientId) {
  console.error("usage: node test/site.mjs <port> <issuer> <client_id> [client_secret]");
  process.exit(2);
}
const origin = `http://127.0.0.1:${port}`;
const client = new AuthAgentClient({ issuer, clientId, clientSecret, redirectUri: `${origin}/callback` });

/** Sign-ins in progress, by session cookie. */
const sessions = new Map();

function sessionOf(req) {
  const m = /(?:^|;\s*)sid=([A-Za-z0-9_-]+)/.exec(req.headers.cookie ?? "");
  return m?.[1];
}

function reply(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(JSON.stringify(body));
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", origin);
  try {
    if (req.method === "GET" && url.pathname === "/login") {
      const signIn = await client.createSignInUrl({ scope: url.searchParams.get("scope") ?? "openid profile data:read" });
      const sid = randomBytes(16).toString("base64url");
      sessions.set(sid, signIn);
      res.writeHead(302, {
        Location: signIn.url,
        "Cache-Control": "no-store",
        "Set-Cookie": `sid=${sid}; Path=/; HttpOnly; SameSite=Lax`,
      });
      res.end();
      return;
    }
    if (req.method === "GET" && url.pathname === "/callback") {
      const sid = sessionOf(req);
      const request = sid === undefined ? undefined : sessions.get(sid);
      sessions.delete(sid);
      if (request === undefined) {
        reply(res, 400, { error: "invalid_callback", error_description: "no sign-in was started in this browser" });
        return;
      }
      const { tokens, claims } = await client.handleCallback(url, { request });
      reply(res, 200, {
        sub: claims?.sub,
        claims,
        scope: tokens.scope,
        access_token: tokens.accessToken,
        refresh_token: tokens.refreshToken,
        expires_in: tokens.expiresIn,
      });
      return;
    }
    reply(res, 404, { error: "not_found", error_description: "this site has /login and /callback" });
  } catch (err) {
    if (err instanceof AuthAgentError) {
      reply(res, err.status >= 400 ? err.status : 400, { error: err.error, error_description: err.error_description });
      return;
    }
    reply(res, 500, { error: "server_error", error_description: String(err) });
  }
});

server.listen(Number(port), "127.0.0.1", () => console.log(`listening ${origin}`));
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
