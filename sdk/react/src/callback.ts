import { AuthAgentError, type IDTokenClaims, Tokens } from "@authagent/sdk";

/** The parameters the issuer adds to the redirect URI (RFC 6749 §4.1.2, RFC 9207), removed once read. */
const callbackParams = ["code", "state", "iss", "error", "error_description", "error_uri", "session_state"];

/**
 * Whether `href` is a return from the issuer: the redirect URI (same origin
 * and path) carrying a `code` or an `error`. Other pages of the site, and the
 * redirect URI opened on its own, are left alone.
 */
export function isCallback(href: string, redirectUri: string): boolean {
  let here: URL;
  let target: URL;
  try {
    here = new URL(href);
    target = new URL(redirectUri);
  } catch {
    return false;
  }
  return (
    here.origin === target.origin &&
    here.pathname === target.pathname &&
    (here.searchParams.has("code") || here.searchParams.has("error"))
  );
}

/** `href` without the callback parameters, so a reload or a shared link never replays a spent code. */
export function withoutCallbackParams(href: string): string {
  const u = new URL(href);
  for (const p of callbackParams) {
    u.searchParams.delete(p);
  }
  return u.href;
}

/** What the provider keeps of a sign-in: the tokens and the verified ID-token claims they came with. */
export interface StoredSession {
  tokens: Tokens;
  user: IDTokenClaims | null;
}

/** The sessionStorage key of a client's tokens (one per issuer and client, so two providers on a page do not collide). */
export function storageKey(issuer: string, clientId: string): string {
  return `authagent.session.${issuer.replace(/\/+$/, "")}.${clientId}`;
}

/**
 * Reads a kept session. Anything unreadable counts as none and is dropped, as
 * is an access token that has expired with no refresh token to renew it: the
 * user must not look signed in with a token every API refuses.
 */
export function readSession(storage: Storage, key: string): StoredSession | null {
  const raw = storage.getItem(key);
  if (raw === null) {
    return null;
  }
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v === "object" && v !== null) {
      const rec = v as Record<string, unknown>;
      const tokens = Tokens.fromJSON(rec.tokens);
      if (tokens && (tokens.refreshToken !== undefined || tokens.valid())) {
        const user = typeof rec.user === "object" && rec.user !== null ? (rec.user as IDTokenClaims) : null;
        return { tokens, user };
      }
    }
  } catch {
    // Fall through: a damaged entry is dropped like an expired one.
  }
  storage.removeItem(key);
  return null;
}

/** Keeps a session; the refresh token rotates, so this runs after every refresh. */
export function writeSession(storage: Storage, key: string, session: StoredSession): void {
  storage.setItem(key, JSON.stringify(session));
}

/**
 * Every failure the provider reports is an `AuthAgentError`, so an app can
 * switch on `error.error`; a failure of the page itself (a storage that
 * refuses writes, say) becomes `client_error` with the original as `cause`.
 */
export function asAuthAgentError(err: unknown): AuthAgentError {
  if (err instanceof AuthAgentError) {
    return err;
  }
  return new AuthAgentError({
    error: "client_error",
    error_description: err instanceof Error ? err.message : String(err),
    cause: err,
  });
}
