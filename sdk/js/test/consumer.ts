// Compiled (not run) by `npm test`: the published types serve a strict
// TypeScript consumer, and misuse is a type error.
import {
  type Agent,
  AuthAgentClient,
  AuthAgentError,
  type Credentials,
  type DPoPKey,
  type Introspection,
  type JWKSet,
  type KeyCredentials,
  type SignInResult,
  Tokens,
  clientAssertion,
  dpopKey,
  dpopProof,
  generateKeyPair,
  jwkThumbprint,
  publicJWKS,
} from "@authagent/sdk";

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

export async function keyedAgent(issuer: string): Promise<string> {
  const client = new AuthAgentClient({ issuer });
  const pair: CryptoKeyPair = await generateKeyPair({ algorithm: "EdDSA" });
  const jwks: JWKSet = await publicJWKS(pair, "k-1");
  const a: Agent = await client.registerAgent({ agentId: "k", jwks, modelName: "m", ownerName: "O", ownerEmail: "o@example.com" });
  const creds: KeyCredentials = { agentId: a.agentId, privateKey: pair.privateKey, keyId: a.kids[0] };
  const t: Tokens = await client.authenticate({ ...creds, scope: "data:read" });
  const redirect: string = await client.signIn("https://auth.example/oauth2/authorize", creds);
  const i: Introspection = await client.introspect(t.accessToken, creds);
  await client.revoke(t.accessToken, { clientId: "k", privateKey: pair.privateKey });
  const any: Credentials = Math.random() > 0.5 ? creds : { agentId: "s", agentSecret: "secret" };
  await client.agentSession(any).getAccessToken();
  const next = await generateKeyPair();
  const after: Agent = await client.replaceKeys(await publicJWKS(next), creds);
  const assertion: string = await clientAssertion({ clientId: "k", audience: issuer, privateKey: pair.privateKey });
  // @ts-expect-error: a secret or a key, not both
  await client.authenticate({ agentId: "k", agentSecret: "s", privateKey: pair.privateKey });
  // @ts-expect-error: registration takes a secret or keys, not both
  await client.registerAgent({ agentId: "k", agentSecret: "s", jwks, modelName: "m", ownerName: "O", ownerEmail: "o@example.com" });
  // @ts-expect-error: only a key proves possession of the keys it replaces
  await client.replaceKeys(jwks, { agentId: "k", agentSecret: "s" });
  // @ts-expect-error: the key is a CryptoKey, not a JWK
  await client.authenticate({ agentId: "k", privateKey: jwks.keys[0] });
  // @ts-expect-error: only signing algorithms assertions take
  await generateKeyPair({ algorithm: "HS256" });
  return redirect + i.active + after.tokenEndpointAuthMethod + assertion;
}

export async function dpopAgent(issuer: string): Promise<string> {
  const client = new AuthAgentClient({ issuer, dpop: true });
  const pair = await generateKeyPair();
  const t: Tokens = await client.authenticate({ agentId: "k", ...pair, keyId: "k-1", dpop: true });
  const key: DPoPKey | undefined = t.dpopKey;
  const resp: Response = await client.fetch(t, "https://api.example/items", { method: "POST", body: "{}" });
  const proof: string = await dpopProof(pair, { method: "GET", url: "https://api.example/items", accessToken: t.accessToken });
  const jkt: string = await jwkThumbprint((await dpopKey(pair)).publicJwk);
  const refreshed: Tokens = await client.refresh(t, { clientId: "app" });
  await client.authenticate({ agentId: "a", agentSecret: "s", dpop: await generateKeyPair({ algorithm: "EdDSA" }) });
  await client.getProfile(refreshed);
  await client.agentSession({ agentId: "a", agentSecret: "s", dpop: false }).fetch(new URL("https://api.example/items"));
  // @ts-expect-error: dpop is a boolean or a key
  await client.authenticate({ agentId: "a", agentSecret: "s", dpop: "yes" });
  // @ts-expect-error: credentials with a secret have no key pair
  await client.authenticate({ agentId: "a", agentSecret: "s", publicKey: pair.publicKey });
  // @ts-expect-error: a proof is for a method and a URL
  await dpopProof(pair, { method: "GET" });
  return `${key?.alg} ${resp.status} ${proof} ${jkt}`;
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
