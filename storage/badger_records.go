package storage

import (
	"slices"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// The records below are the on-disk format of the Badger backend. They are
// declared here, with explicit JSON names, rather than taken from the
// domain types, so that renaming a field in oauth or agents can never
// silently change what existing databases contain. Every change to them
// must keep reading what older versions wrote.

// agentRecord is stored under "agent/<id>". Its JSON is the one agents.Agent
// has always had, so databases from before the storage rewrite still load.
type agentRecord struct {
	ID          string    `json:"agent_id"`
	SecretHash  string    `json:"secret_hash"`
	ModelName   string    `json:"model_name"`
	OwnerName   string    `json:"owner_name"`
	OwnerEmail  string    `json:"owner_email"`
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Disabled    bool      `json:"disabled"`
	// JWKS is absent from agents written before agents could hold keys,
	// and from agents that hold a secret.
	JWKS string `json:"jwks,omitempty"`
	// RequireDPoP is absent from agents written before DPoP, and from
	// agents that do not require it.
	RequireDPoP bool `json:"require_dpop,omitempty"`
}

func toAgentRecord(a *agents.Agent) agentRecord {
	return agentRecord{
		ID:          a.ID,
		SecretHash:  a.SecretHash,
		ModelName:   a.ModelName,
		OwnerName:   a.OwnerName,
		OwnerEmail:  a.OwnerEmail,
		Permissions: slices.Clone(a.Permissions),
		CreatedAt:   a.CreatedAt,
		UpdatedAt:   a.UpdatedAt,
		Disabled:    a.Disabled,
		JWKS:        a.JWKS,
		RequireDPoP: a.RequireDPoP,
	}
}

func (r agentRecord) agent() *agents.Agent {
	return &agents.Agent{
		ID:          r.ID,
		SecretHash:  r.SecretHash,
		ModelName:   r.ModelName,
		OwnerName:   r.OwnerName,
		OwnerEmail:  r.OwnerEmail,
		Permissions: r.Permissions,
		CreatedAt:   r.CreatedAt,
		UpdatedAt:   r.UpdatedAt,
		Disabled:    r.Disabled,
		JWKS:        r.JWKS,
		RequireDPoP: r.RequireDPoP,
	}
}

// clientRecord is stored under "client/<id>"; it is also the JSON the
// previous layout kept under "rec/client/<id>", which migration copies as
// it is.
type clientRecord struct {
	ID           string   `json:"client_id"`
	Name         string   `json:"client_name"`
	SecretHash   string   `json:"secret_sha256,omitempty"`
	Public       bool     `json:"public,omitempty"`
	RedirectURIs []string `json:"redirect_uris"`
	Scopes       []string `json:"scopes"`
	GrantTypes   []string `json:"grant_types"`
	IDTokenAlg   string   `json:"id_token_signed_response_alg,omitempty"`
	// JWKS and JWKSURI (RFC 7591's names) are absent from clients written
	// before clients could authenticate with keys, and from those that
	// do not.
	JWKS    string `json:"jwks,omitempty"`
	JWKSURI string `json:"jwks_uri,omitempty"`
	// RequireDPoP, under RFC 9449's name, is absent from clients written
	// before DPoP, and from those that do not require it.
	RequireDPoP bool `json:"dpop_bound_access_tokens,omitempty"`
	// ApplicationType is absent from clients written before it was read
	// (oauth.Client.AppType infers theirs).
	ApplicationType string    `json:"application_type,omitempty"`
	Source          string    `json:"source"`
	CreatedAt       time.Time `json:"created_at"`
}

func toClientRecord(c *oauth.Client) clientRecord {
	return clientRecord{
		ID:              c.ID,
		Name:            c.Name,
		SecretHash:      c.SecretHash,
		Public:          c.Public,
		RedirectURIs:    slices.Clone(c.RedirectURIs),
		Scopes:          slices.Clone(c.Scopes),
		GrantTypes:      slices.Clone(c.GrantTypes),
		IDTokenAlg:      c.IDTokenAlg,
		JWKS:            c.JWKS,
		JWKSURI:         c.JWKSURI,
		RequireDPoP:     c.RequireDPoP,
		Source:          c.Source,
		CreatedAt:       c.CreatedAt,
		ApplicationType: c.ApplicationType,
	}
}

func (r clientRecord) client() *oauth.Client {
	return &oauth.Client{
		ID:              r.ID,
		Name:            r.Name,
		SecretHash:      r.SecretHash,
		Public:          r.Public,
		RedirectURIs:    r.RedirectURIs,
		Scopes:          r.Scopes,
		GrantTypes:      r.GrantTypes,
		IDTokenAlg:      r.IDTokenAlg,
		JWKS:            r.JWKS,
		JWKSURI:         r.JWKSURI,
		RequireDPoP:     r.RequireDPoP,
		Source:          r.Source,
		CreatedAt:       r.CreatedAt,
		ApplicationType: r.ApplicationType,
	}
}

// keyRecord is stored under "key/<kid>". Keys written before ActiveAt
// existed have no active_at; they load with a zero ActiveAt, which is
// returned as it is.
type keyRecord struct {
	ID        string    `json:"kid"`
	Algorithm string    `json:"alg"`
	Private   []byte    `json:"private_pkcs8"`
	CreatedAt time.Time `json:"created_at"`
	ActiveAt  time.Time `json:"active_at,omitzero"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

func toKeyRecord(k oauth.StoredKey) keyRecord {
	return keyRecord{
		ID:        k.ID,
		Algorithm: k.Algorithm,
		Private:   k.Private,
		CreatedAt: k.CreatedAt,
		ActiveAt:  k.ActiveAt,
		RetiredAt: k.RetiredAt,
	}
}

func (r keyRecord) key() oauth.StoredKey {
	return oauth.StoredKey{
		ID:        r.ID,
		Algorithm: r.Algorithm,
		Private:   r.Private,
		CreatedAt: r.CreatedAt,
		ActiveAt:  r.ActiveAt,
		RetiredAt: r.RetiredAt,
	}
}

// authRequestRecord is stored under "authreq/<id>".
type authRequestRecord struct {
	ID            string   `json:"id"`
	ClientID      string   `json:"client_id"`
	RedirectURI   string   `json:"redirect_uri"`
	Scopes        []string `json:"scopes"`
	State         string   `json:"state,omitempty"`
	Nonce         string   `json:"nonce,omitempty"`
	CodeChallenge string   `json:"code_challenge,omitempty"`
	Resources     []string `json:"resources,omitempty"`
	// Resource is the one resource of records written before resources
	// could repeat, read when Resources is empty; still written (the first
	// one) so that a downgraded build finds it.
	Resource    string `json:"resource,omitempty"`
	BrowserHash string `json:"browser_hash,omitempty"`
	// DPoPJKT is absent from requests written before DPoP, and from those
	// without a dpop_jkt; likewise in codeRecord and refreshRecord.
	DPoPJKT   string          `json:"dpop_jkt,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	ExpiresAt time.Time       `json:"expires_at"`
	Approval  *approvalRecord `json:"approval,omitempty"`
}

type approvalRecord struct {
	AgentID   string    `json:"agent_id"`
	ModelName string    `json:"model_name,omitempty"`
	AuthTime  time.Time `json:"auth_time"`
	CodeSeed  string    `json:"code_seed"`
}

func toApprovalRecord(a *oauth.Approval) *approvalRecord {
	if a == nil {
		return nil
	}
	return &approvalRecord{AgentID: a.AgentID, ModelName: a.ModelName, AuthTime: a.AuthTime, CodeSeed: a.CodeSeed}
}

func (r *approvalRecord) approval() *oauth.Approval {
	if r == nil {
		return nil
	}
	return &oauth.Approval{AgentID: r.AgentID, ModelName: r.ModelName, AuthTime: r.AuthTime, CodeSeed: r.CodeSeed}
}

func toAuthRequestRecord(r *oauth.AuthRequest) authRequestRecord {
	return authRequestRecord{
		ID:            r.ID,
		ClientID:      r.ClientID,
		RedirectURI:   r.RedirectURI,
		Scopes:        slices.Clone(r.Scopes),
		State:         r.State,
		Nonce:         r.Nonce,
		CodeChallenge: r.CodeChallenge,
		Resources:     slices.Clone(r.Resources),
		Resource:      firstResource(r.Resources),
		BrowserHash:   r.BrowserHash,
		DPoPJKT:       r.DPoPJKT,
		CreatedAt:     r.CreatedAt,
		ExpiresAt:     r.ExpiresAt,
		Approval:      toApprovalRecord(r.Approval),
	}
}

func (r authRequestRecord) authRequest() *oauth.AuthRequest {
	return &oauth.AuthRequest{
		ID:            r.ID,
		ClientID:      r.ClientID,
		RedirectURI:   r.RedirectURI,
		Scopes:        r.Scopes,
		State:         r.State,
		Nonce:         r.Nonce,
		CodeChallenge: r.CodeChallenge,
		Resources:     resources(r.Resources, r.Resource),
		BrowserHash:   r.BrowserHash,
		DPoPJKT:       r.DPoPJKT,
		CreatedAt:     r.CreatedAt,
		ExpiresAt:     r.ExpiresAt,
		Approval:      r.Approval.approval(),
	}
}

// codeRecord is stored under "code/<hash>".
type codeRecord struct {
	ClientID      string            `json:"client_id"`
	RedirectURI   string            `json:"redirect_uri"`
	Scopes        []string          `json:"scopes"`
	Nonce         string            `json:"nonce,omitempty"`
	CodeChallenge string            `json:"code_challenge,omitempty"`
	Resources     []string          `json:"resources,omitempty"`
	Resource      string            `json:"resource,omitempty"` // as in authRequestRecord
	AgentID       string            `json:"agent_id"`
	ModelName     string            `json:"model_name,omitempty"`
	AuthTime      time.Time         `json:"auth_time"`
	ExpiresAt     time.Time         `json:"expires_at"`
	DPoPJKT       string            `json:"dpop_jkt,omitempty"`
	Redemption    *redemptionRecord `json:"redemption,omitempty"`
}

type redemptionRecord struct {
	AccessTokenID      string    `json:"access_token_id"`
	AccessTokenExpires time.Time `json:"access_token_expires"`
	Family             string    `json:"family,omitempty"`
}

func toRedemptionRecord(r *oauth.Redemption) *redemptionRecord {
	if r == nil {
		return nil
	}
	return &redemptionRecord{AccessTokenID: r.AccessTokenID, AccessTokenExpires: r.AccessTokenExpires, Family: r.Family}
}

func (r *redemptionRecord) redemption() *oauth.Redemption {
	if r == nil {
		return nil
	}
	return &oauth.Redemption{AccessTokenID: r.AccessTokenID, AccessTokenExpires: r.AccessTokenExpires, Family: r.Family}
}

func toCodeRecord(g *oauth.CodeGrant) codeRecord {
	return codeRecord{
		ClientID:      g.ClientID,
		RedirectURI:   g.RedirectURI,
		Scopes:        slices.Clone(g.Scopes),
		Nonce:         g.Nonce,
		CodeChallenge: g.CodeChallenge,
		Resources:     slices.Clone(g.Resources),
		Resource:      firstResource(g.Resources),
		AgentID:       g.AgentID,
		ModelName:     g.ModelName,
		AuthTime:      g.AuthTime,
		ExpiresAt:     g.ExpiresAt,
		DPoPJKT:       g.DPoPJKT,
		Redemption:    toRedemptionRecord(g.Redemption),
	}
}

func (r codeRecord) grant() *oauth.CodeGrant {
	return &oauth.CodeGrant{
		ClientID:      r.ClientID,
		RedirectURI:   r.RedirectURI,
		Scopes:        r.Scopes,
		Nonce:         r.Nonce,
		CodeChallenge: r.CodeChallenge,
		Resources:     resources(r.Resources, r.Resource),
		AgentID:       r.AgentID,
		ModelName:     r.ModelName,
		AuthTime:      r.AuthTime,
		ExpiresAt:     r.ExpiresAt,
		DPoPJKT:       r.DPoPJKT,
		Redemption:    r.Redemption.redemption(),
	}
}

// refreshRecord is stored under "refresh/<hash>", with an empty index entry
// under "refam/<family>/<hash>".
type refreshRecord struct {
	Family    string    `json:"family"`
	ClientID  string    `json:"client_id"`
	AgentID   string    `json:"agent_id"`
	Scopes    []string  `json:"scopes"`
	Resources []string  `json:"resources,omitempty"`
	Resource  string    `json:"resource,omitempty"` // as in authRequestRecord
	ModelName string    `json:"model_name,omitempty"`
	AuthTime  time.Time `json:"auth_time"`
	ExpiresAt time.Time `json:"expires_at"`
	Rotated   bool      `json:"rotated,omitempty"`
	// RotatedAt and Successor are absent from tokens not rotated, and
	// from those rotated before they were recorded (never retried).
	RotatedAt time.Time `json:"rotated_at,omitzero"`
	Successor string    `json:"successor,omitempty"`
	DPoPJKT   string    `json:"dpop_jkt,omitempty"`
}

// firstResource is what a record's old single-resource field holds, so a
// downgraded build still reads the (first) audience.
func firstResource(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return list[0]
}

// resources is the resource list of a record, of either form.
func resources(list []string, one string) []string {
	if len(list) == 0 && one != "" {
		return []string{one}
	}
	return list
}

func toRefreshRecord(g *oauth.RefreshGrant) refreshRecord {
	return refreshRecord{
		Family:    g.Family,
		ClientID:  g.ClientID,
		AgentID:   g.AgentID,
		Scopes:    slices.Clone(g.Scopes),
		Resources: slices.Clone(g.Resources),
		Resource:  firstResource(g.Resources),
		ModelName: g.ModelName,
		AuthTime:  g.AuthTime,
		ExpiresAt: g.ExpiresAt,
		Rotated:   g.Rotated,
		RotatedAt: g.RotatedAt,
		Successor: g.Successor,
		DPoPJKT:   g.DPoPJKT,
	}
}

func (r refreshRecord) grant() *oauth.RefreshGrant {
	return &oauth.RefreshGrant{
		Family:    r.Family,
		ClientID:  r.ClientID,
		AgentID:   r.AgentID,
		Scopes:    r.Scopes,
		Resources: resources(r.Resources, r.Resource),
		ModelName: r.ModelName,
		AuthTime:  r.AuthTime,
		ExpiresAt: r.ExpiresAt,
		Rotated:   r.Rotated,
		RotatedAt: r.RotatedAt,
		Successor: r.Successor,
		DPoPJKT:   r.DPoPJKT,
	}
}

// legacyRefreshRecord is a refresh token as the previous layout stored it
// under "rec/refresh/<hash>": auth_time in Unix seconds (0 for none).
type legacyRefreshRecord struct {
	Family    string    `json:"family"`
	ClientID  string    `json:"client_id"`
	AgentID   string    `json:"agent_id"`
	Scopes    []string  `json:"scopes"`
	Resource  string    `json:"resource,omitempty"`
	ModelName string    `json:"model_name,omitempty"`
	AuthTime  int64     `json:"auth_time"`
	Rotated   bool      `json:"rotated,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (r legacyRefreshRecord) record() refreshRecord {
	var authTime time.Time
	if r.AuthTime != 0 {
		authTime = time.Unix(r.AuthTime, 0)
	}
	return refreshRecord{
		Family:    r.Family,
		ClientID:  r.ClientID,
		AgentID:   r.AgentID,
		Scopes:    r.Scopes,
		Resource:  r.Resource,
		ModelName: r.ModelName,
		AuthTime:  authTime,
		ExpiresAt: r.ExpiresAt,
		Rotated:   r.Rotated,
	}
}

// changeRecord is stored under "chg/<seq>", the sequence number as 8
// big-endian bytes so that key order is sequence order.
type changeRecord struct {
	Seq     uint64    `json:"seq"`
	Kind    string    `json:"kind"`
	Key     string    `json:"key"`
	Before  time.Time `json:"before,omitzero"`
	Expires time.Time `json:"expires"`
	At      time.Time `json:"at,omitzero"`
}

func toChangeRecord(c oauth.Change) changeRecord {
	return changeRecord{Seq: c.Seq, Kind: c.Kind, Key: c.Key, Before: c.Before, Expires: c.Expires, At: c.At}
}

func (r changeRecord) change() oauth.Change {
	return oauth.Change{Seq: r.Seq, Kind: r.Kind, Key: r.Key, Before: r.Before, Expires: r.Expires, At: r.At}
}

// usedOnceRecord is stored under "once/<key>": the time UseOnce recorded
// the key until, on the store's clock (Badger's own expiry, in whole
// seconds of the real clock, only lets compaction drop it).
type usedOnceRecord struct {
	Until time.Time `json:"until"`
}
