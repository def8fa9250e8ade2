import {
  AuthAgentClient,
  type AuthAgentError,
  type IDTokenClaims,
  type SignInOptions,
  type TokenSession,
  type Tokens,
  type TransactionStorage,
} from "@authagent/sdk";
import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
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
  /** Sends the browser to the authorization URL (default `window.location.assign`); tests and routers replace it. */
  navigate?: (url: string) => void;
  /** Renew the access token this long before it expires, in ms (default 60 000; capped at half the token's lifetime). */
  refreshMarginMs?: number;
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
  /** True while a sign-in is being prepared or finished at the redirect URI. */
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
 * Makes "Sign in with Auth Agent" available below it: `useAuthAgent()` and
 * `<SignInWithAuthAgent>`. When the page is the redirect URI with a `code`
 * or `error`, it finishes the sign-in (state, PKCE, ID-token verification)
 * and removes those parameters from the address bar. It keeps the access
 * token fresh with the refresh token, before it expires.
 *
 * The pending sign-in (state, nonce, PKCE verifier) is kept in
 * `sessionStorage`: the browser leaves the page for the issuer and comes
 * back to a new one, so memory would not survive. It is used once.
 */
export function AuthAgentProvider(props: AuthAgentProviderProps): ReactNode {
  const { issuer, clientId, redirectUri, scope, tokenStorage = "memory", navigate = assignLocation, refreshMarginMs = 60_000 } = props;
  const client = useMemo(
    () => new AuthAgentClient({ issuer, clientId, redirectUri, transactionStorage: pendingSignIns }),
    [issuer, clientId, redirectUri],
  );
  const key = storageKey(issuer, clientId);
  const persist = tokenStorage === "sessionStorage";

  const [state, setState] = useState<State>(() => {
    if (typeof window === "undefined") {
      return signedOut; // Rendered on a server: the browser's first render takes over.
    }
    // A kept session stays until a callback replaces it: a forged or stale
    // callback link must not sign the user out.
    const kept = persist ? readSession(window.sessionStorage, key) : null;
    return { ...signedOut, ...kept, isLoading: isCallback(window.location.href, redirectUri) };
  });

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

  // Finish a sign-in that came back to the redirect URI. The parameters are
  // removed at once: the code is single use, so a reload must not send it again.
  useEffect(() => {
    const href = window.location.href;
    if (!isCallback(href, redirectUri)) {
      return;
    }
    window.history.replaceState(window.history.state, "", withoutCallbackParams(href));
    client.handleCallback(href).then(
      ({ tokens, claims }) => {
        startSession(tokens);
        setState({ tokens, user: claims ?? null, isLoading: false, error: null });
      },
      (err: unknown) => setState((s) => ({ ...s, isLoading: false, error: asAuthAgentError(err) })),
    );
  }, [client, redirectUri, startSession]);

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
        setState((s) => ({ ...s, isLoading: false }));
      } catch (err) {
        setState((s) => ({ ...s, isLoading: false, error: asAuthAgentError(err) }));
      }
    },
    [client, scope, navigate],
  );

  const signOut = useCallback(async () => {
    const tokens = sessionRef.current?.tokens ?? state.tokens;
    sessionRef.current = null;
    setState(signedOut);
    if (!tokens) {
      return;
    }
    try {
      // Revoking the refresh token ends its whole family at the issuer; the
      // access token is revoked too, so it stops working at APIs at once.
      if (tokens.refreshToken) {
        await client.revoke(tokens.refreshToken, { clientId });
      }
      await client.revoke(tokens.accessToken, { clientId });
    } catch (err) {
      setState((s) => ({ ...s, error: asAuthAgentError(err) }));
    }
  }, [client, clientId, state.tokens]);

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
