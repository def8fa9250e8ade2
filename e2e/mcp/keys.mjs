// Clients that hold keys instead of secrets, against auth_agent: oauth4webapi
// (an independent OAuth library) authenticates with private_key_jwt as an
// agent with keys and as a client of the Caddyfile with keys (token,
// introspection, revocation), and the MCP TypeScript SDK's
// PrivateKeyJwtProvider gets a token by client_credentials and calls a tool
// through agent_guard. Run by e2e/keys_test.go; prints one line
// `RESULT {json}` and exits 0 only when every step passed.
//
// Configuration (environment):
//   ISSUER                  the authorization server
//   MCP_URL                 the guarded MCP endpoint (also the RFC 8707 resource)
//   AGENT_ID, AGENT_JWK     the agent with keys and its private key (a JWK, ES256)
//   CLIENT_ID, CLIENT_JWK   the Caddyfile's client with keys and its private key (a JWK, PS256)
//   TOOL                    the tool to list and call (with arguments {a: 2, b: 3})

import * as oauth from 'oauth4webapi';
import { check, env, reporter } from './script.mjs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { PrivateKeyJwtProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const result = { ok: false, step: 'start' };
const finish = reporter(result);

// The server under test is on http://127.0.0.1 (loopback, no TLS).
const insecure = { [oauth.allowInsecureRequests]: true };

async function importKey(jwk, alg) {
	const params = alg === 'ES256' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'RSA-PSS', hash: 'SHA-256' };
	return crypto.subtle.importKey('jwk', jwk, params, false, ['sign']);
}

async function main() {
	const issuer = new URL(env('ISSUER'));
	const mcpURL = env('MCP_URL');

	result.step = 'discovery';
	const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }));
	check(as.token_endpoint_auth_methods_supported.includes('private_key_jwt'), 'discovery lists private_key_jwt');

	// An agent with keys, and a client of the Caddyfile with keys: each gets
	// a token with private_key_jwt, introspects and revokes it.
	for (const who of [
		{ name: 'agent', id: env('AGENT_ID'), jwk: JSON.parse(env('AGENT_JWK')), alg: 'ES256', scope: 'mcp:tools' },
		{ name: 'client', id: env('CLIENT_ID'), jwk: JSON.parse(env('CLIENT_JWK')), alg: 'PS256', scope: 'mcp:tools' },
	]) {
		const client = { client_id: who.id };
		const auth = oauth.PrivateKeyJwt({ key: await importKey(who.jwk, who.alg), kid: who.jwk.kid });
		result.step = `${who.name}: client_credentials`;
		const res = await oauth.clientCredentialsGrantRequest(as, client, auth, new URLSearchParams({ scope: who.scope, resource: mcpURL }), insecure);
		const tokens = await oauth.processClientCredentialsResponse(as, client, res);
		check(tokens.token_type === 'bearer' && tokens.access_token, `${who.name}: a bearer token`);
		check(tokens.scope === who.scope, `${who.name}: scope ${tokens.scope}`);
		result[`${who.name}_token`] = true;

		result.step = `${who.name}: introspection`;
		const intro = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, tokens.access_token, insecure));
		check(intro.active === true && intro.client_id === who.id, `${who.name}: introspection says active`);

		result.step = `${who.name}: revocation`;
		const revoked = await oauth.revocationRequest(as, client, auth, tokens.access_token, insecure);
		await oauth.processRevocationResponse(revoked);
		const after = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, tokens.access_token, insecure));
		check(after.active === false, `${who.name}: revoked`);
	}

	// The MCP SDK's PrivateKeyJwtProvider: client_credentials with an
	// assertion it signs (no kid), then a tool call through agent_guard.
	result.step = 'mcp: connect';
	const provider = new PrivateKeyJwtProvider({
		clientId: env('AGENT_ID'),
		privateKey: JSON.parse(env('AGENT_JWK')),
		algorithm: 'ES256',
		scope: 'mcp:tools',
	});
	const transport = new StreamableHTTPClientTransport(new URL(mcpURL), { authProvider: provider });
	const mcp = new Client({ name: 'authagent-e2e-keys', version: '1.0.0' });
	await mcp.connect(transport);
	result.step = 'mcp: tools';
	const tools = await mcp.listTools();
	check(tools.tools.some((t) => t.name === env('TOOL')), 'the tool is listed');
	const out = await mcp.callTool({ name: env('TOOL'), arguments: { a: 2, b: 3 } });
	result.tool_result = out.content?.[0]?.text;
	check(result.tool_result === '5', `the tool answered ${result.tool_result}`);
	await mcp.close();
	result.step = 'done';
}

main().then(() => finish(), finish);
