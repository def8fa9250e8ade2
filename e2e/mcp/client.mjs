// The MCP TypeScript SDK's client against an MCP server behind agent_guard,
// signing in at auth_agent. Run by e2e/mcp_test.go; prints one line
// `RESULT {json}` with what it saw, and exits 0 only when every step passed.
//
// Configuration (environment):
//   MCP_URL            the guarded MCP endpoint (also the RFC 8707 resource)
//   ISSUER             the authorization server the guard names
//   AGENT_ID, AGENT_SECRET   the agent that approves on the back channel
//   REDIRECT_URI       the client's redirect URI (nothing listens there: the
//                      agent's answer carries the redirect, the code is read
//                      from it)
//   MODE               dcr-scope | dcr-no-scope | cimd
//   CLIENT_METADATA_URL  for cimd: the https URL of the client's metadata
//   TOOL               the tool to list and call (with arguments {a: 2, b: 3})

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, discoverOAuthServerInfo, registerClient } from '@modelcontextprotocol/sdk/client/auth.js';
import { randomBytes } from 'node:crypto';

const env = (name) => {
	const v = process.env[name];
	if (!v) throw new Error(`${name} is not set`);
	return v;
};
const mode = env('MODE');
const mcpURL = env('MCP_URL');
const issuer = env('ISSUER');
const agentID = env('AGENT_ID');
const agentSecret = env('AGENT_SECRET');
const redirectURI = env('REDIRECT_URI');
const tool = env('TOOL');
const clientMetadataURL = mode === 'cimd' ? env('CLIENT_METADATA_URL') : undefined;

// Every step is bounded; the whole run too (the Go test kills the process
// after its own, longer, deadline).
const STEP_MS = 10_000;
const result = { mode, ok: false, step: 'start', trace: [] };
let finished = false;
function finish(err) {
	if (finished) return;
	finished = true;
	if (err) {
		result.error = String(err && err.stack ? err.stack : err);
		if (err && err.code !== undefined) result.error_code = err.code;
	} else {
		result.ok = true;
	}
	process.stdout.write('RESULT ' + JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1));
}
setTimeout(() => finish(new Error(`timed out at step ${result.step}`)), 45_000).unref();
process.on('unhandledRejection', (e) => finish(e));

function check(cond, what) {
	if (!cond) throw new Error(`assertion failed: ${what}`);
}

// Every HTTP exchange the SDK (and this script) makes, for the report: method,
// URL without its query, status, and the body of every error answer.
// Secrets are not recorded: the bodies kept are the server's errors only.
async function tracedFetch(input, init = {}) {
	const url = new URL(input instanceof Request ? input.url : String(input));
	const method = (init.method || (input instanceof Request ? input.method : 'GET')).toUpperCase();
	const entry = { method, url: url.origin + url.pathname };
	if (url.searchParams.has('scope')) entry.scope = url.searchParams.get('scope');
	if (url.searchParams.has('resource')) entry.resource = url.searchParams.getAll('resource');
	if (init.body instanceof URLSearchParams) {
		entry.grant_type = init.body.get('grant_type') || undefined;
		if (init.body.has('resource')) entry.resource = init.body.getAll('resource');
	}
	if (typeof init.body === 'string' && method === 'POST') {
		// A registration request: record the scope it asked for (none: null).
		try {
			const sent = JSON.parse(init.body);
			if (Array.isArray(sent.redirect_uris)) entry.registered_scope = sent.scope ?? null;
		} catch {
			// not JSON (an MCP message is JSON too, but has no redirect_uris)
		}
	}
	result.trace.push(entry);
	const signal = init.signal ? AbortSignal.any([init.signal, AbortSignal.timeout(STEP_MS)]) : AbortSignal.timeout(STEP_MS);
	let resp;
	try {
		resp = await fetch(input, { ...init, signal });
	} catch (e) {
		entry.error = String(e);
		throw e;
	}
	entry.status = resp.status;
	const location = resp.headers.get('location');
	if (location) {
		const loc = new URL(location, url);
		entry.location = loc.origin + loc.pathname;
		for (const k of ['error', 'error_description']) if (loc.searchParams.has(k)) entry[k === 'error' ? 'redirect_error' : k] = loc.searchParams.get(k);
	}
	if (resp.status >= 400) {
		entry.body = (await resp.clone().text()).slice(0, 2000);
		const challenge = resp.headers.get('www-authenticate');
		if (challenge) entry.www_authenticate = challenge;
	}
	return resp;
}

function jwtPayload(jwt) {
	const parts = String(jwt).split('.');
	check(parts.length === 3, 'the access token is a JWT');
	return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

// An OAuthClientProvider holding everything in memory. redirectToAuthorization
// does what a headless agent does: it asks the IdP for the pending request as
// JSON, approves it with its own credentials on the back channel and keeps the
// code from the redirect it is handed.
class HeadlessProvider {
	constructor() {
		this._clientInformation = undefined;
		this._tokens = undefined;
		this._codeVerifier = undefined;
		this._state = undefined;
		this.savedTokens = [];
		this.pendingCode = undefined;
		this.discovery = undefined;
		this.authorizationRequests = [];
		if (clientMetadataURL) this.clientMetadataUrl = clientMetadataURL;
	}

	get redirectUrl() {
		return redirectURI;
	}

	get clientMetadata() {
		const md = {
			client_name: `authagent e2e MCP client (${mode})`,
			redirect_uris: [redirectURI],
			grant_types: ['authorization_code', 'refresh_token'],
			response_types: ['code'],
		};
		if (mode === 'dcr-scope') {
			// The SDK's own example client (examples/client/simpleOAuthClient):
			// confidential, with the scope it needs.
			md.token_endpoint_auth_method = 'client_secret_post';
			md.scope = 'mcp:tools';
		} else {
			md.token_endpoint_auth_method = 'none';
		}
		return md;
	}

	state() {
		this._state = randomBytes(16).toString('base64url');
		return this._state;
	}

	clientInformation() {
		return this._clientInformation;
	}

	saveClientInformation(info) {
		this._clientInformation = info;
	}

	tokens() {
		return this._tokens;
	}

	saveTokens(tokens) {
		this._tokens = tokens;
		this.savedTokens.push(tokens);
	}

	saveCodeVerifier(v) {
		this._codeVerifier = v;
	}

	codeVerifier() {
		check(this._codeVerifier, 'a code verifier was saved before the code exchange');
		return this._codeVerifier;
	}

	saveDiscoveryState(s) {
		this.discovery = s;
	}

	discoveryState() {
		return this.discovery;
	}

	async redirectToAuthorization(authorizationURL) {
		const u = new URL(authorizationURL);
		const params = Object.fromEntries(u.searchParams);
		this.authorizationRequests.push(params);
		// Not followed: an error goes back to the redirect URI (where nothing
		// listens), and is reported from the Location instead.
		const pending = await tracedFetch(u, { headers: { Accept: 'application/json' }, redirect: 'manual' });
		const pendingBody = await pending.text();
		if (pending.status >= 300 && pending.status < 400) {
			const loc = new URL(pending.headers.get('location') || '', u);
			throw new Error(`the authorization endpoint redirected to ${loc.origin + loc.pathname} with error=${loc.searchParams.get('error')} error_description=${JSON.stringify(loc.searchParams.get('error_description'))}`);
		}
		check(pending.status === 200, `GET ${u.pathname} (Accept: application/json) answers 200, got ${pending.status} ${pendingBody}`);
		const req = JSON.parse(pendingBody);
		check(typeof req.request_id === 'string' && req.request_id, `the pending request has a request_id: ${pendingBody}`);
		const approve = await tracedFetch(req.agent_auth_endpoint || new URL('/api/agent-auth', issuer), {
			method: 'POST',
			headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
			body: JSON.stringify({ agent_id: agentID, agent_secret: agentSecret, request_id: req.request_id }),
		});
		const approveBody = await approve.text();
		check(approve.status === 200, `the agent's approval answers 200, got ${approve.status} ${approveBody}`);
		const data = JSON.parse(approveBody).data || {};
		check(data.status === 'authenticated' && data.redirect_to, `the approval is authenticated with a redirect: ${approveBody}`);
		const back = new URL(data.redirect_to);
		check(back.origin + back.pathname === redirectURI, `the redirect goes to the redirect URI: ${back.origin + back.pathname}`);
		const err = back.searchParams.get('error');
		check(!err, `the redirect carries no error: ${err} ${back.searchParams.get('error_description') || ''}`);
		check(back.searchParams.get('state') === this._state, 'the redirect returns the state');
		check(back.searchParams.get('iss') === issuer, `the redirect carries iss = the issuer (RFC 9207), got ${back.searchParams.get('iss')}`);
		this.pendingCode = back.searchParams.get('code');
		check(this.pendingCode, 'the redirect carries a code');
	}
}

function newTransport(provider) {
	return new StreamableHTTPClientTransport(new URL(mcpURL), { authProvider: provider, fetch: tracedFetch });
}

async function main() {
	const provider = new HeadlessProvider();
	const opts = { timeout: STEP_MS };

	if (mode === 'dcr-no-scope') {
		// SDK 1.32.2's auth() applies the scope selection strategy (SEP-835) to
		// registration too: it sends the challenge's scope (or the resource
		// metadata's scopes_supported) even when the app's metadata has none.
		// A client that registers with only its own metadata (the Go SDK, older
		// TS SDKs) is reproduced with the SDK's own discovery and registerClient,
		// called as auth() calls them but without the scope override.
		result.step = 'register without scope';
		const info = await discoverOAuthServerInfo(new URL(mcpURL), { fetchFn: tracedFetch });
		check(info.authorizationServerMetadata, 'authorization server metadata was found');
		const registered = await registerClient(info.authorizationServerUrl, {
			metadata: info.authorizationServerMetadata,
			clientMetadata: provider.clientMetadata,
			fetchFn: tracedFetch,
		});
		provider.saveClientInformation({ ...registered, issuer: String(info.authorizationServerUrl) });
	}

	// 1. The first connection: 401, discovery, registration, authorization.
	result.step = 'first connect (401, discovery, registration, authorization)';
	let transport = newTransport(provider);
	let client = new Client({ name: 'authagent-e2e', version: '1.0.0' }, { capabilities: {} });
	let firstErr;
	try {
		await client.connect(transport, opts);
	} catch (e) {
		firstErr = e;
	}
	if (mode === 'cimd' && provider.discovery) {
		const md = provider.discovery.authorizationServerMetadata || {};
		check(md.client_id_metadata_document_supported === true, 'the authorization server metadata says client_id_metadata_document_supported: true (else the SDK falls back to registration)');
	}
	if (!(firstErr instanceof UnauthorizedError)) {
		throw firstErr || new Error('the first connection succeeded without authorization');
	}
	const first401 = result.trace.find((e) => e.status === 401 && e.url === mcpURL);
	check(first401, 'the MCP endpoint answered 401 first');
	result.challenge = first401.www_authenticate;
	check(provider.discovery, 'the SDK saved its discovery state');
	result.authorization_server = provider.discovery.authorizationServerUrl;
	result.resource_metadata = provider.discovery.resourceMetadata;
	const asMeta = provider.discovery.authorizationServerMetadata || {};
	result.as_metadata = {
		issuer: asMeta.issuer,
		registration_endpoint: asMeta.registration_endpoint,
		client_id_metadata_document_supported: asMeta.client_id_metadata_document_supported,
		code_challenge_methods_supported: asMeta.code_challenge_methods_supported,
		token_endpoint_auth_methods_supported: asMeta.token_endpoint_auth_methods_supported,
	};
	const info = provider.clientInformation();
	check(info && info.client_id, 'client information was saved');
	result.client = {
		client_id: info.client_id,
		has_secret: typeof info.client_secret === 'string' && info.client_secret !== '',
		scope: info.scope,
		token_endpoint_auth_method: info.token_endpoint_auth_method,
		redirect_uris: info.redirect_uris,
	};
	if (mode === 'cimd') {
		check(asMeta.client_id_metadata_document_supported === true, 'the authorization server metadata says client_id_metadata_document_supported: true (else the SDK falls back to registration)');
		check(info.client_id === clientMetadataURL, `the client_id is the metadata document's URL, got ${info.client_id}`);
		check(!result.trace.some((e) => e.method === 'POST' && e.url === asMeta.registration_endpoint), 'no dynamic registration happened');
	} else {
		const reg = result.trace.find((e) => e.method === 'POST' && e.url === asMeta.registration_endpoint);
		check(reg && reg.status === 201, 'the client registered dynamically (201)');
		result.registration_request_scope = reg.registered_scope;
	}
	check(provider.authorizationRequests.length === 1, 'one authorization request');
	result.authorization_request = provider.authorizationRequests[0];
	check(result.authorization_request.resource === mcpURL, `the authorization request names the resource ${mcpURL}, got ${result.authorization_request.resource}`);
	check(result.authorization_request.code_challenge_method === 'S256', 'PKCE S256');

	// 2. The code exchange, then a new connection with the token.
	result.step = 'finishAuth (code exchange)';
	await transport.finishAuth(provider.pendingCode);
	const tokens = provider.tokens();
	check(tokens && tokens.access_token, 'tokens were saved');
	check(tokens.refresh_token, 'the code exchange returned a refresh token');
	result.token = { scope: tokens.scope, token_type: tokens.token_type, expires_in: tokens.expires_in, claims: jwtPayload(tokens.access_token) };
	await transport.close().catch(() => {});

	result.step = 'connect with the token';
	transport = newTransport(provider);
	client = new Client({ name: 'authagent-e2e', version: '1.0.0' }, { capabilities: {} });
	await client.connect(transport, opts);

	result.step = 'tools/list';
	const list = await client.listTools(undefined, opts);
	result.tools = list.tools.map((t) => t.name);
	check(result.tools.includes(tool), `tools/list names ${tool}: ${result.tools}`);

	result.step = 'tools/call';
	const call = await client.callTool({ name: tool, arguments: { a: 2, b: 3 } }, undefined, opts);
	result.call = { isError: call.isError, content: call.content, structuredContent: call.structuredContent };
	check(!call.isError, `the tool call succeeded: ${JSON.stringify(call.content)}`);

	// 3. Refresh: the stored access token no longer works, the refresh token
	// does; the SDK refreshes on the guard's 401 and retries the call.
	result.step = 'refresh on 401';
	const before = provider.tokens();
	const savedBefore = provider.savedTokens.length;
	provider._tokens = { ...before, access_token: 'not-a-valid-token' };
	const again = await client.callTool({ name: tool, arguments: { a: 20, b: 22 } }, undefined, opts);
	result.refresh_call = { isError: again.isError, content: again.content, structuredContent: again.structuredContent };
	check(!again.isError, `the call after the refresh succeeded: ${JSON.stringify(again.content)}`);
	check(provider.savedTokens.length === savedBefore + 1, 'the SDK saved new tokens once');
	const refreshed = provider.tokens();
	check(refreshed.access_token !== 'not-a-valid-token' && refreshed.access_token !== before.access_token, 'a new access token was saved');
	result.refreshed = {
		scope: refreshed.scope,
		claims: jwtPayload(refreshed.access_token),
		rotated: refreshed.refresh_token !== before.refresh_token,
	};
	check(result.trace.some((e) => e.method === 'POST' && e.grant_type === 'refresh_token' && e.status === 200), 'a refresh_token grant answered 200');

	await client.close().catch(() => {});
	result.step = 'done';
}

main().then(() => finish(), finish);
