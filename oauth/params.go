package oauth

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// readParams reads the body of /oauth2/token, /introspect and /revoke:
// application/x-www-form-urlencoded (RFC 6749) or a flat JSON object of
// strings (what agent SDKs send). A parameter given twice is
// invalid_request (RFC 6749 §3.2), but for resource (RFC 8707 §2).
func readParams(w http.ResponseWriter, r *http.Request, max int64) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, ErrInvalidRequest("the body must be application/x-www-form-urlencoded or application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		return nil, readError(err)
	}
	var v url.Values
	switch mt {
	case "application/x-www-form-urlencoded":
		if v, err = url.ParseQuery(string(body)); err != nil {
			return nil, ErrInvalidRequest("the form body is malformed")
		}
	case "application/json":
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil || m == nil {
			return nil, ErrInvalidRequest("the request body is not a valid JSON object")
		}
		keys, err := objectKeys(body)
		if err != nil {
			return nil, ErrInvalidRequest("the request body is not a valid JSON object")
		}
		if err := checkKeys(keys, formParams); err != nil {
			return nil, err
		}
		v = make(url.Values, len(m))
		for k, val := range m {
			switch x := val.(type) {
			case string:
				v.Set(k, x)
			case nil:
			default:
				return nil, ErrInvalidRequest("parameter " + k + " must be a string")
			}
		}
	default:
		return nil, ErrInvalidRequest("the body must be application/x-www-form-urlencoded or application/json")
	}
	for k, vals := range v {
		// resource alone may repeat (RFC 8707 §2).
		if len(vals) > 1 && k != "resource" {
			return nil, ErrInvalidRequest("parameter " + k + " is given more than once")
		}
	}
	return v, nil
}

// single returns a parameter that must appear at most once (authorize
// query strings).
func single(v url.Values, key string) (string, error) {
	vals := v[key]
	if len(vals) > 1 {
		return "", ErrInvalidRequest("parameter " + key + " is given more than once")
	}
	if len(vals) == 0 {
		return "", nil
	}
	return vals[0], nil
}

// clientCredentials is how the caller presented itself.
type clientCredentials struct {
	id, secret string
	basic      bool
	// assertion is a private_key_jwt client assertion (RFC 7523 §2.2).
	assertion string
}

// readClientCredentials takes client_secret_basic, client_secret_post or
// private_key_jwt (one of them), or a bare client_id (none).
func readClientCredentials(r *http.Request, params url.Values) (clientCredentials, error) {
	if params.Has("client_assertion") || params.Has("client_assertion_type") {
		return readClientAssertion(r, params)
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return clientCredentials{}, ErrInvalidClient("client authentication must use HTTP Basic or the body")
		}
		if params.Get("client_secret") != "" {
			return clientCredentials{}, ErrInvalidRequest("use one client authentication method, not two")
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return clientCredentials{}, basicFailure("malformed HTTP Basic credentials")
		}
		id, secret, ok := strings.Cut(string(raw), ":")
		if !ok {
			return clientCredentials{}, basicFailure("malformed HTTP Basic credentials")
		}
		// RFC 6749 §2.3.1: both parts are form-encoded.
		if id, err = url.QueryUnescape(id); err != nil {
			return clientCredentials{}, basicFailure("malformed HTTP Basic credentials")
		}
		if secret, err = url.QueryUnescape(secret); err != nil {
			return clientCredentials{}, basicFailure("malformed HTTP Basic credentials")
		}
		if p := params.Get("client_id"); p != "" && p != id {
			return clientCredentials{}, ErrInvalidRequest("client_id in the body differs from the authenticated client")
		}
		return clientCredentials{id: id, secret: secret, basic: true}, nil
	}
	id := params.Get("client_id")
	if id == "" {
		return clientCredentials{}, ErrInvalidClient("client authentication is required")
	}
	return clientCredentials{id: id, secret: params.Get("client_secret")}, nil
}

// readClientAssertion takes private_key_jwt: client_assertion_type,
// client_assertion and, optionally, client_id (else the assertion's iss
// names the client, whose keys then verify it).
func readClientAssertion(r *http.Request, params url.Values) (clientCredentials, error) {
	assertion := params.Get("client_assertion")
	switch {
	case params.Get("client_assertion_type") != ClientAssertionType:
		return clientCredentials{}, ErrInvalidRequest("client_assertion_type must be " + ClientAssertionType)
	case assertion == "":
		return clientCredentials{}, ErrInvalidRequest("client_assertion is required with client_assertion_type")
	case r.Header.Get("Authorization") != "" || params.Get("client_secret") != "":
		return clientCredentials{}, ErrInvalidRequest("use one client authentication method, not two")
	case len(assertion) > maxAssertionBytes:
		return clientCredentials{}, ErrInvalidClient("client_assertion is too long")
	}
	id := params.Get("client_id")
	if id == "" {
		iss, err := assertionSubject(assertion)
		if err != nil {
			return clientCredentials{}, ErrInvalidClient(err.Error())
		}
		id = iss
	}
	return clientCredentials{id: id, assertion: assertion}, nil
}
