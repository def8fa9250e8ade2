// The peer of bench/load.sh PEER_COMPARE=1: node oidc-provider (the version
// pinned in package.json) on 127.0.0.1 with one confidential client, set up
// to answer the workload the plugin answers in load.sh:
//
//   - client_credentials, HTTP Basic client auth, form body
//     grant_type=client_credentials&scope=data:read: an ES256-signed JWT
//     access token (RFC 9068). oidc-provider issues JWT access tokens only for
//     a resource server whose accessTokenFormat is "jwt"; the request names
//     none, so defaultResource supplies urn:bench:jwt.
//   - introspection (features.introspection) of an access token with the
//     client's HTTP Basic auth. oidc-provider refuses to introspect a JWT
//     ("Structured JWT Tokens cannot be introspected"), so load.sh
//     introspects an opaque client_credentials token, requested with
//     resource=urn:bench:opaque: a lookup in the memory adapter.
//   - refresh_token with rotation (rotateRefreshToken: true), answering an
//     ES256 JWT access token and an RS256 ID token, as the plugin does with
//     access_token_alg ES256. The chains are minted through oidc-provider's
//     own models (a Grant and a RefreshToken each, as its authorization_code
//     grant would store them), not through a sign-in: oidc-provider's
//     sign-in needs its interaction pages.
//
// Storage is oidc-provider's built-in memory adapter, its default when no
// adapter is configured: an LRU of 1000 entries, which drops chains minted
// long before they are used. So load.sh asks for each run's chains right
// before the run, on a second port (GET /chains?n=N answers N refresh
// tokens, one per line), so that the measured port serves only the workload.
//
// usage: node server.js PORT CONTROL_PORT CLIENT_ID CLIENT_SECRET
// Prints "listening on 127.0.0.1:PORT" when both ports listen.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const [port, controlPort, clientId, clientSecret] = process.argv.slice(2);
if (!clientSecret) {
  console.error('usage: node server.js PORT CONTROL_PORT CLIENT_ID CLIENT_SECRET');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const jwtResource = 'urn:bench:jwt';
const opaqueResource = 'urn:bench:opaque';

// Signing keys, made at start like the plugin's: P-256 for access tokens,
// RSA 2048 for ID tokens.
function jwk(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: randomUUID() };
}
const keys = [
  jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
  jwk('rsa', { modulusLength: 2048 }, 'RS256'),
];

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:9/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    scope: 'openid offline_access data:read',
  }],
  jwks: { keys },
  scopes: ['openid', 'offline_access', 'data:read'],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? jwtResource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (resource === jwtResource) {
          return {
            scope: 'data:read',
            audience: jwtResource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (resource === opaqueResource) {
          return { scope: 'data:read', audience: opaqueResource, accessTokenTTL: 3600, accessTokenFormat: 'opaque' };
        }
        throw new errors.InvalidTarget();
      },
    },
  },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  rotateRefreshToken: true,
  ttl: {
    ClientCredentials: 3600,
    AccessToken: 3600,
    IdToken: 3600,
    RefreshToken: 30 * 24 * 3600,
    Grant: 30 * 24 * 3600,
  },
});

// A refresh-token chain: what a completed authorization_code grant with
// openid offline_access data:read for the resource urn:bench:jwt leaves in
// the store.
const client = await provider.Client.find(clientId);
let minted = 0;
async function mintChain() {
  minted += 1;
  const accountId = `load-agent-${minted}`;
  const now = Math.floor(Date.now() / 1000);
  const grant = new provider.Grant({ clientId, accountId });
  grant.addOIDCScope('openid offline_access');
  grant.addResourceScope(jwtResource, 'data:read');
  const grantId = await grant.save();
  const rt = new provider.RefreshToken({
    client,
    accountId,
    grantId,
    gty: 'authorization_code',
    scope: 'openid offline_access data:read',
    resource: jwtResource,
    authTime: now,
    iiat: now,
  });
  return rt.save();
}

const control = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const n = Number(url.searchParams.get('n'));
  if (url.pathname !== '/chains' || !Number.isInteger(n) || n < 1 || n > 1000) {
    res.writeHead(404).end();
    return;
  }
  const tokens = [];
  for (let i = 0; i < n; i += 1) tokens.push(await mintChain());
  res.writeHead(200, { 'content-type': 'text/plain' }).end(`${tokens.join('\n')}\n`);
});

let listening = 0;
function ready() {
  listening += 1;
  if (listening === 2) console.log(`listening on 127.0.0.1:${port} (control 127.0.0.1:${controlPort})`);
}
control.listen(Number(controlPort), '127.0.0.1', ready);
provider.listen(Number(port), '127.0.0.1', ready);
