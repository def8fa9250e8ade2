// Compiled (not run) by `npm test`: the published types serve a strict
// TypeScript consumer, and misuse is a type error.
import { type Agent, AuthAgentClient, AuthAgentError, type SignInResult, Tokens } from "@authagent/sdk";

export async function agent(issuer: string): Promise<string> {
  const client = new AuthAgentClient({ issuer });
  const a: Agent = await client.registerAgent({ agentId: "a", agentSecret: "Test123456!", modelName: "m", ownerName: "O", ownerEmail: "o@example.com" });
  const t: Tokens = await client.authenticate({ agentId: a.agentId, agentSecret: "Test123456!", scope: ["data:read"] });
  const redirect: string = await client.signIn("https://auth.example/oauth2/authorize", { agentId: "a", agentSecret: "s" });
  // @ts-expect-error: scope is a string or a list of strings
  await client.authenticate({ agentId: "a", agentSecret: "s", scope: 1 });
  // @ts-expect-error: the profile has no such field
  await client.updateProfile(t.accessToken, { nickname: "x" });
  return redirect + t.expiresAt.toFixed();
}

export async function website(issuer: string, callback: URL): Promise<string | undefined> {
  const site = new AuthAgentClient({ issuer, clientId: "demo-site", redirectUri: "http://localhost:3000/callback" });
  const { url } = await site.createSignInUrl({ scope: "openid profile" });
  try {
    const result: SignInResult = await site.handleCallback(callback);
    return url + result.claims?.sub + result.tokens.refreshToken;
  } catch (err) {
    if (err instanceof AuthAgentError && err.status === 429) {
      return `${err.error} ${err.error_description} ${err.retryAfter} ${err.rateLimit?.remaining}`;
    }
    throw err;
  }
}
