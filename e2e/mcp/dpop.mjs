// DPoP-bound tokens (RFC 9449) against auth_agent, driven by oauth4webapi
// (an independent OAuth library) unmodified: an agent with keys gets a
// DPoP-bound token by client_credentials (private_key_jwt) and calls
// guarded APIs with proofs; a public client gets one by the authorization
// code flow bound with dpop_jkt (the agent approving on the back channel
// with an assertion), reads userinfo, refreshes with its bound refresh
// token, and calls the guarded API. Server nonces are on: every first
// request is answered use_dpop_nonce and retried. Run by
// e2e/dpop_test.go; prints one line `RESULT {json}` and exits 0 only when
// every step passed.
//
// Configuration (environment):
//   ISSUER                 the authorization server
//   API_URL                a guarded API (agent_guard, scope data:read)
//   STRICT_API_URL         a guarded API with `dpop required`
//   AGENT_ID, AGENT_JWK    the agent with keys and its private key (a JWK, ES256)
//   CLIENT_ID, REDIRECT_URI the public client

import * as oauth from 'oauth4webapi';
import { check, env, reporter } from './script.mjs';

const result = { ok: false, step: 'start', nonce_retries: 0 };
const finish = reporter(result);

// The server under test is on http://127.0.0.1 (loopback, no TLS).
const insecure = { [oauth.allowInsecureRequests]: true };

// retry runs a request once more when the server asks for its nonce
// (the DPoP handle has remembered it from the refusal).
async function retry(fn) {
	try {
		return await fn();
	} catch (err) {
		if (!oauth.isDPoPNonceError(err)) throw err;
		result.nonce_retries++;
		return fn();
	}
}

// callAPI calls a guarded API with a DPoP-bound token and its proofs.
async function callAPI(url, token, dpop) {
	const res = await retry(() => oauth.protectedResourceRequest(token, 'GET', new URL(url), new Headers(), null, { DPoP: dpop, ...insecure }));
	check(res.status === 200, `${url} answered ${res.status}`);
	return res.json();
}

async function main() {
	const issuer = new URL(env('ISSUER'));

	result.step = 'discovery';
	const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }));
	check(as.dpop_signing_alg_values_supported?.includes('ES256'), 'discovery lists the DPoP algorithms');

	// An agent with keys: client_credentials with private_key_jwt and a
	// DPoP proof; the token is bound and works at the guards with proofs.
	result.step = 'agent: client_credentials';
	const agentJWK = JSON.parse(env('AGENT_JWK'));
	const agent = { client_id: env('AGENT_ID') };
	const agentKey = await crypto.subtle.importKey('jwk', agentJWK, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
	const agentAuth = oauth.PrivateKeyJwt({ key: agentKey, kid: agentJWK.kid });
	const agentDPoP = oauth.DPoP(agent, await oauth.generateKeyPair('ES256'));
	const cc = await retry(async () =>
		oauth.processClientCredentialsResponse(as, agent,
			await oauth.clientCredentialsGrantRequest(as, agent, agentAuth, new URLSearchParams({ scope: 'data:read' }), { DPoP: agentDPoP, ...insecure })));
	check(cc.token_type === 'dpop', `agent: token_type ${cc.token_type}`);
	result.agent_token_type = cc.token_type;

	result.step = 'agent: guarded APIs';
	const seen = await callAPI(env('API_URL'), cc.access_token, agentDPoP);
	check(seen['X-Agent-Id'] === agent.client_id, `the API saw ${seen['X-Agent-Id']}`);
	await callAPI(env('STRICT_API_URL'), cc.access_token, agentDPoP);
	result.agent_api = true;

	// A public client: the authorization code flow bound with dpop_jkt; the
	// agent approves on the back channel with an assertion.
	result.step = 'app: authorize';
	const app = { client_id: env('CLIENT_ID') };
	const appDPoP = oauth.DPoP(app, await oauth.generateKeyPair('ES256'));
	const verifier = oauth.generateRandomCodeVerifier();
	const state = oauth.generateRandomState();
	const nonce = oauth.generateRandomNonce();
	const authz = new URL(as.authorization_endpoint);
	for (const [k, v] of Object.entries({
		client_id: app.client_id, redirect_uri: env('REDIRECT_URI'), response_type: 'code', scope: 'openid profile data:read',
		code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce,
		dpop_jkt: await appDPoP.calculateThumbprint(),
	})) authz.searchParams.set(k, v);
	const started = await (await fetch(authz, { headers: { Accept: 'application/json' } })).json();
	check(started.request_id, `authorize answered ${JSON.stringify(started)}`);

	result.step = 'app: the agent approves';
	const assertion = async () => {
		const now = Math.floor(Date.now() / 1000);
		const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
		const input = `${enc({ alg: 'ES256', kid: agentJWK.kid, typ: 'JWT' })}.${enc({ iss: agent.client_id, sub: agent.client_id, aud: issuer.href.replace(/\/$/, ''), iat: now, exp: now + 60, jti: crypto.randomUUID() })}`;
		const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, agentKey, new TextEncoder().encode(input));
		return `${input}.${Buffer.from(sig).toString('base64url')}`;
	};
	const approved = await (await fetch(new URL('/api/agent-auth', issuer), {
		method: 'POST', headers: { 'Content-Type': 'application/json' },
		body: JSON.stringify({ request_id: started.request_id, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await assertion() }),
	})).json();
	check(approved.data?.redirect_to, `agent-auth answered ${JSON.stringify(approved)}`);

	result.step = 'app: code redemption';
	const params = oauth.validateAuthResponse(as, app, new URL(approved.data.redirect_to), state);
	const tokens = await retry(async () =>
		oauth.processAuthorizationCodeResponse(as, app,
			await oauth.authorizationCodeGrantRequest(as, app, oauth.None(), params, env('REDIRECT_URI'), verifier, { DPoP: appDPoP, ...insecure }),
			{ expectedNonce: nonce, requireIdToken: true }));
	check(tokens.token_type === 'dpop' && tokens.refresh_token, `app: token_type ${tokens.token_type}, a refresh token`);
	result.app_token_type = tokens.token_type;

	result.step = 'app: userinfo';
	const sub = oauth.getValidatedIdTokenClaims(tokens).sub;
	const info = await retry(async () =>
		oauth.processUserInfoResponse(as, app, sub, await oauth.userInfoRequest(as, app, tokens.access_token, { DPoP: appDPoP, ...insecure })));
	check(info.sub === agent.client_id, `userinfo sub ${info.sub}`);

	result.step = 'app: guarded API';
	await callAPI(env('API_URL'), tokens.access_token, appDPoP);

	// Another key cannot use the bound refresh token.
	result.step = 'app: refresh with another key';
	const thief = oauth.DPoP(app, await oauth.generateKeyPair('ES256'));
	let stolen = null;
	try {
		await retry(async () =>
			oauth.processRefreshTokenResponse(as, app, await oauth.refreshTokenGrantRequest(as, app, oauth.None(), tokens.refresh_token, { DPoP: thief, ...insecure })));
	} catch (err) {
		stolen = err;
	}
	check(stolen?.error === 'invalid_grant', `a bound refresh token with another key: ${stolen?.error ?? 'accepted'}`);

	result.step = 'app: refresh';
	const refreshed = await retry(async () =>
		oauth.processRefreshTokenResponse(as, app, await oauth.refreshTokenGrantRequest(as, app, oauth.None(), tokens.refresh_token, { DPoP: appDPoP, ...insecure })));
	check(refreshed.token_type === 'dpop' && refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'app: refreshed and rotated');
	await callAPI(env('STRICT_API_URL'), refreshed.access_token, appDPoP);
	result.refreshed = true;
	result.step = 'done';
}

main().then(() => finish(), finish);
