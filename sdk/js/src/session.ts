import { DPoPNonces, sendWithProof } from "./dpop.js";
import type { Tokens } from "./tokens.js";

/**
 * Tokens kept fresh: `getAccessToken()` renews them when fewer than
 * `refreshMarginMs` (default 60 s) are left, once for any number of
 * concurrent callers; `fetch` adds the token to a request (with a DPoP
 * proof when the token is DPoP-bound).
 */
export class TokenSession {
  private current: Tokens | undefined;
  private pending: Promise<Tokens> | undefined;
  private readonly marginMs: number;
  private readonly onTokens: ((tokens: Tokens) => void) | undefined;
  private readonly fetcher: typeof fetch;
  private readonly nonces: DPoPNonces;

  constructor(
    private readonly renew: (current: Tokens | undefined) => Promise<Tokens>,
    initial?: Tokens,
    options?: {
      refreshMarginMs?: number | undefined;
      onTokens?: ((tokens: Tokens) => void) | undefined;
      fetch?: typeof fetch | undefined;
      /** Where the servers' `DPoP-Nonce`s are kept (default: this session's own). */
      nonces?: DPoPNonces | undefined;
    },
  ) {
    this.fetcher = options?.fetch ?? globalThis.fetch.bind(globalThis);
    this.nonces = options?.nonces ?? new DPoPNonces();
    this.current = initial;
    this.marginMs = options?.refreshMarginMs ?? 60_000;
    this.onTokens = options?.onTokens;
  }

  /** The tokens held now (possibly expired), without renewing. */
  get tokens(): Tokens | undefined {
    return this.current;
  }

  /** Valid tokens, renewed first when they are about to expire. */
  async getTokens(): Promise<Tokens> {
    if (this.current?.valid(this.marginMs)) {
      return this.current;
    }
    if (!this.pending) {
      this.pending = this.renew(this.current).then(
        (next) => {
          this.current = next;
          this.pending = undefined;
          this.onTokens?.(next);
          return next;
        },
        (err: unknown) => {
          this.pending = undefined;
          throw err;
        },
      );
    }
    return this.pending;
  }

  /** A valid access token, renewed first when it is about to expire. */
  async getAccessToken(): Promise<string> {
    return (await this.getTokens()).accessToken;
  }

  /**
   * `fetch` with `Authorization: Bearer <access token>`, or for a DPoP-bound
   * token `Authorization: DPoP <access token>` and a new `DPoP` proof (sent
   * once more with the server's nonce when it asks for one).
   */
  async fetch(input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
    return fetchWithTokens(this.fetcher, this.nonces, await this.getTokens(), input, init);
  }
}

/**
 * Sends a request with an access token: as a bearer token, or, bound to a
 * key, with the DPoP scheme and a proof by that key (never as a bearer
 * token, which the server would refuse). A DPoP-bound token without its
 * key is a TypeError.
 */
export async function fetchWithTokens(
  fetcher: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>,
  nonces: DPoPNonces,
  tokens: Pick<Tokens, "accessToken" | "tokenType" | "dpopKey">,
  input: RequestInfo | URL,
  init: RequestInit = {},
): Promise<Response> {
  const request = typeof Request !== "undefined" && input instanceof Request ? input : undefined;
  const headers = new Headers(request?.headers);
  new Headers(init.headers).forEach((value, name) => headers.set(name, value));
  if (tokens.tokenType.toLowerCase() !== "dpop") {
    headers.set("Authorization", `Bearer ${tokens.accessToken}`);
    return fetcher(input, { ...init, headers });
  }
  const key = tokens.dpopKey;
  if (key === undefined) {
    throw new TypeError("a DPoP-bound token needs the key it is bound to (Tokens.fromJSON(value, dpopKey) restores it)");
  }
  headers.set("Authorization", `DPoP ${tokens.accessToken}`);
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  const url = new URL(request?.url ?? String(input), base).href;
  const method = init.method ?? request?.method ?? "GET";
  // A Request's body can be read once: each attempt sends a copy. A
  // stream given in init cannot be sent twice: its request is sent once,
  // even when the server asks for a nonce.
  const retry = !(typeof ReadableStream !== "undefined" && init.body instanceof ReadableStream);
  return sendWithProof(nonces, key, { method, url, accessToken: tokens.accessToken, retry }, async (proof) => {
    headers.set("DPoP", proof);
    return fetcher(request ? request.clone() : input, { ...init, headers: new Headers(headers) });
  });
}
