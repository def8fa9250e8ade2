package caddymodule

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// validateIDJAG checks the trusted_idp and id_jag_audience blocks.
func validateIDJAG(idps []*TrustedIdPConfig, audiences []*IDJAGAudienceConfig) error {
	seen := map[string]bool{}
	for _, t := range idps {
		if t == nil {
			return fmt.Errorf("auth_agent: a trusted_idp has no settings")
		}
		name := fmt.Sprintf("auth_agent: trusted_idp %s", t.Issuer)
		// The rules the admin API applies too.
		if _, err := oauth.NewTrustedIdP(t.spec(), oauth.TrustedIdPFromConfig, time.Time{}); err != nil {
			return fmt.Errorf("%s: %s", name, oauth.AsError(err).Description)
		}
		if seen[t.Issuer] {
			return fmt.Errorf("%s is configured twice", name)
		}
		seen[t.Issuer] = true
	}
	seen = map[string]bool{}
	for _, t := range audiences {
		if t == nil {
			return fmt.Errorf("auth_agent: an id_jag_audience has no settings")
		}
		name := fmt.Sprintf("auth_agent: id_jag_audience %s", t.Issuer)
		if err := oauth.ValidateIssuer(t.Issuer); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		if seen[t.Issuer] {
			return fmt.Errorf("%s is configured twice", name)
		}
		seen[t.Issuer] = true
		if len(t.Clients) == 0 || t.ClientID == "" || len(t.Scopes) == 0 {
			return fmt.Errorf("%s: clients, client_id and scopes are required", name)
		}
		if err := agents.ValidatePermissions(t.Scopes); err != nil {
			return fmt.Errorf("%s: scopes: %v", name, err)
		}
	}
	return nil
}

// spec is the block as the oauth package validates it.
func (t *TrustedIdPConfig) spec() oauth.TrustedIdPSpec {
	return oauth.TrustedIdPSpec{Issuer: t.Issuer, JWKSURI: t.JWKSURI, Clients: t.Clients, Scopes: t.Scopes, Subject: t.Subject, Grant: t.Grant}
}

// unmarshalTrustedIdP parses `trusted_idp <issuer> { … }`.
func (a *App) unmarshalTrustedIdP(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	t := &TrustedIdPConfig{Issuer: d.Val()}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		setting, args := d.Val(), d.RemainingArgs()
		switch setting {
		case "jwks_uri", "subject", "grant":
			if len(args) != 1 {
				return d.Errf("trusted_idp %s: %s takes one value", t.Issuer, setting)
			}
			switch setting {
			case "jwks_uri":
				t.JWKSURI = args[0]
			case "subject":
				t.Subject = args[0]
			default:
				t.Grant = args[0]
			}
		case "clients", "client":
			if len(args) == 0 {
				return d.Errf("trusted_idp %s: clients needs at least one client id", t.Issuer)
			}
			t.Clients = append(t.Clients, args...)
		case "scopes", "scope":
			if len(args) == 0 {
				return d.Errf("trusted_idp %s: scopes needs at least one scope", t.Issuer)
			}
			t.Scopes = append(t.Scopes, args...)
		default:
			return d.Errf("trusted_idp %s: unknown setting %q", t.Issuer, setting)
		}
	}
	a.TrustedIdPs = append(a.TrustedIdPs, t)
	return nil
}

// unmarshalIDJAGAudience parses `id_jag_audience <issuer> { … }`.
func (a *App) unmarshalIDJAGAudience(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	t := &IDJAGAudienceConfig{Issuer: d.Val()}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		setting, args := d.Val(), d.RemainingArgs()
		switch setting {
		case "client_id":
			if len(args) != 1 {
				return d.Errf("id_jag_audience %s: client_id takes one value", t.Issuer)
			}
			t.ClientID = args[0]
		case "clients", "client":
			if len(args) == 0 {
				return d.Errf("id_jag_audience %s: clients needs at least one client id", t.Issuer)
			}
			t.Clients = append(t.Clients, args...)
		case "scopes", "scope":
			if len(args) == 0 {
				return d.Errf("id_jag_audience %s: scopes needs at least one scope", t.Issuer)
			}
			t.Scopes = append(t.Scopes, args...)
		default:
			return d.Errf("id_jag_audience %s: unknown setting %q", t.Issuer, setting)
		}
	}
	a.IDJAGAudiences = append(a.IDJAGAudiences, t)
	return nil
}
