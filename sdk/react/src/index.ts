/**
 * `@authagent/react`: "Sign in with Auth Agent" for React, over
 * `@authagent/sdk`. Wrap the app in `<AuthAgentProvider>`, read the state
 * with `useAuthAgent()`, and offer `<SignInWithAuthAgent>`.
 */
export {
  type AuthAgentContextValue,
  AuthAgentProvider,
  type AuthAgentProviderProps,
  type SignInParams,
  type TokenStorage,
  useAuthAgent,
} from "./provider.js";
export { SignInWithAuthAgent, type SignInWithAuthAgentProps } from "./button.js";
export { AuthAgentError, type IDTokenClaims, Tokens } from "@authagent/sdk";
