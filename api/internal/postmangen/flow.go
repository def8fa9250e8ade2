package main

// flow is the collection's run, in the order of the original overview:
// an agent registers, authenticates and keeps its profile; it signs in to
// the example's website (demo-site of Caddyfile.example); the website
// refreshes and revokes; then the metadata. Requests come from the
// document (see generate); the table says which operation and example each
// step uses, which values are collection variables, and the scripts.
//
// In scripts, read variables with pm.variables.get (which sees an
// environment's baseUrl too) and keep them with
// pm.collectionVariables.set('name', …): the generator declares every
// variable so set, and refuses a request that uses a {{variable}} no
// earlier script sets. `$example.<field>` is the JSON value of the field
// in the step's example.
var flow = []folder{
	{
		name:        "Agents",
		description: "An agent registers (with a new id on every run), authenticates with its credentials and keeps its profile.",
		steps: []step{
			{
				id:      "registerAgent",
				op:      "registerAgent",
				example: "seed",
				set:     map[string]string{"agent_id": "{{agent_id}}", "agent_secret": "{{agent_secret}}"},
				note: "The pre-request script makes a new `agent_id` on every run (agent ids are unique on a " +
					"server, so the collection can run again against the same one) and keeps the example's secret.",
				prerequest: `
// A new agent id on every run: ids are unique on a server.
pm.collectionVariables.set('agent_id', 'postman_' + Date.now().toString(36) + '_' + Math.floor(Math.random() * 1e9).toString(36));
pm.collectionVariables.set('agent_secret', $example.agent_secret);
`,
				test: `
pm.test('201: the agent, without the secret it chose', function () {
    pm.response.to.have.status(201);
    var body = pm.response.json();
    pm.expect(body.success).to.equal(true);
    pm.expect(body.data.agent_id).to.equal(pm.variables.get('agent_id'));
    pm.expect(body.data.model_name).to.equal($example.model_name);
    pm.expect(body.data.owner_email).to.equal($example.owner_email);
    pm.expect(body.data.permissions).to.be.an('array');
    pm.expect(body.data).to.not.have.property('agent_secret');
});
`,
			},
			{
				id:      "authenticateAgent-self",
				op:      "authenticateAgent",
				label:   "as itself",
				example: "self",
				set:     map[string]string{"agent_id": "{{agent_id}}", "agent_secret": "{{agent_secret}}"},
				note:    "Without `request_id`: the agent's own access token, kept in `access_token`.",
				test: `
pm.test('200: an access token for the agent', function () {
    pm.response.to.have.status(200);
    var body = pm.response.json();
    pm.expect(body.success).to.equal(true);
    pm.expect(body.data.access_token).to.be.a('string').that.is.not.empty;
    pm.expect(body.data.token_type).to.equal('Bearer');
    pm.expect(body.data.expires_in).to.be.a('number').above(0);
    pm.expect(body.data.scope.split(' ')).to.include('profile');
    pm.expect(body.data.scope.split(' ')).to.not.include('openid');
    pm.collectionVariables.set('access_token', body.data.access_token);
});
`,
			},
			{
				id:     "getAgentProfile",
				op:     "getAgentProfile",
				bearer: "access_token",
				test: `
pm.test('200: the agent, never its secret', function () {
    pm.response.to.have.status(200);
    var data = pm.response.json().data;
    pm.expect(data.agent_id).to.equal(pm.variables.get('agent_id'));
    pm.expect(data.created_at).to.be.a('string');
    pm.expect(data).to.not.have.property('agent_secret');
});
`,
			},
			{
				id:      "updateAgentProfile",
				op:      "updateAgentProfile",
				example: "model",
				bearer:  "access_token",
				test: `
pm.test('200: the updated agent', function () {
    pm.response.to.have.status(200);
    var data = pm.response.json().data;
    pm.expect(data.agent_id).to.equal(pm.variables.get('agent_id'));
    pm.expect(data.model_name).to.equal($example.model_name);
    pm.collectionVariables.set('model_name', data.model_name);
});
`,
			},
			{
				id:     "userinfo-agentToken",
				op:     "userinfo",
				label:  "with the agent's own token (403)",
				bearer: "access_token",
				note: "**UserInfo needs a token from the sign-in flow**, one a website obtained with `openid`. " +
					"An agent's own token never carries `openid` (asking for it is `invalid_scope`), so this " +
					"answers 403 `insufficient_scope`. The same request with the website's token, after the " +
					"sign-in below, answers the claims.",
				test: `
pm.test('403 insufficient_scope: an agent\'s own token has no openid', function () {
    pm.response.to.have.status(403);
    pm.expect(pm.response.json().error).to.equal('insufficient_scope');
    pm.expect(pm.response.headers.get('WWW-Authenticate')).to.include('insufficient_scope');
});
`,
			},
		},
	},
	{
		name: "Sign in to a website",
		description: "\"Sign in with Auth Agent\" without a browser: the website (`demo-site`, a public client) " +
			"starts an authorization request with PKCE, the agent approves it, and the website exchanges the code.",
		steps: []step{
			{
				id:    "authorize-json",
				op:    "authorize",
				label: "as JSON, with PKCE",
				set: map[string]string{
					"state":          "{{state}}",
					"nonce":          "{{nonce}}",
					"code_challenge": "{{code_challenge}}",
				},
				note: "The pre-request script makes the PKCE verifier (kept for the code exchange) and its S256 " +
					"challenge, a `state` and a `nonce`. With `Accept: application/json` the answer is the " +
					"request's id, kept in `request_id`, instead of the sign-in page.",
				prerequest: `
// PKCE (RFC 7636): a random verifier and its S256 challenge; a random
// state and nonce. The code exchange sends the verifier.
var CryptoJS = require('crypto-js');
function base64url(words) {
    return CryptoJS.enc.Base64.stringify(words).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
var verifier = base64url(CryptoJS.lib.WordArray.random(32));
pm.collectionVariables.set('code_verifier', verifier);
pm.collectionVariables.set('code_challenge', base64url(CryptoJS.SHA256(verifier)));
pm.collectionVariables.set('state', base64url(CryptoJS.lib.WordArray.random(16)));
pm.collectionVariables.set('nonce', base64url(CryptoJS.lib.WordArray.random(16)));
`,
				test: `
pm.test('200: a pending sign-in request, as JSON', function () {
    pm.response.to.have.status(200);
    pm.expect(pm.response.headers.get('Content-Type')).to.include('application/json');
    var body = pm.response.json();
    pm.expect(body.request_id).to.be.a('string').that.is.not.empty;
    pm.expect(body.expires_in).to.be.a('number').above(0);
    pm.expect(body.agent_auth_endpoint).to.equal(pm.variables.get('baseUrl') + '/api/agent-auth');
    pm.expect(body.status_endpoint).to.include('/api/check-status?request_id=');
    pm.expect(body.client_id).to.equal(pm.request.url.query.get('client_id'));
    pm.expect(body.verified).to.be.a('boolean');
    pm.collectionVariables.set('request_id', body.request_id);
});
`,
			},
			{
				id:      "authenticateAgent-approve",
				op:      "authenticateAgent",
				label:   "approve the sign-in",
				example: "approve",
				set: map[string]string{
					"agent_id":     "{{agent_id}}",
					"agent_secret": "{{agent_secret}}",
					"request_id":   "{{request_id}}",
				},
				note: "The agent approves the pending request, insisting on the client and redirect it expects " +
					"(`client_id`, `redirect_uri`). The answer's `redirect_to` is where the browser would go: the " +
					"code (kept in `code`), the `state` and the issuer (`iss`, RFC 9207).",
				test: `
pm.test('200: approved; the redirect carries the code, the state and the issuer', function () {
    pm.response.to.have.status(200);
    var data = pm.response.json().data;
    pm.expect(data.status).to.equal('authenticated');
    pm.expect(data.request_id).to.equal(pm.variables.get('request_id'));
    pm.expect(data.client_id).to.equal($example.client_id);
    pm.expect(data.redirect_to.indexOf($example.redirect_uri + '?')).to.equal(0);
    var params = {};
    data.redirect_to.split('?')[1].split('&').forEach(function (pair) {
        var i = pair.indexOf('=');
        params[decodeURIComponent(pair.slice(0, i))] = decodeURIComponent(pair.slice(i + 1).replace(/\+/g, ' '));
    });
    pm.expect(params.state).to.equal(pm.variables.get('state'));
    pm.expect(params.iss).to.equal(pm.variables.get('baseUrl'));
    pm.expect(params.code).to.be.a('string').that.is.not.empty;
    pm.collectionVariables.set('code', params.code);
});
`,
			},
			{
				id:  "checkStatus",
				op:  "checkStatus",
				set: map[string]string{"request_id": "{{request_id}}"},
				note: "What the sign-in page polls. Anyone learns the status; only the browser holding the " +
					"request's binding cookie (which a runner such as Postman or newman keeps from the " +
					"authorization request) also learns `redirect_to`.",
				test: `
pm.test('200: authenticated', function () {
    pm.response.to.have.status(200);
    var body = pm.response.json();
    pm.expect(body.success).to.equal(true);
    pm.expect(body.data.status).to.equal('authenticated');
    // The browser that started the request (this runner keeps the
    // cookie /oauth2/authorize set) also learns where to go.
    if (body.data.redirect_to !== undefined) {
        pm.expect(body.data.redirect_to).to.include('code=' + encodeURIComponent(pm.variables.get('code')));
    }
});
`,
			},
			{
				id:      "token-authorizationCode",
				op:      "token",
				label:   "exchange the code",
				media:   "application/x-www-form-urlencoded",
				example: "authorizationCode",
				set:     map[string]string{"code": "{{code}}", "code_verifier": "{{code_verifier}}"},
				note: "The website redeems the code with its PKCE verifier. The tokens are kept in " +
					"`site_access_token`, `refresh_token` and `id_token`.",
				test: `
var CryptoJS = require('crypto-js');
function payload(jwt) {
    var s = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) { s += '='; }
    return JSON.parse(CryptoJS.enc.Base64.parse(s).toString(CryptoJS.enc.Utf8));
}
pm.test('200: access, refresh and ID tokens, never cached', function () {
    pm.response.to.have.status(200);
    pm.expect(pm.response.headers.get('Cache-Control')).to.equal('no-store');
    var body = pm.response.json();
    pm.expect(body.token_type).to.equal('Bearer');
    pm.expect(body.access_token).to.be.a('string').that.is.not.empty;
    pm.expect(body.refresh_token).to.be.a('string').that.is.not.empty;
    pm.expect(body.id_token).to.be.a('string').that.is.not.empty;
    pm.collectionVariables.set('site_access_token', body.access_token);
    pm.collectionVariables.set('refresh_token', body.refresh_token);
    pm.collectionVariables.set('id_token', body.id_token);
});
pm.test('the ID token names the issuer, the agent, the website and the nonce', function () {
    var claims = payload(pm.response.json().id_token);
    pm.expect(claims.iss).to.equal(pm.variables.get('baseUrl'));
    pm.expect(claims.sub).to.equal(pm.variables.get('agent_id'));
    pm.expect([].concat(claims.aud)).to.include($example.client_id);
    pm.expect(claims.nonce).to.equal(pm.variables.get('nonce'));
});
`,
			},
			{
				id:     "userinfo-siteToken",
				op:     "userinfo",
				label:  "with the website's token",
				bearer: "site_access_token",
				note:   "The token the website got from the sign-in (`openid profile email`): the agent's claims.",
				test: `
pm.test('200: the claims of the granted scopes', function () {
    pm.response.to.have.status(200);
    var claims = pm.response.json();
    pm.expect(claims.sub).to.equal(pm.variables.get('agent_id'));
    pm.expect(claims.agent_id).to.equal(pm.variables.get('agent_id'));
    pm.expect(claims.model_name).to.equal(pm.variables.get('model_name'));
    pm.expect(claims.email).to.be.a('string');
    pm.expect(claims.email_verified).to.equal(false);
});
`,
			},
		},
	},
	{
		name:        "Tokens",
		description: "The website refreshes its tokens; the agent introspects its own token; the website revokes its refresh token.",
		steps: []step{
			{
				id:      "token-refresh",
				op:      "token",
				label:   "refresh",
				media:   "application/x-www-form-urlencoded",
				example: "refresh",
				set:     map[string]string{"refresh_token": "{{refresh_token}}"},
				note:    "Refresh tokens rotate on every use: the new one replaces `refresh_token`.",
				test: `
pm.test('200: new tokens; the refresh token rotated', function () {
    pm.response.to.have.status(200);
    var body = pm.response.json();
    pm.expect(body.access_token).to.be.a('string').that.is.not.empty;
    pm.expect(body.refresh_token).to.be.a('string').that.is.not.empty;
    pm.expect(body.refresh_token).to.not.equal(pm.variables.get('refresh_token'));
    pm.collectionVariables.set('site_access_token', body.access_token);
    pm.collectionVariables.set('refresh_token', body.refresh_token);
});
`,
			},
			{
				id:    "introspect-agentToken",
				op:    "introspect",
				label: "the agent's own token",
				media: "application/x-www-form-urlencoded",
				set: map[string]string{
					"token":         "{{access_token}}",
					"client_id":     "{{agent_id}}",
					"client_secret": "{{agent_secret}}",
				},
				note: "An agent authenticates as at the token endpoint (`client_id` = its id, `client_secret` = " +
					"its secret) and learns about the tokens issued to it: here its own access token.",
				test: `
pm.test('200: the agent\'s token is active', function () {
    pm.response.to.have.status(200);
    var body = pm.response.json();
    pm.expect(body.active).to.equal(true);
    pm.expect(body.token_type).to.equal('Bearer');
    pm.expect(body.sub).to.equal(pm.variables.get('agent_id'));
    pm.expect(body.client_id).to.equal(pm.variables.get('agent_id'));
    pm.expect(body.iss).to.equal(pm.variables.get('baseUrl'));
    pm.expect(body.exp).to.be.above(body.iat);
});
`,
			},
			{
				id:    "revoke-refreshToken",
				op:    "revoke",
				label: "the website's refresh token",
				media: "application/x-www-form-urlencoded",
				set:   map[string]string{"token": "{{refresh_token}}"},
				note:  "The website (a public client: `client_id` alone) revokes its refresh token, and with it the token's family.",
				test: `
pm.test('200 with an empty body', function () {
    pm.response.to.have.status(200);
    pm.expect(pm.response.text()).to.equal('');
});
`,
			},
			{
				id:      "token-refresh-revoked",
				op:      "token",
				label:   "refresh with the revoked token",
				media:   "application/x-www-form-urlencoded",
				example: "refresh",
				set:     map[string]string{"refresh_token": "{{refresh_token}}"},
				note:    "The refresh token revoked above is refused (RFC 6749 §5.2: 400 `invalid_grant`).",
				test: `
pm.test('400 invalid_grant: the token was revoked', function () {
    pm.response.to.have.status(400);
    pm.expect(pm.response.json().error).to.equal('invalid_grant');
});
`,
			},
		},
	},
	{
		name:        "Metadata",
		description: "What clients discover: the server's metadata and the keys that verify its tokens.",
		steps: []step{
			{
				id: "getOpenIDConfiguration",
				op: "getOpenIDConfiguration",
				test: `
pm.test('200: the metadata of this issuer', function () {
    pm.response.to.have.status(200);
    var m = pm.response.json();
    var base = pm.variables.get('baseUrl');
    pm.expect(m.issuer).to.equal(base);
    pm.expect(m.authorization_endpoint).to.equal(base + '/oauth2/authorize');
    pm.expect(m.token_endpoint).to.equal(base + '/oauth2/token');
    pm.expect(m.userinfo_endpoint).to.equal(base + '/oauth2/userinfo');
    pm.expect(m.jwks_uri).to.equal(base + '/.well-known/jwks.json');
    pm.expect(m.agent_registration_endpoint).to.equal(base + '/api/register-agent');
    pm.expect(m.agent_auth_endpoint).to.equal(base + '/api/agent-auth');
    pm.expect(m.code_challenge_methods_supported).to.eql(['S256']);
    pm.expect(m.authorization_response_iss_parameter_supported).to.equal(true);
});
`,
			},
			{
				id: "getJwks",
				op: "getJwks",
				test: `
var CryptoJS = require('crypto-js');
function header(jwt) {
    var s = jwt.split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) { s += '='; }
    return JSON.parse(CryptoJS.enc.Base64.parse(s).toString(CryptoJS.enc.Utf8));
}
pm.test('200: public signing keys, among them those of the tokens above', function () {
    pm.response.to.have.status(200);
    var keys = pm.response.json().keys;
    pm.expect(keys).to.be.an('array').that.is.not.empty;
    keys.forEach(function (k) {
        pm.expect(k.use).to.equal('sig');
        pm.expect(k.kid).to.be.a('string');
        pm.expect(k).to.not.have.property('d');
    });
    var kids = keys.map(function (k) { return k.kid; });
    pm.expect(kids).to.include(header(pm.variables.get('id_token')).kid);
    pm.expect(kids).to.include(header(pm.variables.get('site_access_token')).kid);
});
`,
			},
		},
	},
}
