package oauth

import (
	"context"
	"errors"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/events"
)

// Admin is what an operator may do, as typed operations: the admin API
// (routed in caddymodule) is a thin HTTP layer over it. Each operation
// does everything its effect needs: disabling an agent also revokes its
// tokens, deleting a client is refused for configured ones, and so on.
type Admin struct{ p *provider }

// Agents returns a page of agents ordered by id, and the id to continue
// after when the page is full.
func (ad *Admin) Agents(ctx context.Context, after string, limit int) ([]*agents.Agent, string, error) {
	list, err := ad.p.agents.List(ctx, after, limit)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(list) == limit && limit > 0 {
		next = list[len(list)-1].ID
	}
	return list, next, nil
}

// Agent returns one agent, or ErrNotFound.
func (ad *Admin) Agent(ctx context.Context, id string) (*agents.Agent, error) {
	if agents.ValidateID(id) != nil {
		return nil, ErrNotFound
	}
	a, err := ad.p.agents.Get(ctx, id)
	if errors.Is(err, agents.ErrNotFound) {
		return nil, ErrNotFound
	}
	return a, err
}

// CreateAgent registers an agent as the operator: any id, including ones
// the configuration reserves, and optionally its permissions. It returns
// the generated secret when reg has none.
func (ad *Admin) CreateAgent(ctx context.Context, reg agents.Registration) (*agents.Agent, string, error) {
	if reg.JWKS != "" {
		jwks, err := keySetParam([]byte(reg.JWKS))
		if err != nil {
			return nil, "", err
		}
		reg.JWKS = jwks
	}
	a, secret, err := ad.p.registerAgent(ctx, reg, true)
	if err != nil {
		return nil, "", err
	}
	ad.p.log.Info("agent created by operator", zap.String("agent_id", a.ID))
	ad.p.events.Publish(ctx, events.AgentRegistered, withBy(agentView(a), "admin"))
	return a, secret, nil
}

// UpdateAgent changes an agent's permissions and/or disabled flag.
// Disabling voids every token, code and refresh token the agent holds, for
// good: enabling it again does not bring them back.
func (ad *Admin) UpdateAgent(ctx context.Context, id string, u agents.AdminUpdate) (*agents.Agent, error) {
	if agents.ValidateID(id) != nil {
		return nil, ErrNotFound
	}
	if u.Permissions == nil && u.Disabled == nil && u.JWKS == nil && u.RequireDPoP == nil {
		return nil, ErrInvalidRequest("nothing to change: give permissions, disabled, jwks and/or require_dpop")
	}
	if u.JWKS != nil {
		// New keys replace the agent's keys, or its secret: it holds keys
		// from now on.
		jwks, err := keySetParam([]byte(*u.JWKS))
		if err != nil {
			return nil, err
		}
		if jwks == "" {
			return nil, ErrInvalidRequest("jwks must be a JWK Set of public keys")
		}
		u.JWKS = &jwks
	}
	disabling := u.Disabled != nil && *u.Disabled
	if disabling {
		// An unknown agent is a 404 that records nothing.
		if _, err := ad.Agent(ctx, id); err != nil {
			return nil, err
		}
		// Before the change, so that no crash between the two writes leaves
		// a disabled agent's tokens working at the guards, which read only
		// the revocations…
		if err := ad.p.revokeAgent(ctx, id); err != nil {
			return nil, err
		}
	}
	a, err := ad.p.agents.AdminUpdate(ctx, id, u)
	if errors.Is(err, agents.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, registryError(err)
	}
	if disabling {
		// …and after it, for a token issued between the two.
		err = ad.p.revokeAgent(ctx, id)
	} else {
		err = ad.p.agentUpdated(ctx, id)
	}
	if err == nil && u.Permissions != nil && !disabling {
		// Tokens issued before carry what the agent held then: those with
		// a permission taken away stop working.
		err = ad.p.agentPermissionsSet(ctx, a)
	}
	if err != nil {
		return nil, err
	}
	ad.p.log.Info("agent updated by operator", zap.String("agent_id", id))
	typ := events.AgentUpdated
	if disabling {
		typ = events.AgentDisabled
	}
	ad.p.events.Publish(ctx, typ, withBy(agentView(a), "admin"))
	return a, nil
}

// DeleteAgent removes an agent and voids its tokens, also should the id be
// registered again.
func (ad *Admin) DeleteAgent(ctx context.Context, id string) error {
	if agents.ValidateID(id) != nil {
		return ErrNotFound
	}
	if _, err := ad.p.agents.Get(ctx, id); errors.Is(err, agents.ErrNotFound) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	// Revoked before and after the delete, as when disabling.
	if err := ad.p.revokeAgent(ctx, id); err != nil {
		return err
	}
	err := ad.p.agents.Delete(ctx, id)
	if errors.Is(err, agents.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if err := ad.p.revokeAgent(ctx, id); err != nil {
		return err
	}
	ad.p.log.Info("agent deleted by operator", zap.String("agent_id", id))
	ad.p.events.Publish(ctx, events.AgentDeleted, map[string]any{"agent_id": id, "by": "admin"})
	return nil
}

// Clients returns the configured clients (on the first page) and a page of
// stored ones, and the id to continue after when the page is full.
func (ad *Admin) Clients(ctx context.Context, after string, limit int) ([]*Client, string, error) {
	list, err := ad.p.clients.List(ctx, after, limit)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if n := len(list); n > 0 && list[n-1].Source != ClientFromConfig && n >= limit {
		next = list[n-1].ID
	}
	return list, next, nil
}

// Client returns one client, or ErrNotFound.
func (ad *Admin) Client(ctx context.Context, id string) (*Client, error) {
	return ad.p.clients.Get(ctx, id)
}

// CreateClient makes a client from spec (an id is generated when spec has
// none); a confidential client's generated secret is returned once.
func (ad *Admin) CreateClient(ctx context.Context, spec ClientSpec) (*Client, string, error) {
	if spec.ID == "" {
		spec.ID = "cl_" + randomToken(16)
	}
	c, secret, err := NewClient(spec, ClientFromAdmin, ad.p.now())
	if err != nil {
		return nil, "", err
	}
	if _, err := ad.p.agents.Get(ctx, c.ID); err == nil {
		return nil, "", ErrConflict("this id belongs to an agent")
	}
	if err := ad.p.clients.Create(ctx, c); err != nil {
		return nil, "", err
	}
	ad.p.log.Info("client created by operator", zap.String("client_id", c.ID))
	ad.p.events.Publish(ctx, events.ClientRegistered, withBy(clientView(c), "admin"))
	return c, secret, nil
}

// ClientPatch is what an operator may change about a client; nil fields
// are left alone.
type ClientPatch struct {
	Name         *string
	RedirectURIs *[]string
	Scopes       *[]string
	GrantTypes   *[]string
	IDTokenAlg   *string
	RequireDPoP  *bool
	// ApplicationType: native or web; "" infers it again from the
	// redirect URIs.
	ApplicationType *string
}

// UpdateClient changes a stored client, validated as a new one would be;
// the secret stays.
func (ad *Admin) UpdateClient(ctx context.Context, id string, patch ClientPatch) (*Client, error) {
	c, err := ad.p.clients.Update(ctx, id, func(c *Client) error {
		if patch.Name != nil {
			c.Name = *patch.Name
		}
		if patch.RedirectURIs != nil {
			c.RedirectURIs = *patch.RedirectURIs
		}
		if patch.Scopes != nil {
			c.Scopes = *patch.Scopes
		}
		if patch.IDTokenAlg != nil {
			c.IDTokenAlg = *patch.IDTokenAlg
		}
		if patch.RequireDPoP != nil {
			c.RequireDPoP = *patch.RequireDPoP
		}
		if patch.ApplicationType != nil {
			c.ApplicationType = *patch.ApplicationType
		}
		if patch.GrantTypes != nil {
			if len(*patch.GrantTypes) == 0 {
				return ErrInvalidClientMetadata("grant_types must not be empty")
			}
			if c.Source == ClientFromDynamic && slices.ContainsFunc(*patch.GrantTypes, func(g string) bool {
				return g != GrantAuthorizationCode && g != GrantRefreshToken
			}) {
				return ErrInvalidClientMetadata("dynamically registered clients may use only authorization_code and refresh_token")
			}
			c.GrantTypes = *patch.GrantTypes
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ad.p.log.Info("client updated by operator", zap.String("client_id", id))
	ad.p.events.Publish(ctx, events.ClientUpdated, withBy(clientView(c), "admin"))
	return c, nil
}

// DeleteClient removes a stored client.
func (ad *Admin) DeleteClient(ctx context.Context, id string) error {
	if err := ad.p.clients.Delete(ctx, id); err != nil {
		return err
	}
	ad.p.log.Info("client deleted by operator", zap.String("client_id", id))
	ad.p.events.Publish(ctx, events.ClientDeleted, map[string]any{"client_id": id, "by": "admin"})
	return nil
}

// RotateKeys makes a new signing key for every algorithm in use now; each
// signs once it is active (after the publish delay) and the keys it
// replaces stay published for one rotation period. It returns the
// published keys.
func (ad *Admin) RotateKeys(ctx context.Context) ([]KeyInfo, error) {
	if err := ad.p.keys.Rotate(ctx, true); err != nil {
		return nil, err
	}
	ad.p.log.Info("signing keys rotated by operator")
	return ad.p.keys.Keys(), nil
}

// TrustedIdPs returns the IdPs of the configuration, then those added
// through the admin API, each ordered by issuer.
func (ad *Admin) TrustedIdPs(ctx context.Context) ([]*TrustedIdP, error) {
	out := make([]*TrustedIdP, 0, len(ad.p.cfg.TrustedIdPs))
	for i := range ad.p.cfg.TrustedIdPs {
		out = append(out, &ad.p.cfg.TrustedIdPs[i])
	}
	slices.SortFunc(out, func(a, b *TrustedIdP) int { return strings.Compare(a.Issuer, b.Issuer) })
	stored, err := ad.p.store.ListTrustedIdPs(ctx)
	if err != nil {
		return nil, err
	}
	return append(out, stored...), nil
}

// TrustedIdP returns the IdP of issuer, or ErrNotFound.
func (ad *Admin) TrustedIdP(ctx context.Context, issuer string) (*TrustedIdP, error) {
	idp, err := ad.p.trustedIdP(ctx, issuer)
	if err == nil && idp == nil {
		err = ErrNotFound
	}
	return idp, err
}

// CreateTrustedIdP trusts an IdP, validated as a trusted_idp block is;
// an issuer trusted already (configuration or store) is a conflict. Every
// process sharing the store redeems its grants from now on.
func (ad *Admin) CreateTrustedIdP(ctx context.Context, spec TrustedIdPSpec) (*TrustedIdP, error) {
	idp, err := NewTrustedIdP(spec, TrustedIdPFromAdmin, ad.p.now().UTC())
	if err != nil {
		return nil, err
	}
	if ad.p.configuredIdP(idp.Issuer) != nil {
		return nil, ErrConflict("the issuer is a trusted_idp of the configuration")
	}
	err = ad.p.store.CreateTrustedIdP(ctx, idp)
	if errors.Is(err, ErrExists) {
		return nil, ErrConflict("the issuer is trusted already")
	}
	if err != nil {
		return nil, err
	}
	ad.p.log.Info("trusted IdP added by operator", zap.String("issuer", idp.Issuer))
	ad.p.events.Publish(ctx, events.TrustedIdPCreated, trustedIdPEvent(idp))
	return idp, nil
}

// DeleteTrustedIdP stops trusting an IdP added through the admin API; its
// grants are refused from now on, by every process sharing the store.
// Access tokens already issued for them run out their lifetime.
func (ad *Admin) DeleteTrustedIdP(ctx context.Context, issuer string) error {
	if ad.p.configuredIdP(issuer) != nil {
		return ErrConflict("this trusted IdP is defined in the configuration")
	}
	if events.ValidateWebhookURL(issuer) != nil {
		return ErrNotFound
	}
	if err := ad.p.store.DeleteTrustedIdP(ctx, issuer); err != nil {
		return err
	}
	ad.p.log.Info("trusted IdP deleted by operator", zap.String("issuer", issuer))
	ad.p.events.Publish(ctx, events.TrustedIdPDeleted, map[string]any{"issuer": issuer, "by": "admin"})
	return nil
}

func trustedIdPEvent(idp *TrustedIdP) map[string]any {
	return map[string]any{
		"issuer": idp.Issuer, "jwks_uri": idp.JWKSURI, "clients": idp.Clients, "scopes": idp.Scopes,
		"subject": idp.Subject, "allow_jwt": idp.AllowJWT, "by": "admin",
	}
}
