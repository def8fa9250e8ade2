/** Where the caller stands in a rate-limit budget (the `X-RateLimit-*` headers). */
export interface RateLimit {
  /** The budget's size for its window. */
  limit: number;
  /** What is left of it. */
  remaining: number;
  /** When the window ends. */
  reset: Date;
}

/**
 * Codes of errors that are not the issuer's own answer. Every other `error`
 * is the OAuth/API code the issuer sent (`invalid_client`,
 * `rate_limit_exceeded`, `invalid_grant`, …) or, from `handleCallback`, the
 * code the authorization server redirected with (`access_denied`, …).
 */
export const ErrorCodes = {
  /** No answer: connection refused, DNS failure, timeout, aborted. */
  network: "network_error",
  /** An answer that is not the API's (not JSON, no envelope, a missing field). */
  response: "invalid_response",
  /** A callback URL this client did not expect: unknown state, another issuer, no code. */
  callback: "invalid_callback",
  /** An ID token that fails verification: signature, issuer, audience, expiry or nonce. */
  idToken: "invalid_id_token",
} as const;

export interface AuthAgentErrorInit {
  error: string;
  error_description?: string | undefined;
  status?: number | undefined;
  rateLimit?: RateLimit | undefined;
  retryAfter?: number | undefined;
  cause?: unknown;
}

/**
 * Every failure of the SDK: the issuer's error shape
 * (`{"error", "error_description"}`) with the HTTP status and, for rate
 * limits, the budget headers. Its message never holds a token or secret.
 */
export class AuthAgentError extends Error {
  override readonly name = "AuthAgentError";
  /** The OAuth/API error code, or one of {@link ErrorCodes}. */
  readonly error: string;
  /** The issuer's human-readable text ("" when none). */
  readonly error_description: string;
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** The `X-RateLimit-*` headers of the answer, when it had them. */
  readonly rateLimit: RateLimit | undefined;
  /** `Retry-After` in seconds, on a 429. */
  readonly retryAfter: number | undefined;

  constructor(init: AuthAgentErrorInit) {
    super(init.error_description ? `${init.error}: ${init.error_description}` : init.error, { cause: init.cause });
    this.error = init.error;
    this.error_description = init.error_description ?? "";
    this.status = init.status ?? 0;
    this.rateLimit = init.rateLimit;
    this.retryAfter = init.retryAfter;
  }
}

/** Reads the rate-limit headers of an answer, when all three are there. */
export function rateLimitOf(headers: Headers): RateLimit | undefined {
  const limit = Number.parseInt(headers.get("X-RateLimit-Limit") ?? "", 10);
  const remaining = Number.parseInt(headers.get("X-RateLimit-Remaining") ?? "", 10);
  const reset = Number.parseInt(headers.get("X-RateLimit-Reset") ?? "", 10);
  if ([limit, remaining, reset].some(Number.isNaN)) {
    return undefined;
  }
  return { limit, remaining, reset: new Date(reset * 1000) };
}

/** Reads `Retry-After` given in seconds. */
export function retryAfterOf(headers: Headers): number | undefined {
  const v = headers.get("Retry-After");
  if (v === null || !/^\d+$/.test(v.trim())) {
    return undefined;
  }
  return Number.parseInt(v, 10);
}
