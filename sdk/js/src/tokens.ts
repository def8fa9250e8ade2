import type { DPoPKey } from "./dpop.js";

/** The token endpoint's (or `/api/agent-auth`'s) answer, as the issuer sent it. */
export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  scope?: string;
  refresh_token?: string;
  id_token?: string;
}

const inspect = Symbol.for("nodejs.util.inspect.custom");

/**
 * Tokens from the issuer. Printing them (`console.log`, `util.inspect`,
 * `String(tokens)`) never shows a token; read the fields to use them. To
 * keep them somewhere, serialise them on purpose with `JSON.stringify` and
 * restore them with {@link Tokens.fromJSON}.
 */
export class Tokens {
  /** The access token, sent as `Authorization: Bearer …` (or `DPoP …` with a proof). */
  readonly accessToken: string;
  /** `Bearer`, or `DPoP` for a token bound to `dpopKey`. */
  readonly tokenType: string;
  /** Lifetime in seconds, as the issuer said. */
  readonly expiresIn: number;
  /** The granted scopes, space-separated. */
  readonly scope: string;
  /** When the access token expires, in milliseconds since the epoch, by this machine's clock. */
  readonly expiresAt: number;
  /** A refresh token, from the authorization-code and refresh grants; spent by `refresh`. */
  readonly refreshToken: string | undefined;
  /** An ID token, when `openid` was granted. */
  readonly idToken: string | undefined;
  /**
   * The key a `DPoP` token (and its refresh token) is bound to: every use
   * carries a proof it signs. Never serialised; pass it to `fromJSON` again.
   */
  readonly dpopKey: DPoPKey | undefined;

  constructor(fields: {
    accessToken: string;
    tokenType: string;
    expiresIn: number;
    scope: string;
    expiresAt: number;
    refreshToken?: string | undefined;
    idToken?: string | undefined;
    dpopKey?: DPoPKey | undefined;
  }) {
    this.accessToken = fields.accessToken;
    this.tokenType = fields.tokenType;
    this.expiresIn = fields.expiresIn;
    this.scope = fields.scope;
    this.expiresAt = fields.expiresAt;
    this.refreshToken = fields.refreshToken;
    this.idToken = fields.idToken;
    this.dpopKey = fields.dpopKey;
  }

  /** Whether the access token is DPoP-bound: it works only with proofs by `dpopKey`, never as a bearer token. */
  get dpopBound(): boolean {
    return this.tokenType.toLowerCase() === "dpop";
  }

  /** Builds tokens from the issuer's answer, received at `now` (ms); a `DPoP` answer is bound to `dpopKey`, the key its request's proof was signed with. */
  static fromResponse(r: TokenResponse, now: number, dpopKey?: DPoPKey): Tokens {
    return new Tokens({
      accessToken: r.access_token,
      tokenType: r.token_type,
      expiresIn: r.expires_in,
      scope: r.scope ?? "",
      expiresAt: now + r.expires_in * 1000,
      refreshToken: r.refresh_token,
      idToken: r.id_token,
      dpopKey: String(r.token_type).toLowerCase() === "dpop" ? dpopKey : undefined,
    });
  }

  /** Restores tokens serialised with `JSON.stringify`; DPoP-bound ones with the key they are bound to (kept apart, e.g. the `CryptoKey`s in IndexedDB). */
  static fromJSON(value: unknown, dpopKey?: DPoPKey): Tokens | undefined {
    if (typeof value !== "object" || value === null) {
      return undefined;
    }
    const v = value as Record<string, unknown>;
    if (typeof v.accessToken !== "string" || typeof v.expiresAt !== "number") {
      return undefined;
    }
    return new Tokens({
      accessToken: v.accessToken,
      tokenType: typeof v.tokenType === "string" ? v.tokenType : "Bearer",
      expiresIn: typeof v.expiresIn === "number" ? v.expiresIn : 0,
      scope: typeof v.scope === "string" ? v.scope : "",
      expiresAt: v.expiresAt,
      refreshToken: typeof v.refreshToken === "string" ? v.refreshToken : undefined,
      idToken: typeof v.idToken === "string" ? v.idToken : undefined,
      dpopKey: typeof v.tokenType === "string" && v.tokenType.toLowerCase() === "dpop" ? dpopKey : undefined,
    });
  }

  /** The serialisable fields: all but the key (a `CryptoKey` is not data; keep it apart). */
  toJSON(): {
    accessToken: string;
    tokenType: string;
    expiresIn: number;
    scope: string;
    expiresAt: number;
    refreshToken: string | undefined;
    idToken: string | undefined;
  } {
    const { accessToken, tokenType, expiresIn, scope, expiresAt, refreshToken, idToken } = this;
    return { accessToken, tokenType, expiresIn, scope, expiresAt, refreshToken, idToken };
  }

  /** Whether the access token is still good for at least `marginMs` (default 0). */
  valid(marginMs = 0, now: number = Date.now()): boolean {
    return this.accessToken !== "" && now + marginMs < this.expiresAt;
  }

  /** The scopes as a list. */
  scopes(): string[] {
    return this.scope.split(" ").filter(Boolean);
  }

  toString(): string {
    return `Tokens { ${this.tokenType}, scope "${this.scope}", expires ${new Date(this.expiresAt).toISOString()} }`;
  }

  [inspect](): string {
    return this.toString();
  }
}
