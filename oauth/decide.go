package oauth

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/authagent/caddy-authagent/agents"
)

// The decisions of the grants: typed values in, a decision out, no I/O and
// no clock but the one passed in. The endpoints read what these need from
// the stores, decide, and write the outcome (often inside the store's
// compare-and-swap, so the decision and its record are one step).

// requestStatus is what check-status says of an authorization request (nil
// when it is not, or no longer, stored).
func requestStatus(req *AuthRequest, now time.Time) string {
	switch {
	case req == nil || !now.Before(req.ExpiresAt):
		return statusExpired
	case req.Approval != nil:
		return statusAuthenticated
	}
	return statusPending
}

// approvalExpectation is what the approving agent insists the request is
// for (the defence against request-id phishing, RFC 8628 §5.4 applied to
// agents): a client id, and the host its browser returns to. Empty parts
// are not checked.
type approvalExpectation struct {
	clientID     string
	redirectHost string
}

// parseApprovalExpectation reads the client_id and redirect_uri an agent
// sent with its approval; redirect_uri may be a URI (its host counts, or
// its scheme when it is a private-use one) or a bare host[:port].
func parseApprovalExpectation(clientID, redirectURI string) (approvalExpectation, error) {
	e := approvalExpectation{clientID: clientID}
	switch {
	case redirectURI == "":
		return e, nil
	case strings.Contains(redirectURI, "://"):
		u, err := url.Parse(redirectURI)
		if err != nil || u.Host == "" {
			return e, ErrInvalidRequest("redirect_uri is not an absolute URI")
		}
		e.redirectHost = redirectHost(redirectURI)
	case privateUseURI.MatchString(redirectURI):
		e.redirectHost = redirectHost(redirectURI)
	case strings.ContainsAny(redirectURI, "/?#@ "):
		return e, ErrInvalidRequest("redirect_uri is neither an absolute URI nor a host")
	default:
		e.redirectHost = canonicalHost("", redirectURI)
	}
	return e, nil
}

// privateUseURI is a private-use scheme's URI (RFC 8252 §7.1), such as
// com.example.app:/callback.
var privateUseURI = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:/[^/]`)

// decideApproval decides whether agent a may complete req: the request is
// pending and unexpired, it is for the client and redirect host the agent
// expects (when it said), and the agent holds every API scope it asks for.
func decideApproval(req *AuthRequest, a *agents.Agent, now time.Time, expect approvalExpectation) error {
	switch requestStatus(req, now) {
	case statusExpired:
		return ErrInvalidRequest("request_id is unknown or expired")
	case statusAuthenticated:
		return errNotPending
	}
	if expect.clientID != "" && expect.clientID != req.ClientID {
		return ErrInvalidRequest(fmt.Sprintf("this sign-in request is for client %q, not %q: it was not approved", req.ClientID, expect.clientID))
	}
	if expect.redirectHost != "" && expect.redirectHost != redirectHost(req.RedirectURI) {
		return ErrInvalidRequest(fmt.Sprintf("this sign-in request returns to %q, not %q: it was not approved", redirectHost(req.RedirectURI), expect.redirectHost))
	}
	for _, sc := range req.Scopes {
		if !permits(a.Permissions, sc) {
			return ErrInvalidScope("the agent does not have permission " + sc)
		}
	}
	return nil
}

// codeRedemption is an authorization_code grant request.
type codeRedemption struct {
	clientID    string
	redirectURI string
	verifier    string
}

// decideRedemption decides whether q may redeem the code of g.
func decideRedemption(g *CodeGrant, q codeRedemption, now time.Time) error {
	switch {
	case !now.Before(g.ExpiresAt):
		return ErrInvalidGrant("the code is invalid or expired")
	case g.ClientID != q.clientID:
		return ErrInvalidGrant("the code was issued to another client")
	case g.RedirectURI != q.redirectURI:
		return ErrInvalidGrant("redirect_uri does not match the authorization request")
	case !verifyPKCE(q.verifier, g.CodeChallenge):
		return ErrInvalidGrant("code_verifier does not match the code_challenge")
	}
	return nil
}

// decideRefresh decides a refresh_token grant: the token is the client's
// and its family unexpired, and the scope is the requested narrowing of the
// granted one less any API scope the agent has lost since.
func decideRefresh(g *RefreshGrant, clientID, requested string, a *agents.Agent, now time.Time) ([]string, error) {
	if g.ClientID != clientID {
		return nil, ErrInvalidGrant("the refresh token was issued to another client")
	}
	if !now.Before(g.ExpiresAt) {
		return nil, ErrInvalidGrant("the refresh token is invalid or expired")
	}
	scopes, err := narrowScope(requested, g.Scopes)
	if err != nil {
		return nil, err
	}
	return heldScopes(scopes, a), nil
}

// narrowScope applies a requested scope to what was granted: a subset, or
// everything when nothing is requested.
func narrowScope(requested string, granted []string) ([]string, error) {
	req, err := ParseScope(requested)
	if err != nil {
		return nil, err
	}
	if len(req) == 0 {
		return granted, nil
	}
	for _, sc := range req {
		if !slices.Contains(granted, sc) {
			return nil, ErrInvalidScope("scope " + sc + " was not granted; a scope can be narrowed, never widened")
		}
	}
	return req, nil
}

// checkExchangeSubject is the part of decideExchange that needs no
// record: the subject token may be exchanged by actor at all, because it
// was issued to it or is meant for it (possession alone is not enough).
func checkExchangeSubject(sub *AccessClaims, actor string) error {
	if strings.Count(sub.ID, ".") >= maxExchangeDepth {
		return ErrInvalidGrant("subject_token was exchanged too many times already")
	}
	if sub.ClientID != actor && !slices.Contains(sub.Audience, actor) {
		return ErrInvalidGrant("subject_token was neither issued to nor meant for this client")
	}
	return nil
}

// exchangeRequest is an RFC 8693 token-exchange request, its subject token
// already verified and not revoked.
type exchangeRequest struct {
	subject  *AccessClaims
	scope    string
	audience []string // resource and audience parameters, checked
}

// exchangeActor is who asks for an exchange: a client, or an agent acting
// as its own client, and what it may hold.
type exchangeActor struct {
	id  string
	may func(scope string) bool
}

// exchangeSubject is whom the subject token speaks for, as it stands now:
// an agent (its permissions may have shrunk since) or a client (a
// client_credentials token).
type exchangeSubject struct {
	model string
	holds func(scope string) bool
}

// clientActor and agentActor are the two kinds of exchangeActor.
func clientActor(c *Client) exchangeActor { return exchangeActor{id: c.ID, may: c.MayRequest} }

func agentActor(a *agents.Agent) exchangeActor { return exchangeActor{id: a.ID, may: agentHolds(a)} }

// agentSubject and clientSubject are the two kinds of exchangeSubject.
func agentSubject(a *agents.Agent) exchangeSubject {
	return exchangeSubject{model: a.ModelName, holds: agentHolds(a)}
}

func clientSubject(c *Client) exchangeSubject { return exchangeSubject{holds: c.MayRequest} }

// agentHolds reports whether agent a may hold scope sc: any identity
// scope, and the API scopes of its permissions.
func agentHolds(a *agents.Agent) func(string) bool {
	return func(sc string) bool { return permits(a.Permissions, sc) }
}

// permits reports whether an agent with permissions perms may hold scope
// sc: any identity scope, and the API scopes among its permissions.
func permits(perms []string, sc string) bool {
	return slices.Contains(IdentityScopes, sc) || slices.Contains(perms, sc)
}

// heldScopes is the part of scopes agent a may hold now.
func heldScopes(scopes []string, a *agents.Agent) []string {
	return slices.DeleteFunc(slices.Clone(scopes), func(sc string) bool { return !permits(a.Permissions, sc) })
}

// decideExchange decides what token actor may get for q.subject: only a
// token issued to the actor, or meant for it, may be exchanged by it; the
// scope narrows, within what the actor may hold and the subject still
// holds; the result names the actor in act, never outlives the subject
// token and descends from it.
func decideExchange(q exchangeRequest, actor exchangeActor, subject exchangeSubject) (AccessGrant, error) {
	sub := q.subject
	if err := checkExchangeSubject(sub, actor.id); err != nil {
		return AccessGrant{}, err
	}
	scopes, err := narrowScope(q.scope, sub.Scopes())
	if err != nil {
		return AccessGrant{}, err
	}
	for _, sc := range scopes {
		if !actor.may(sc) {
			return AccessGrant{}, ErrInvalidScope("this client may not hold scope " + sc)
		}
		if !subject.holds(sc) {
			return AccessGrant{}, ErrInvalidScope("the subject no longer has permission " + sc)
		}
	}
	aud := q.audience
	if len(aud) == 0 {
		aud = sub.Audience
	}
	var authTime time.Time
	if sub.AuthTime != 0 {
		authTime = time.Unix(sub.AuthTime, 0)
	}
	model := subject.model
	if model == "" {
		model = sub.ModelName
	}
	return AccessGrant{
		Subject: sub.Subject, ClientID: actor.id, Scopes: scopes, Audience: aud, ModelName: model,
		AuthTime: authTime, Actor: &Actor{Subject: actor.id, Act: sub.Act}, NotAfter: sub.ExpiresAt.Time,
		JTIPrefix: sub.ID,
	}, nil
}
