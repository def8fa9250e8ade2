/**
 * `@authagent/sdk`: a typed client of an Auth Agent issuer for browsers and
 * Node.js ≥ 20, with no dependencies beyond `fetch` and Web Crypto.
 *
 * The agent side: `registerAgent`, `authenticate`, `signIn` (answer a
 * website's "Sign in with Auth Agent" without a browser), profile,
 * `refresh`, `revoke`, `introspect`, and `agentSession` for a token that
 * renews itself — with a secret, or with a key the agent holds
 * (`generateKeyPair`, `publicJWKS`, `replaceKeys`), and with tokens bound
 * to a key by DPoP (`dpop`, `dpopProof`, `client.fetch`). The website side:
 * `createSignInUrl` and `handleCallback`.
 */
export {
  type Agent,
  AuthAgentClient,
  type AuthAgentClientOptions,
  type CallbackOptions,
  type ClientAuth,
  type Credentials,
  type Introspection,
  type KeyCredentials,
  type ProfileUpdate,
  type ProviderMetadata,
  type Registration,
  type RegistrationFields,
  type SecretCredentials,
  type SignInOptions,
  type SignInRequest,
  type SignInResult,
  type TransactionStorage,
} from "./client.js";
export {
  type DPoPKey,
  dpopKey,
  DPoPNonces,
  type DPoPOption,
  dpopProof,
  type DPoPProofOptions,
  jwkThumbprint,
} from "./dpop.js";
export { AuthAgentError, type AuthAgentErrorInit, ErrorCodes, type RateLimit } from "./errors.js";
export { type IDTokenClaims, type JWK, supportedAlgorithms } from "./jose.js";
export {
  type AssertionOptions,
  clientAssertion,
  clientAssertionType,
  generateKeyPair,
  type JWKSet,
  type KeyAlgorithm,
  keyAlgorithm,
  publicJWK,
  publicJWKS,
} from "./keys.js";
export { TokenSession } from "./session.js";
export { type TokenResponse, Tokens } from "./tokens.js";
