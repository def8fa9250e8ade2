import type { Tokens } from "./tokens.js";

/**
 * Tokens kept fresh: `getAccessToken()` renews them when fewer than
 * `refreshMarginMs` (default 60 s) are left, once for any number of
 * concurrent callers; `fetch` adds the token to a request.
 */
export class TokenSession {
  private current: Tokens | undefined;
  private pending: Promise<Tokens> | undefined;
  private readonly marginMs: number;
  private readonly onTokens: ((tokens: Tokens) => void) | undefined;
  private readonly fetcher: typeof fetch;

  constructor(
    private readonly renew: (current: Tokens | undefined) => Promise<Tokens>,
    initial?: Tokens,
    options?: { refreshMarginMs?: number | undefined; onTokens?: ((tokens: Tokens) => void) | undefined; fetch?: typeof fetch | undefined },
  ) {
    this.fetcher = options?.fetch ?? globalThis.fetch.bind(globalThis);
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

  /** `fetch` with `Authorization: <type> <access token>` added. */
  async fetch(input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
    const t = await this.getTokens();
    const headers = new Headers(init.headers);
    headers.set("Authorization", `${t.tokenType === "DPoP" ? "DPoP" : "Bearer"} ${t.accessToken}`);
    return this.fetcher(input, { ...init, headers });
  }
}
