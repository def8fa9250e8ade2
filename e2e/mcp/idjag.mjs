// Enterprise-managed authorization (ID-JAG) across two auth_agent servers,
// every token-endpoint call made with oauth4webapi's
// genericTokenEndpointRequest: an agent signs in to client IDP_CLIENT_ID at
// the IdP (A) and gets an ID token; A exchanges it for an ID-JAG meant for
// the MCP server's authorization server (B); B, trusting A, redeems the
// ID-JAG with the jwt-bearer grant for an access token whose aud is its
// guarded MCP resource; the MCP TypeScript SDK then lists and calls a tool
// through B's agent_guard. Run by e2e/idjag_test.go; prints one line
// `RESULT {json}` and exits 0 only when every step passed.
//
// Configuration (environment):
//   IDP_ISSUER, IDP_CLIENT_ID, IDP_CLIENT_SECRET, REDIRECT_URI   A and its client
//   AGENT_ID, AGENT_SECRET                                       the agent signing in at A
//   AS_ISSUER, AS_CLIENT_ID, AS_CLIENT_SECRET                    B and the client at B
//   MCP_URL, TOOL                                                B's guarded MCP endpoint (the resource) and a tool

import * as oauth from 'oauth4webapi';
import { check, env, reporter } from './script.mjs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const result = { ok: false, step: 'start' };
const finish = reporter(result);
const insecure = { [oauth.allowInsecureRequests]: true };

async function discover(issuer) {
	return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }));
}

async function main() {
	const idpIssuer = new URL(env('IDP_ISSUER'));
	const asIssuer = new URL(env('AS_ISSUER'));
	const mcpURL = env('MCP_URL');

	result.step = 'discovery';
	const idp = await discover(idpIssuer);
	const as = await discover(asIssuer);
	check(as.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:jwt-bearer'), 'B lists the jwt-bearer grant');

	// The agent signs in to the desktop client at A, approving on the back
	// channel; the client gets an ID token.
	result.step = 'sign-in at the IdP';
	const desktop = { client_id: env('IDP_CLIENT_ID') };
	const desktopAuth = oauth.ClientSecretPost(env('IDP_CLIENT_SECRET'));
	const verifier = oauth.generateRandomCodeVerifier();
	const state = oauth.generateRandomState();
	const authz = new URL(idp.authorization_endpoint);
	for (const [k, v] of Object.entries({
		client_id: desktop.client_id, redirect_uri: env('REDIRECT_URI'), response_type: 'code', scope: 'openid profile',
		code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state,
	})) authz.searchParams.set(k, v);
	const started = await (await fetch(authz, { headers: { Accept: 'application/json' } })).json();
	check(started.request_id, `authorize answered ${JSON.stringify(started)}`);
	const approved = await (await fetch(new URL('/api/agent-auth', idpIssuer), {
		method: 'POST', headers: { 'Content-Type': 'application/json' },
		body: JSON.stringify({ agent_id: env('AGENT_ID'), agent_secret: env('AGENT_SECRET'), request_id: started.request_id }),
	})).json();
	check(approved.data?.redirect_to, `agent-auth answered ${JSON.stringify(approved)}`);
	const params = oauth.validateAuthResponse(idp, desktop, new URL(approved.data.redirect_to), state);
	const signedIn = await oauth.processGenericTokenEndpointResponse(idp, desktop,
		await oauth.genericTokenEndpointRequest(idp, desktop, desktopAuth, 'authorization_code',
			new URLSearchParams({ code: params.get('code'), redirect_uri: env('REDIRECT_URI'), code_verifier: verifier }), insecure));
	check(signedIn.id_token, 'an ID token');

	// A issues an ID-JAG for B by token exchange.
	result.step = 'ID-JAG from the IdP';
	const jag = await oauth.processGenericTokenEndpointResponse(idp, desktop,
		await oauth.genericTokenEndpointRequest(idp, desktop, desktopAuth, 'urn:ietf:params:oauth:grant-type:token-exchange', new URLSearchParams({
			requested_token_type: 'urn:ietf:params:oauth:token-type:id-jag',
			subject_token: signedIn.id_token,
			subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
			audience: asIssuer.href.replace(/\/$/, ''),
			resource: mcpURL,
			scope: 'mcp:tools',
		}), insecure),
		// An ID-JAG is no access token: token_type N_A (RFC 8693 §2.2.1).
		{ recognizedTokenTypes: { n_a: () => {} } });
	check(jag.issued_token_type === 'urn:ietf:params:oauth:token-type:id-jag', `issued_token_type ${jag.issued_token_type}`);
	check(jag.token_type === 'n_a', `token_type ${jag.token_type}`);
	const header = JSON.parse(Buffer.from(jag.access_token.split('.')[0], 'base64url').toString());
	check(header.typ === 'oauth-id-jag+jwt', `typ ${header.typ}`);
	result.id_jag = true;

	// B redeems it with the jwt-bearer grant.
	result.step = 'jwt-bearer at the MCP authorization server';
	const mcpClient = { client_id: env('AS_CLIENT_ID') };
	const tokens = await oauth.processGenericTokenEndpointResponse(as, mcpClient,
		await oauth.genericTokenEndpointRequest(as, mcpClient, oauth.ClientSecretPost(env('AS_CLIENT_SECRET')), 'urn:ietf:params:oauth:grant-type:jwt-bearer',
			new URLSearchParams({ assertion: jag.access_token }), insecure));
	check(tokens.token_type === 'bearer' && !tokens.refresh_token, 'a bearer token, no refresh token');
	const claims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url').toString());
	check(claims.aud === mcpURL || (Array.isArray(claims.aud) && claims.aud.includes(mcpURL)), `aud ${JSON.stringify(claims.aud)}`);
	check(claims.idp === idpIssuer.href.replace(/\/$/, ''), `idp ${claims.idp}`);
	result.access_token = true;

	// A real MCP client calls a tool through B's guard with it.
	result.step = 'mcp: connect';
	const transport = new StreamableHTTPClientTransport(new URL(mcpURL), {
		requestInit: { headers: { Authorization: `Bearer ${tokens.access_token}` } },
	});
	const mcp = new Client({ name: 'authagent-e2e-idjag', version: '1.0.0' });
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
