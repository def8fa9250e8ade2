import {
  AuthAgentClient,
  type AuthAgentError,
  type IDTokenClaims,
  type SignInOptions,
  type TokenSession,
  type Tokens,
  type TransactionStorage,
} from "@authagent/sdk";
import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { asAuthAgentError, isCallback, readSession, storageKey, withoutCallbackParams, writeSession } from "./callback.js";

/** Where the provider keeps the tokens between page loads. */
export type TokenStorage = "memory" | "sessionStorage";

export interface AuthAgentProviderProps {
  /** The issuer's URL, as its discovery document names it (`http://localhost:8080`). */
  issuer: string;
  /** This website's client id; it must be a public client (a browser cannot keep a secret). */
  clientId: string;
  /** This website's registered redirect URI; the provider finishes sign-ins that land on it. */
  redirectUri: string;
  /** The scopes to ask for, space-separated or a list (default `openid profile`). */
  scope?: string | string[];
  /**
   * `"memory"` (default): the tokens live in this page only, so a reload
   * signs the user out but no script can read them from storage.
   * `"sessionStorage"`: they survive reloads in this tab, and any script
   * running on the origin can read them.
   */
  tokenStorage?: TokenStorage;
  /**
   * Sends the browser to the authorization URL (default `window.location.assign`); tests and routers replace it.
   * `isLoading` stays true after it returns, as the page is leaving; one that keeps the page (a test, a popup)
   * leaves it so until `signOut()` or a new provider.
   */
  navigate?: (url: string) => void;
  /** Renew the access token this long before it expires, in ms (default 60 000; capped at half the token's lifetime). */
  refreshMarginMs?: number;
  /**
   * The `fetch` the provider talks to the issuer with (default: the global one): for tests that watch or hold
   * requests, and for custom transports. Keep it stable (defined outside the component): a new one makes a new client.
   */
  fetch?: typeof fetch;
  children?: ReactNode;
}

/** What `signIn` accepts: everything of the SDK's sign-in options but the client's own identity. */
export type SignInParams = Pick<SignInOptions, "scope" | "resource" | "params">;

/** What `useAuthAgent()` returns. */
export interface AuthAgentContextValue {
  /** The verified ID-token claims of the signed-in agent (`sub` is its agent id), or null. */
  user: IDTokenClaims | null;
  /** The current access token, renewed before it expires, or null. */
  accessToken: string | null;
  /** All the tokens (access, refresh, ID), or null. */
  tokens: Tokens | null;
  /**
   * True while a sign-in is being prepared, leaving for the issuer, or finished at the redirect URI; and, on a
   * server-rendered page, until the browser has looked for a kept session and a callback.
   */
  isLoading: boolean;
  /** The last failure (`error.error` is the OAuth code, or `network_error`, `invalid_callback`, …), or null. */
  error: AuthAgentError | null;
  /** Starts "Sign in with Auth Agent": prepares PKCE, state and nonce, then navigates to the issuer. Failures land in `error`. */
  signIn(params?: SignInParams): Promise<void>;
  /** Forgets the tokens and revokes them at the issuer. Failures to revoke land in `error`; the user is signed out regardless. */
  signOut(): Promise<void>;
  /** A valid access token, renewed first if it is about to expire (for a request made right now), or null when signed out. */
  getAccessToken(): Promise<string | null>;
}

interface State {
  tokens: Tokens | null;
  user: IDTokenClaims | null;
  isLoading: boolean;
  error: AuthAgentError | null;
}

const signedOut: State = { tokens: null, user: null, isLoading: false, error: null };

/**
 * What a server renders, and the browser while it hydrates that HTML (the two
 * must match): signed out, and loading, since only the browser can see a kept
 * session or a callback, and an app's "signed out, go to the login page" must
 * not fire before it has looked.
 */
const notLookedYet: State = { ...signedOut, isLoading: true };

/** setTimeout's largest delay (about 24.8 days); longer ones fire at once. */
const maxTimerDelayMs = 2 ** 31 - 1;

/** `sessionStorage`, looked up when used rather than when the client is made: a server rendering the page has none. */
const pendingSignIns: TransactionStorage = {
  getItem: (key) => window.sessionStorage.getItem(key),
  setItem: (key, value) => window.sessionStorage.setItem(key, value),
  removeItem: (key) => window.sessionStorage.removeItem(key),
};

const AuthAgentContext = createContext<AuthAgentContextValue | null>(null);

/**
 * What the browser knows at a page load: the kept session (when the app opted
 * in), and whether this load is a callback to finish. A kept session stays
 * until a callback replaces it: a forged or stale callback link must not sign
 * the user out.
 */
function pageState(persist: boolean, key: string, redirectUri: string): State {
  const kept = persist ? readSession(window.sessionStorage, key) : null;
  return { ...signedOut, ...kept, isLoading: isCallback(window.location.href, redirectUri) };
}

const subscribeToNothing = () => () => {};

/**
 * True on a server and while React hydrates server-rendered HTML: exactly the
 * renders for which React takes `useSyncExternalStore`'s server snapshot. A
 * page rendered in the browser alone reads its state on the first render, so
 * it never shows a signed-out frame before a restored session.
 */
function useServerRendering(): boolean {
  return useSyncExternalStore(subscribeToNothing, () => false, () => true);
}

/**
 * Makes "Sign in with Auth Agent" available below it: `useAuthAgent()` and
 * `<SignInWithAuthAgent>`. When the page is the redirect URI with a `code`
 * or `error`, it finishes the sign-in (state, PKCE, ID-token verification)
 * and removes those parameters from the address bar. It keeps the access
 * token fresh with the refresh token, before it expires. Rendered on a
 * server, and while the browser hydrates that HTML, it is signed out and
 * loading; it looks at sessionStorage and the address bar right after.
 *
 * The pending sign-in (state, nonce, PKCE verifier) is kept in
 * `sessionStorage`: the browser leaves the page for the issuer and comes
 * back to a new one, so memory would not survive. It is used once.
 */
export function AuthAgentProvider(props: AuthAgentProviderProps): ReactNode {
  const { issuer, clientId, redirectUri, scope, tokenStorage = "memory", navigate = assignLocation, refreshMarginMs = 60_000 } = props;
  const fetcher = props.fetch;
  const client = useMemo(
    () => new AuthAgentClient({ issuer, clientId, redirectUri, transactionStorage: pendingSignIns, ...(fetcher ? { fetch: fetcher } : {}) }),
    [issuer, clientId, redirectUri, fetcher],
  );
  const key = storageKey(issuer, clientId);
  const persist = tokenStorage === "sessionStorage";

  const serverRendering = useServerRendering();
  const [state, setState] = useState<State>(() => (serverRendering ? notLookedYet : pageState(persist, key, redirectUri)));

  // Hydrated from server HTML: now look at the page. This runs before the
  // callback effect below removes the callback's parameters.
  const lookAfterHydration = useRef(serverRendering);
  useEffect(() => {
    if (lookAfterHydration.current) {
      lookAfterHydration.current = false;
      setState(pageState(persist, key, redirectUri));
    }
  }, [persist, key, redirectUri]);

  // False once the provider is gone for good (StrictMode's rehearsal unmount
  // is followed by a remount, which sets it again).
  const mounted = useRef(false);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);

  // Counts sign-outs: a sign-in that finishes after one belongs to a session
  // the user has ended.
  const signOuts = useRef(0);

  // Set once signIn has sent the browser to the issuer: the page is leaving.
  const leaving = useRef(false);

  // The session renewing the current tokens; replaced on every sign-in and
  // dropped on sign-out, so a refresh that finishes late for an old session
  // never brings its tokens back.
  const sessionRef = useRef<TokenSession | null>(null);

  const marginFor = useCallback((tokens: Tokens) => Math.min(refreshMarginMs, tokens.expiresIn * 500), [refreshMarginMs]);

  const startSession = useCallback(
    (tokens: Tokens): TokenSession => {
      const session: TokenSession = client.session(
        tokens,
        { clientId },
        {
          refreshMarginMs: marginFor(tokens),
          onTokens: (next) => {
            if (sessionRef.current === session) {
              setState((s) => ({ ...s, tokens: next, error: null }));
            }
          },
        },
      );
      sessionRef.current = session;
      return session;
    },
    [client, clientId, marginFor],
  );

  /** A renewal failed: a refused refresh token (expired, revoked, reused) ends the sign-in; anything else (the network) keeps it for a later try. */
  const renewalFailed = useCallback((session: TokenSession, err: unknown) => {
    if (sessionRef.current !== session) {
      return;
    }
    const e = asAuthAgentError(err);
    if (e.error === "invalid_grant") {
      sessionRef.current = null;
      setState({ ...signedOut, error: e });
    } else {
      setState((s) => ({ ...s, error: e }));
    }
  }, []);

  /** Revokes the refresh token, which ends its whole family at the issuer, and the access token, so it stops working at APIs at once. */
  const revoke = useCallback(
    async (tokens: Tokens) => {
      if (tokens.refreshToken) {
        await client.revoke(tokens.refreshToken, { clientId });
      }
      await client.revoke(tokens.accessToken, { clientId });
    },
    [client, clientId],
  );

  // Finish a sign-in that came back to the redirect URI. The parameters are
  // removed at once: the code is single use, so a reload must not send it again.
  useEffect(() => {
    const href = window.location.href;
    if (!isCallback(href, redirectUri)) {
      return;
    }
    window.history.replaceState(window.history.state, "", withoutCallbackParams(href));
    const signOutsBefore = signOuts.current;
    const stillWanted = () => mounted.current && signOuts.current === signOutsBefore;
    client.handleCallback(href).then(
      ({ tokens, claims }) => {
        if (!stillWanted()) {
          // Signed out (or the provider gone) meanwhile: nobody holds these
          // tokens now, so end them rather than leave them working.
          revoke(tokens).catch(() => {});
          return;
        }
        startSession(tokens);
        setState({ tokens, user: claims ?? null, isLoading: false, error: null });
      },
      (err: unknown) => {
        if (stillWanted()) {
          setState((s) => ({ ...s, isLoading: false, error: asAuthAgentError(err) }));
        }
      },
    );
  }, [client, redirectUri, startSession, revoke]);

  // Back from the issuer's page, the browser may restore this page from its
  // back/forward cache as it was left, loading: let the user start again.
  useEffect(() => {
    const shown = (event: PageTransitionEvent) => {
      if (event.persisted && leaving.current) {
        leaving.current = false;
        setState((s) => ({ ...s, isLoading: false }));
      }
    };
    window.addEventListener("pageshow", shown);
    return () => window.removeEventListener("pageshow", shown);
  }, []);

  // Renew the tokens shortly before they expire, and again after each renewal.
  useEffect(() => {
    const tokens = state.tokens;
    if (!tokens) {
      return;
    }
    const session = sessionRef.current?.tokens === tokens ? sessionRef.current : startSession(tokens);
    if (!tokens.refreshToken) {
      return;
    }
    // A few ms past the margin, so the session sees the token as due (timers may fire early by a tick).
    const delay = Math.min(Math.max(tokens.expiresAt - marginFor(tokens) - Date.now() + 20, 0), maxTimerDelayMs);
    const timer = setTimeout(() => {
      session.getTokens().catch((err: unknown) => renewalFailed(session, err));
    }, delay);
    return () => clearTimeout(timer);
  }, [state.tokens, startSession, marginFor, renewalFailed]);

  // Keep sessionStorage in step with the tokens when the app opted in.
  useEffect(() => {
    if (!persist) {
      return;
    }
    try {
      if (state.tokens) {
        writeSession(window.sessionStorage, key, { tokens: state.tokens, user: state.user });
      } else if (!state.isLoading) {
        window.sessionStorage.removeItem(key);
      }
    } catch (err) {
      setState((s) => ({ ...s, error: asAuthAgentError(err) }));
    }
  }, [persist, key, state.tokens, state.user, state.isLoading]);

  const signIn = useCallback(
    async (params: SignInParams = {}) => {
      setState((s) => ({ ...s, isLoading: true, error: null }));
      try {
        const requested = params.scope ?? scope;
        const request = await client.createSignInUrl({ ...params, ...(requested === undefined ? {} : { scope: requested }) });
        navigate(request.url);
        // Still loading: the page is leaving for the issuer, and a button
        // enabled meanwhile would start a second sign-in.
        leaving.current = true;
      } catch (err) {
        setState((s) => ({ ...s, isLoading: false, error: asAuthAgentError(err) }));
      }
    },
    [client, scope, navigate],
  );

  const signOut = useCallback(async () => {
    const tokens = sessionRef.current?.tokens ?? state.tokens;
    signOuts.current++;
    sessionRef.current = null;
    leaving.current = false;
    setState(signedOut);
    if (!tokens) {
      return;
    }
    try {
      await revoke(tokens);
    } catch (err) {
      setState((s) => ({ ...s, error: asAuthAgentError(err) }));
    }
  }, [revoke, state.tokens]);

  const getAccessToken = useCallback(async () => {
    const session = sessionRef.current;
    if (!session) {
      return null;
    }
    try {
      return await session.getAccessToken();
    } catch (err) {
      renewalFailed(session, err);
      return null;
    }
  }, [renewalFailed]);

  const value = useMemo<AuthAgentContextValue>(
    () => ({
      user: state.user,
      accessToken: state.tokens?.accessToken ?? null,
      tokens: state.tokens,
      isLoading: state.isLoading,
      error: state.error,
      signIn,
      signOut,
      getAccessToken,
    }),
    [state, signIn, signOut, getAccessToken],
  );

  return <AuthAgentContext.Provider value={value}>{props.children}</AuthAgentContext.Provider>;
}

/** The sign-in state and actions of the nearest `<AuthAgentProvider>`. */
export function useAuthAgent(): AuthAgentContextValue {
  const value = useContext(AuthAgentContext);
  if (value === null) {
    throw new Error("useAuthAgent must be used inside <AuthAgentProvider>");
  }
  return value;
}

function assignLocation(url: string): void {
  window.location.assign(url);
}
