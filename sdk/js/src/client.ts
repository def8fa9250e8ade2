import { type DPoPKey, DPoPNonces, type DPoPOption, dpopKey, sendWithProof } from "./dpop.js";
import { AuthAgentError, ErrorCodes, rateLimitOf, retryAfterOf } from "./errors.js";
import { type IDTokenClaims, type JWK, randomString, s256, verifyIDToken } from "./jose.js";
import { type JWKSet, clientAssertion, clientAssertionType, generateKeyPair } from "./keys.js";
import { fetchWithTokens, TokenSession } from "./session.js";
import { type TokenResponse, Tokens } from "./tokens.js";

/** A `Storage`-shaped place for pending sign-ins: `sessionStorage` fits. */
export interface TransactionStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface AuthAgentClientOptions {
  /** The issuer's URL, as discovery names it (`https://auth.example.com`). */
  issuer: string;
  /** The website's client id, for `createSignInUrl` and `handleCallback`. */
  clientId?: string;
  /** A confidential website's secret (server side only; never in a browser). */
  clientSecret?: string;
  /** The website's registered redirect URI. */
  redirectUri?: string;
  /**
   * Where `createSignInUrl` keeps the state, nonce and PKCE verifier until
   * the callback, by state. Default: the browser's `sessionStorage` (this
   * tab's, so a callback link someone else started finds nothing), or this
   * object's memory where there is none (Node). A server that signs in many
   * users must tie each request to its user's browser instead — keep the
   * request `createSignInUrl` returns in the user's session and pass it to
   * `handleCallback(url, {request})` — or a callback link made by someone
   * else would sign the victim in as the attacker's agent (login CSRF).
   */
  transactionStorage?: TransactionStorage;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Per-request time limit in milliseconds (default 30 000). */
  timeoutMs?: number;
  /** Allowed clock difference when checking ID tokens, in seconds (default 60). */
  clockToleranceSeconds?: number;
  /**
   * DPoP-bound tokens (RFC 9449) for every token request of this client
   * whose credentials do not say otherwise (their own `dpop`): `true` for
   * the agent's own key pair when the credentials carry both halves, else
   * a key pair this client generates once; or a key pair of your own.
   * Default: bearer tokens.
   */
  dpop?: DPoPOption;
}

/** An agent's id and secret. */
export interface SecretCredentials {
  agentId: string;
  agentSecret: string;
  /** DPoP-bound tokens: `true` for a key pair the client generates once, or a key pair of your own (see `DPoPOption`). */
  dpop?: DPoPOption | undefined;
  privateKey?: undefined;
  publicKey?: undefined;
  keyId?: undefined;
}

/**
 * An agent's id and private key, its public key registered (`jwks`): each
 * request carries a new assertion signed with the key (`private_key_jwt`),
 * so nothing the agent sends can be replayed. The key never leaves Web
 * Crypto, and need not be extractable.
 */
export interface KeyCredentials {
  agentId: string;
  /** ECDSA P-256, Ed25519 or RSA of 2048 to 4096 bits (see `generateKeyPair`). */
  privateKey: CryptoKey;
  /** The `kid` the key was registered with; without it the issuer tries each registered key of the algorithm. */
  keyId?: string | undefined;
  /** The public half, so that `dpop: true` binds tokens to the agent's own key pair (`{agentId, ...pair, keyId, dpop: true}`). */
  publicKey?: CryptoKey | undefined;
  /** DPoP-bound tokens: `true` for the agent's own key pair (with `publicKey`), or another key pair (see `DPoPOption`). */
  dpop?: DPoPOption | undefined;
  agentSecret?: undefined;
}

/** How an agent proves who it is: its secret, or a key it holds. */
export type Credentials = SecretCredentials | KeyCredentials;

/** The agent's own fields of a registration. */
export interface RegistrationFields {
  agentId: string;
  modelName: string;
  ownerName: string;
  ownerEmail: string;
}

/**
 * A new agent: with `agentSecret`, or with `jwks` (its public keys; it then
 * has no secret and authenticates with `KeyCredentials`), or with neither
 * (the issuer generates a secret, returned once).
 */
export type Registration = RegistrationFields & ({ agentSecret?: string; jwks?: undefined } | { jwks: JWKSet; agentSecret?: undefined });

/** An agent's profile. */
export interface Agent {
  agentId: string;
  modelName: string;
  ownerName: string;
  ownerEmail: string;
  permissions: string[];
  createdAt: string;
  updatedAt: string | undefined;
  /** Only from `registerAgent`, when the issuer generated the secret: keep it, it is never shown again. */
  agentSecret: string | undefined;
  /** How the agent authenticates: `client_secret_post` (a secret) or `private_key_jwt` (keys). */
  tokenEndpointAuthMethod: string;
  /** The `kid`s of its registered keys ("" for a key without one); empty for an agent with a secret. */
  kids: string[];
}

/** Fields of the profile to change; a new secret needs the current one. */
export interface ProfileUpdate {
  modelName?: string;
  ownerName?: string;
  ownerEmail?: string;
  agentSecret?: string;
  currentAgentSecret?: string;
}

/**
 * Who calls the token, revocation and introspection endpoints: a website's
 * client (no secret for a public one), or an agent as itself (its id and
 * secret, or its key). Every method that takes it also takes an agent's
 * `Credentials`.
 */
export type ClientAuth =
  | { clientId: string; clientSecret?: string | undefined; dpop?: DPoPOption | undefined; privateKey?: undefined; publicKey?: undefined; keyId?: undefined }
  | { clientId: string; privateKey: CryptoKey; keyId?: string | undefined; publicKey?: CryptoKey | undefined; dpop?: DPoPOption | undefined; clientSecret?: undefined };

/** RFC 7662's answer. */
export interface Introspection {
  active: boolean;
  scope?: string;
  client_id?: string;
  sub?: string;
  exp?: number;
  iat?: number;
  iss?: string;
  aud?: string | string[];
  jti?: string;
  token_type?: string;
  [member: string]: unknown;
}

/** The issuer's OpenID Provider Metadata (the fields the SDK reads, and the rest). */
export interface ProviderMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
  userinfo_endpoint?: string;
  revocation_endpoint?: string;
  introspection_endpoint?: string;
  authorization_response_iss_parameter_supported?: boolean;
  [member: string]: unknown;
}

export interface SignInOptions {
  /** Default: the client's `clientId`. */
  clientId?: string;
  /** Default: the client's `redirectUri`. */
  redirectUri?: string;
  /** Space-separated or a list; default `openid profile`. */
  scope?: string | string[];
  /** RFC 8707 resource indicators the tokens are for. */
  resource?: string | string[];
  /** Further authorization parameters (`prompt`, `login_hint`, …). */
  params?: Record<string, string>;
}

/** A started sign-in: where to send the browser, and what the callback is checked against. */
export interface SignInRequest {
  url: string;
  state: string;
  nonce: string;
  codeVerifier: string;
  clientId: string;
  redirectUri: string;
  scope: string;
  /** When it was made (ms since the epoch); a callback more than 10 minutes later is refused. */
  createdAt: number;
}

export interface CallbackOptions {
  /** The request `createSignInUrl` returned, when the app kept it itself (default: looked up by `state` in the transaction storage). */
  request?: SignInRequest;
  /** A confidential website's secret (default: the client's). */
  clientSecret?: string;
}

/** A finished sign-in: the tokens and the verified ID token's claims. */
export interface SignInResult {
  tokens: Tokens;
  /** The verified ID token's claims (`sub` is the agent's id), when `openid` was asked for. */
  claims: IDTokenClaims | undefined;
}

const transactionPrefix = "authagent.signin.";
const jwksMaxAgeMs = 10 * 60 * 1000;
const transactionLifetimeMs = 10 * 60 * 1000;

/**
 * A client of one Auth Agent issuer: the agent side (register, authenticate,
 * sign in to websites, profile, refresh, revoke, introspect) and the website
 * side (`createSignInUrl`, `handleCallback`). Safe to share.
 */
export class AuthAgentClient {
  readonly issuer: string;
  private readonly origin: string;
  private readonly options: AuthAgentClientOptions;
  private readonly fetcher: typeof fetch;
  private readonly transactions: TransactionStorage;
  private metadata: Promise<ProviderMetadata> | undefined;
  private jwks: { keys: JWK[]; fetchedAt: number } | undefined;
  /** The servers' latest DPoP nonces, by origin: the issuer's and each API's. */
  private readonly nonces = new DPoPNonces();
  /** The key pair `dpop: true` binds tokens to when the credentials hold none, made on first use. */
  private generatedDPoPKey: Promise<DPoPKey> | undefined;

  constructor(options: AuthAgentClientOptions) {
    let u: URL;
    try {
      u = new URL(options.issuer);
    } catch (err) {
      throw new TypeError(`AuthAgentClient: issuer ${JSON.stringify(options.issuer)} is not a URL`, { cause: err });
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") {
      throw new TypeError("AuthAgentClient: the issuer must be an http(s) URL");
    }
    this.issuer = options.issuer.replace(/\/+$/, "");
    this.origin = u.origin;
    this.options = options;
    this.fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.transactions = options.transactionStorage ?? browserSessionStorage() ?? memoryStorage();
  }

  // ---- the agent side ----

  /** Registers a new agent (`POST /api/register-agent`), with a secret or with public keys (`jwks`, from `publicJWKS`). */
  async registerAgent(reg: Registration): Promise<Agent> {
    const body: Record<string, unknown> = {
      agent_id: reg.agentId,
      model_name: reg.modelName,
      owner_name: reg.ownerName,
      owner_email: reg.ownerEmail,
    };
    if (reg.agentSecret !== undefined && reg.jwks !== undefined) {
      throw new TypeError("registerAgent: agentSecret or jwks, not both");
    }
    if (reg.agentSecret !== undefined) {
      body.agent_secret = reg.agentSecret;
    }
    if (reg.jwks !== undefined) {
      body.jwks = reg.jwks;
    }
    return agentOf(await this.callAPI("POST", "/api/register-agent", { body: async () => body }));
  }

  /**
   * Replaces the keys of an agent that holds keys (`PUT /api/agents/keys`)
   * with `jwks`, proving possession of a key it holds now (`creds`; a token
   * alone never changes keys). Keys left out of `jwks` stop working at once:
   * to rotate without a gap, include the old key, switch, then replace again.
   */
  async replaceKeys(jwks: JWKSet, creds: KeyCredentials): Promise<Agent> {
    const body: Record<string, unknown> = { jwks, ...(await this.agentFields(creds, "/api/agents/keys")) };
    return agentOf(await this.callAPI("PUT", "/api/agents/keys", { body: async () => body }));
  }

  /**
   * Gets an access token for the agent itself (`POST /api/agent-auth`);
   * scope defaults to `profile` and the agent's permissions. With `dpop`
   * (here or in the client's options) the request carries a proof and the
   * token is bound to its key (`tokens.dpopKey`).
   */
  async authenticate(creds: Credentials & { scope?: string | string[]; resource?: string }): Promise<Tokens> {
    const dpop = await this.dpopKeyFor(creds.dpop, clientAuthOf(creds));
    const data = await this.callAPI("POST", "/api/agent-auth", {
      // A new assertion for each attempt: a nonce retry must not replay one.
      body: async () => {
        const body: Record<string, unknown> = await this.agentFields(creds, "/api/agent-auth");
        if (creds.scope !== undefined) {
          body.scope = joinScope(creds.scope);
        }
        if (creds.resource !== undefined) {
          body.resource = creds.resource;
        }
        return body;
      },
      dpop,
    });
    return Tokens.fromResponse(tokenResponseOf(data), Date.now(), dpop);
  }

  /**
   * Answers a website's "Sign in with Auth Agent" as the agent, without a
   * browser: opens `authorizationUrl` (which must be on this issuer: the
   * credentials go nowhere else, and redirects are never followed), approves
   * the request and resolves to the URL the browser would be sent to — the
   * website's redirect URI with the code, state and iss.
   */
  async signIn(authorizationUrl: string, creds: Credentials): Promise<string> {
    let u: URL;
    try {
      u = new URL(authorizationUrl);
    } catch {
      throw new AuthAgentError({ error: "invalid_request", error_description: "the authorization URL is not a URL" });
    }
    if (u.origin !== this.origin) {
      throw new AuthAgentError({
        error: "invalid_request",
        error_description: `the authorization URL is not on this issuer (${this.issuer})`,
      });
    }
    const resp = await this.send(u.href, { method: "GET", headers: { Accept: "application/json" }, redirect: "manual" });
    if (resp.type === "opaqueredirect" || (resp.status >= 300 && resp.status < 400)) {
      // A refused request goes back to the website with error=…
      const loc = resp.headers.get("Location");
      const q = loc ? new URL(loc, u).searchParams : undefined;
      const code = q?.get("error");
      if (code) {
        throw new AuthAgentError({ error: code, error_description: q?.get("error_description") ?? "", status: resp.status });
      }
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "the issuer redirected the authorization request", status: resp.status });
    }
    const started = await decode(resp);
    const requestId = isRecord(started) ? started.request_id : undefined;
    if (typeof requestId !== "string" || requestId === "") {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "no request_id in the answer", status: resp.status });
    }
    return this.approve(requestId, creds);
  }

  /**
   * Approves a pending sign-in request by its id (what a sign-in page shows)
   * and resolves to the URL the browser is sent to. `signIn` does this after
   * opening the authorization URL. `expect` makes the issuer refuse the
   * request unless it is for that client (and redirect URI).
   */
  async approve(requestId: string, creds: Credentials, expect?: { clientId?: string; redirectUri?: string }): Promise<string> {
    const body: Record<string, string> = { ...(await this.agentFields(creds, "/api/agent-auth")), request_id: requestId };
    if (expect?.clientId !== undefined) {
      body.client_id = expect.clientId;
    }
    if (expect?.redirectUri !== undefined) {
      body.redirect_uri = expect.redirectUri;
    }
    const data = await this.callAPI("POST", "/api/agent-auth", { body: async () => body });
    const to = isRecord(data) ? data.redirect_to : undefined;
    if (typeof to !== "string" || to === "") {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "no redirect_to in the answer" });
    }
    return to;
  }

  /** Reads the agent's profile with one of its access tokens (a DPoP-bound one as `Tokens`, with its key). */
  async getProfile(accessToken: string | Tokens): Promise<Agent> {
    return agentOf(await this.callAPI("GET", "/api/agents/profile", { token: accessToken }));
  }

  /** Changes the agent's profile (with a token the agent got for itself) and resolves to it. */
  async updateProfile(accessToken: string | Tokens, fields: ProfileUpdate): Promise<Agent> {
    const names: Record<keyof ProfileUpdate, string> = {
      modelName: "model_name",
      ownerName: "owner_name",
      ownerEmail: "owner_email",
      agentSecret: "agent_secret",
      currentAgentSecret: "current_agent_secret",
    };
    const body: Record<string, string> = {};
    for (const [k, v] of Object.entries(fields)) {
      const name = names[k as keyof ProfileUpdate];
      if (name === undefined) {
        throw new TypeError(`updateProfile: unknown field ${JSON.stringify(k)}`);
      }
      if (v !== undefined) {
        body[name] = v;
      }
    }
    return agentOf(await this.callAPI("PUT", "/api/agents/profile", { token: accessToken, body: async () => body }));
  }

  /**
   * Trades a refresh token for new tokens; the old refresh token is spent,
   * keep the new one. Given the `Tokens` of a DPoP-bound grant, the request
   * carries a proof by their key, as the issuer requires of a public
   * client's bound refresh token; given the refresh token alone, by the key
   * `dpop` names (in `auth` or the client's options).
   */
  async refresh(refreshToken: string | Tokens, auth: ClientAuth | Credentials): Promise<Tokens> {
    const tokens = typeof refreshToken === "string" ? undefined : refreshToken;
    const token = tokens ? tokens.refreshToken : (refreshToken as string);
    if (token === undefined) {
      throw new AuthAgentError({ error: "invalid_grant", error_description: "no refresh token to renew the access token with" });
    }
    const dpop = tokens?.dpopKey ?? (await this.dpopKeyFor(auth.dpop, clientAuthOf(auth)));
    const data = await this.callForm("token_endpoint", "/oauth2/token", { grant_type: "refresh_token", refresh_token: token }, auth, dpop);
    return Tokens.fromResponse(tokenResponseOf(data), Date.now(), dpop);
  }

  /** Revokes an access or refresh token the caller holds (RFC 7009); an unknown token is no error. */
  async revoke(token: string, auth: ClientAuth | Credentials): Promise<void> {
    await this.callForm("revocation_endpoint", "/oauth2/revoke", { token }, auth);
  }

  /** Asks whether a token the caller holds is active (RFC 7662). */
  async introspect(token: string, auth: ClientAuth | Credentials): Promise<Introspection> {
    const data = await this.callForm("introspection_endpoint", "/oauth2/introspect", { token }, auth);
    if (!isRecord(data) || typeof data.active !== "boolean") {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "no active member in the introspection answer" });
    }
    return data as Introspection;
  }

  /** Reads the OpenID Connect userinfo of an access token (a DPoP-bound one as `Tokens`, with its key). */
  async userinfo(accessToken: string | Tokens): Promise<Record<string, unknown>> {
    const meta = await this.discover();
    const url = meta.userinfo_endpoint ?? `${this.issuer}/oauth2/userinfo`;
    const resp = await this.sendWithToken(accessToken, url, { method: "GET", headers: { Accept: "application/json" } });
    const data = await decode(resp);
    if (!isRecord(data)) {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "userinfo is not a JSON object", status: resp.status });
    }
    return data;
  }

  /**
   * Keeps an agent's own access token fresh: `getAccessToken()` authenticates
   * again when the token has less than `refreshMarginMs` left (default 60 s),
   * once for any number of concurrent callers.
   */
  agentSession(creds: Credentials & { scope?: string | string[]; resource?: string }, options?: { refreshMarginMs?: number }): TokenSession {
    return new TokenSession(() => this.authenticate(creds), undefined, { ...options, fetch: this.fetcher, nonces: this.nonces });
  }

  /**
   * Keeps tokens with a refresh token fresh: `getAccessToken()` refreshes them
   * (as `auth`) before they expire; `onTokens` sees each new set (the refresh
   * token rotates, so persist it if you persist tokens).
   */
  session(tokens: Tokens, auth: ClientAuth | Credentials, options?: { refreshMarginMs?: number; onTokens?: (tokens: Tokens) => void }): TokenSession {
    return new TokenSession(
      async (current) => {
        if (!current?.refreshToken) {
          throw new AuthAgentError({ error: "invalid_grant", error_description: "no refresh token to renew the access token with" });
        }
        return this.refresh(current, auth);
      },
      tokens,
      { ...options, fetch: this.fetcher, nonces: this.nonces },
    );
  }

  /**
   * `fetch` with an access token, for an API behind `agent_guard`:
   * `Authorization: Bearer <token>`, or for DPoP-bound `Tokens`
   * `Authorization: DPoP <token>` with a new proof by their key (`ath`,
   * `htm`, `htu`), sent once more with the server's `DPoP-Nonce` when it
   * answers `use_dpop_nonce`. A DPoP-bound token is never sent as a bearer
   * token. Use `agentSession` or `session` for tokens that renew themselves.
   */
  async fetch(tokens: Tokens | string, input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
    return fetchWithTokens(this.fetcher, this.nonces, tokenOf(tokens), input, init);
  }

  // ---- the website side ----

  /** The issuer's metadata (`/.well-known/openid-configuration`), fetched once. */
  discover(): Promise<ProviderMetadata> {
    if (!this.metadata) {
      this.metadata = this.fetchMetadata();
      this.metadata.catch(() => {
        this.metadata = undefined;
      });
    }
    return this.metadata;
  }

  /**
   * Starts "Sign in with Auth Agent": an authorization URL with PKCE S256,
   * state and nonce. The request is kept in the transaction storage under
   * its state until `handleCallback`; send the browser (or an agent) to `url`.
   */
  async createSignInUrl(options: SignInOptions = {}): Promise<SignInRequest> {
    const clientId = options.clientId ?? this.options.clientId;
    const redirectUri = options.redirectUri ?? this.options.redirectUri;
    if (!clientId || !redirectUri) {
      throw new TypeError("createSignInUrl: clientId and redirectUri are required (here or in the client's options)");
    }
    const meta = await this.discover();
    const scope = joinScope(options.scope ?? "openid profile");
    const state = randomString();
    const nonce = randomString();
    const codeVerifier = randomString(48);
    const url = new URL(meta.authorization_endpoint);
    const params: Record<string, string> = {
      ...options.params,
      response_type: "code",
      client_id: clientId,
      redirect_uri: redirectUri,
      scope,
      state,
      nonce,
      code_challenge: await s256(codeVerifier),
      code_challenge_method: "S256",
    };
    for (const [k, v] of Object.entries(params)) {
      url.searchParams.set(k, v);
    }
    for (const r of options.resource === undefined ? [] : [options.resource].flat()) {
      url.searchParams.append("resource", r);
    }
    const request: SignInRequest = { url: url.href, state, nonce, codeVerifier, clientId, redirectUri, scope, createdAt: Date.now() };
    this.transactions.setItem(transactionPrefix + state, JSON.stringify(request));
    return request;
  }

  /**
   * Finishes a sign-in at the redirect URI: checks `state` (against the kept
   * request, which is used once) and `iss` (RFC 9207), surfaces an `error`
   * the issuer redirected with, exchanges the code with the PKCE verifier and
   * verifies the ID token (signature against the JWKS, issuer, audience,
   * expiry, nonce).
   */
  async handleCallback(callbackUrl: string | URL, options: CallbackOptions = {}): Promise<SignInResult> {
    let u: URL;
    try {
      u = new URL(callbackUrl);
    } catch {
      throw new AuthAgentError({ error: ErrorCodes.callback, error_description: "the callback URL is not a URL" });
    }
    const q = u.searchParams;
    const state = q.get("state") ?? "";
    let request = options.request;
    if (state !== "") {
      // Used once, whichever way the request was kept.
      const kept = this.transactions.getItem(transactionPrefix + state);
      this.transactions.removeItem(transactionPrefix + state);
      request ??= kept ? parseRequest(kept) : undefined;
    }
    if (request === undefined || request.state !== state) {
      throw new AuthAgentError({ error: ErrorCodes.callback, error_description: "the callback's state matches no sign-in this client started" });
    }
    if (!(Date.now() - request.createdAt <= transactionLifetimeMs)) {
      throw new AuthAgentError({ error: ErrorCodes.callback, error_description: "the sign-in was started more than 10 minutes ago" });
    }
    const meta = await this.discover();
    const iss = q.get("iss");
    if (iss !== null ? iss !== meta.issuer : meta.authorization_response_iss_parameter_supported === true) {
      throw new AuthAgentError({ error: ErrorCodes.callback, error_description: "the callback is from another issuer (iss)" });
    }
    const error = q.get("error");
    if (error) {
      throw new AuthAgentError({ error, error_description: q.get("error_description") ?? "" });
    }
    const code = q.get("code");
    if (!code) {
      throw new AuthAgentError({ error: ErrorCodes.callback, error_description: "the callback has no code" });
    }
    const secret = options.clientSecret ?? this.options.clientSecret;
    const dpop = await this.dpopKeyFor(undefined, {});
    const data = await this.callForm(
      "token_endpoint",
      "/oauth2/token",
      { grant_type: "authorization_code", code, redirect_uri: request.redirectUri, code_verifier: request.codeVerifier },
      { clientId: request.clientId, clientSecret: secret },
      dpop,
    );
    const tokens = Tokens.fromResponse(tokenResponseOf(data), Date.now(), dpop);
    let claims: IDTokenClaims | undefined;
    if (tokens.idToken !== undefined) {
      claims = await this.verifyIDToken(tokens.idToken, { clientId: request.clientId, nonce: request.nonce, accessToken: tokens.accessToken });
    } else if (request.scope.split(" ").includes("openid")) {
      throw new AuthAgentError({ error: ErrorCodes.idToken, error_description: "openid was asked for but no ID token came" });
    }
    return { tokens, claims };
  }

  /** Verifies an ID token of this issuer for `clientId` (and `nonce`, when given). */
  async verifyIDToken(idToken: string, expect: { clientId: string; nonce?: string; accessToken?: string }): Promise<IDTokenClaims> {
    const meta = await this.discover();
    return verifyIDToken(idToken, {
      issuer: meta.issuer,
      clientId: expect.clientId,
      nonce: expect.nonce,
      accessToken: expect.accessToken,
      key: (kid, alg) => this.key(meta, kid, alg),
      now: Date.now(),
      leeway: this.options.clockToleranceSeconds ?? 60,
    });
  }

  // ---- plumbing ----

  private async fetchMetadata(): Promise<ProviderMetadata> {
    const resp = await this.send(`${this.issuer}/.well-known/openid-configuration`, { method: "GET", headers: { Accept: "application/json" } });
    const data = await decode(resp);
    if (!isRecord(data) || typeof data.authorization_endpoint !== "string" || typeof data.token_endpoint !== "string" || typeof data.jwks_uri !== "string") {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "the discovery document lacks its endpoints", status: resp.status });
    }
    if (data.issuer !== this.issuer) {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: `the discovery document names another issuer (${String(data.issuer)})` });
    }
    return data as ProviderMetadata;
  }

  /** The key of `kid` from the JWKS, fetched again for an unknown `kid` (a rotation) at most every 5 s, and after 10 minutes in any case (a retired key stops being trusted). */
  private async key(meta: ProviderMetadata, kid: string | undefined, alg: string): Promise<JWK | undefined> {
    const find = (keys: JWK[]) =>
      keys.find((k) => (kid === undefined || k.kid === kid) && (k.alg === undefined || k.alg === alg) && (k.use === undefined || k.use === "sig"));
    if (this.jwks && Date.now() - this.jwks.fetchedAt < jwksMaxAgeMs) {
      const known = find(this.jwks.keys);
      if (known || Date.now() - this.jwks.fetchedAt < 5_000) {
        return known;
      }
    }
    const resp = await this.send(meta.jwks_uri, { method: "GET", headers: { Accept: "application/json" } });
    const data = await decode(resp);
    if (!isRecord(data) || !Array.isArray(data.keys)) {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "the JWKS has no keys", status: resp.status });
    }
    this.jwks = { keys: data.keys as JWK[], fetchedAt: Date.now() };
    return find(this.jwks.keys);
  }

  /** The agent's proof of identity for the `/api/*` endpoint at `path`: `agent_id` and `agent_secret`, or a new assertion for that endpoint. */
  private async agentFields(creds: Credentials, path: string): Promise<Record<string, string>> {
    const auth = clientAuthOf(creds);
    if (auth.privateKey === undefined) {
      return { agent_id: creds.agentId, agent_secret: auth.clientSecret ?? "" };
    }
    return {
      agent_id: creds.agentId,
      client_assertion_type: clientAssertionType,
      client_assertion: await clientAssertion({ clientId: creds.agentId, audience: this.issuer + path, privateKey: auth.privateKey, keyId: auth.keyId }),
    };
  }

  /**
   * Calls an `/api/*` endpoint and resolves to the `data` of its envelope.
   * `body` is made again for each attempt; `dpop` adds a proof (without
   * `ath`: a token request), `token` the access token (and its proof when
   * it is DPoP-bound).
   */
  private async callAPI(
    method: string,
    path: string,
    o: { token?: string | Tokens; body?: () => Promise<Record<string, unknown>>; dpop?: DPoPKey | undefined },
  ): Promise<unknown> {
    const url = this.issuer + path;
    const init = async (): Promise<RequestInit> => {
      const headers: Record<string, string> = { Accept: "application/json" };
      const i: RequestInit = { method, headers, redirect: "manual" };
      if (o.body !== undefined) {
        headers["Content-Type"] = "application/json";
        i.body = JSON.stringify(await o.body());
      }
      return i;
    };
    let resp: Response;
    if (o.token !== undefined) {
      resp = await this.sendWithToken(o.token, url, await init());
    } else if (o.dpop !== undefined) {
      resp = await sendWithProof(this.nonces, o.dpop, { method, url }, async (proof) => {
        const i = await init();
        return this.send(url, { ...i, headers: { ...(i.headers as Record<string, string>), DPoP: proof } });
      });
    } else {
      resp = await this.send(url, await init());
    }
    const env = await decode(resp);
    if (!isRecord(env) || env.success !== true || !isRecord(env.data)) {
      throw new AuthAgentError({ error: ErrorCodes.response, error_description: "no data in the answer", status: resp.status });
    }
    return env.data;
  }

  /**
   * Posts an RFC form to an `/oauth2/*` endpoint with client
   * authentication: HTTP Basic, a new assertion for that endpoint
   * (`private_key_jwt`), or `client_id` alone for a public client; with
   * `dpop`, a proof by that key (and a new assertion for a nonce retry).
   */
  private async callForm(
    endpoint: keyof ProviderMetadata,
    fallbackPath: string,
    form: Record<string, string>,
    who: ClientAuth | Credentials,
    dpop?: DPoPKey,
  ): Promise<unknown> {
    const auth = clientAuthOf(who);
    const meta = this.metadata ? await this.metadata.catch(() => undefined) : undefined;
    const target = meta && typeof meta[endpoint] === "string" ? (meta[endpoint] as string) : this.issuer + fallbackPath;
    const init = async (proof?: string): Promise<RequestInit> => {
      const headers: Record<string, string> = { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" };
      const body = new URLSearchParams(form);
      if (auth.privateKey !== undefined) {
        body.set("client_id", auth.clientId);
        body.set("client_assertion_type", clientAssertionType);
        body.set("client_assertion", await clientAssertion({ clientId: auth.clientId, audience: target, privateKey: auth.privateKey, keyId: auth.keyId }));
      } else if (auth.clientSecret) {
        // RFC 6749 §2.3.1: both parts form-encoded before Basic.
        headers.Authorization = `Basic ${btoa(`${formEncode(auth.clientId)}:${formEncode(auth.clientSecret)}`)}`;
      } else {
        body.set("client_id", auth.clientId);
      }
      if (proof !== undefined) {
        headers.DPoP = proof;
      }
      return { method: "POST", headers, body, redirect: "manual" };
    };
    const resp =
      dpop === undefined
        ? await this.send(target, await init())
        : await sendWithProof(this.nonces, dpop, { method: "POST", url: target }, async (proof) => this.send(target, await init(proof)));
    return decode(resp, endpoint === "revocation_endpoint");
  }

  /** Sends a request to the issuer with an access token: bearer, or DPoP with a proof (and a nonce retry). */
  private async sendWithToken(token: string | Tokens, url: string, init: RequestInit): Promise<Response> {
    return fetchWithTokens((input, i) => this.send(String(input), i ?? {}), this.nonces, tokenOf(token), url, init);
  }

  /**
   * The key a token request's proof is signed with: `option` (the
   * credentials'), else the client's `dpop`; `true` is the credentials' own
   * key pair when they hold both halves, else the client's generated pair.
   */
  private async dpopKeyFor(option: DPoPOption | undefined, who: { privateKey?: CryptoKey | undefined; publicKey?: CryptoKey | undefined }): Promise<DPoPKey | undefined> {
    const o = option ?? this.options.dpop;
    if (o === undefined || o === false) {
      return undefined;
    }
    if (o !== true) {
      return dpopKey(o);
    }
    if (who.privateKey !== undefined && who.publicKey !== undefined) {
      return dpopKey({ privateKey: who.privateKey, publicKey: who.publicKey });
    }
    if (this.generatedDPoPKey === undefined) {
      this.generatedDPoPKey = generateKeyPair().then(dpopKey);
      this.generatedDPoPKey.catch(() => {
        this.generatedDPoPKey = undefined;
      });
    }
    return this.generatedDPoPKey;
  }

  /** Sends a request with the time limit, turning a failure to connect into a `network_error`. */
  private async send(url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetcher(url, { ...init, signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000) });
    } catch (err) {
      const what = err instanceof Error && err.name === "TimeoutError" ? "the issuer did not answer in time" : "the issuer could not be reached";
      throw new AuthAgentError({ error: ErrorCodes.network, error_description: what, cause: err });
    }
  }
}

/** At most this much of an answer is read. */
const maxBody = 1 << 20;

/** Reads a JSON answer, or throws the error it carries. */
async function decode(resp: Response, emptyOK = false): Promise<unknown> {
  if (Number(resp.headers.get("Content-Length") ?? 0) > maxBody) {
    await resp.body?.cancel().catch(() => {});
    throw new AuthAgentError({ error: ErrorCodes.response, error_description: "the answer is too large", status: resp.status });
  }
  let text: string;
  try {
    text = await resp.text();
  } catch (err) {
    throw new AuthAgentError({ error: ErrorCodes.network, error_description: "the answer was cut off", status: resp.status, cause: err });
  }
  if (text.length > maxBody) {
    throw new AuthAgentError({ error: ErrorCodes.response, error_description: "the answer is too large", status: resp.status });
  }
  let data: unknown;
  try {
    data = text === "" ? undefined : JSON.parse(text);
  } catch {
    data = undefined;
  }
  if (!resp.ok) {
    const shape = isRecord(data) && typeof data.error === "string" ? data : undefined;
    throw new AuthAgentError({
      error: shape ? (shape.error as string) : ErrorCodes.response,
      error_description: shape ? String(shape.error_description ?? "") : `HTTP ${resp.status}`,
      status: resp.status,
      rateLimit: rateLimitOf(resp.headers),
      retryAfter: retryAfterOf(resp.headers),
    });
  }
  if (data === undefined && !(emptyOK && text === "")) {
    throw new AuthAgentError({ error: ErrorCodes.response, error_description: "the answer is not JSON", status: resp.status });
  }
  return data;
}

/** A client's or an agent's credentials as one shape; a secret and a key together are a TypeError. */
function clientAuthOf(who: ClientAuth | Credentials): {
  clientId: string;
  clientSecret?: string | undefined;
  privateKey?: CryptoKey | undefined;
  publicKey?: CryptoKey | undefined;
  keyId?: string | undefined;
} {
  const auth = "agentId" in who ? { clientId: who.agentId, clientSecret: who.agentSecret, privateKey: who.privateKey, publicKey: who.publicKey, keyId: who.keyId } : who;
  if (auth.privateKey !== undefined && auth.clientSecret !== undefined) {
    throw new TypeError("credentials hold a secret or a private key, not both");
  }
  return auth;
}

/** An access token as `Tokens`' fields: a string is a bearer token. */
function tokenOf(token: string | Tokens): Pick<Tokens, "accessToken" | "tokenType" | "dpopKey"> {
  return typeof token === "string" ? { accessToken: token, tokenType: "Bearer", dpopKey: undefined } : token;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function joinScope(scope: string | string[]): string {
  return Array.isArray(scope) ? scope.join(" ") : scope;
}

function formEncode(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, "+");
}

function tokenResponseOf(data: unknown): TokenResponse {
  if (!isRecord(data) || typeof data.access_token !== "string" || typeof data.expires_in !== "number") {
    throw new AuthAgentError({ error: ErrorCodes.response, error_description: "no access_token in the answer" });
  }
  return data as unknown as TokenResponse;
}

function agentOf(data: unknown): Agent {
  if (!isRecord(data) || typeof data.agent_id !== "string") {
    throw new AuthAgentError({ error: ErrorCodes.response, error_description: "no agent in the answer" });
  }
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  return {
    agentId: data.agent_id,
    modelName: str(data.model_name) ?? "",
    ownerName: str(data.owner_name) ?? "",
    ownerEmail: str(data.owner_email) ?? "",
    permissions: Array.isArray(data.permissions) ? data.permissions.filter((p): p is string => typeof p === "string") : [],
    createdAt: str(data.created_at) ?? "",
    updatedAt: str(data.updated_at),
    agentSecret: str(data.agent_secret),
    tokenEndpointAuthMethod: str(data.token_endpoint_auth_method) ?? "",
    kids: Array.isArray(data.kids) ? data.kids.filter((k): k is string => typeof k === "string") : [],
  };
}

function parseRequest(kept: string): SignInRequest | undefined {
  try {
    const r = JSON.parse(kept);
    const ok = isRecord(r) && ["state", "nonce", "codeVerifier", "clientId", "redirectUri", "scope"].every((k) => typeof r[k] === "string") && typeof r.createdAt === "number";
    return ok ? (r as unknown as SignInRequest) : undefined;
  } catch {
    return undefined;
  }
}

/** The browser's `sessionStorage`, where there is one and it works (some browsers refuse it in private windows). */
function browserSessionStorage(): TransactionStorage | undefined {
  try {
    const s = (globalThis as { sessionStorage?: TransactionStorage }).sessionStorage;
    if (s === undefined) {
      return undefined;
    }
    s.setItem("authagent.probe", "1");
    s.removeItem("authagent.probe");
    return s;
  } catch {
    return undefined;
  }
}

/** Pending sign-ins in memory, the oldest dropped past 10,000 (a flood of unfinished sign-ins cannot grow it without bound). */
function memoryStorage(): TransactionStorage {
  const m = new Map<string, string>();
  return {
    getItem: (k) => m.get(k) ?? null,
    setItem: (k, v) => {
      m.set(k, v);
      if (m.size > 10_000) {
        const oldest = m.keys().next();
        if (!oldest.done) {
          m.delete(oldest.value);
        }
      }
    },
    removeItem: (k) => void m.delete(k),
  };
}
