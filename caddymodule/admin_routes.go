package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/authagent/caddy-authagent/agents"
	"github.com/authagent/caddy-authagent/oauth"
)

// adminPrefix is where the admin routes live on Caddy's admin endpoint.
const adminPrefix = "/auth_agent/"

// adminMaxBody caps admin request bodies.
const adminMaxBody = oauth.DefaultMaxBody

// serveAdmin routes the operator's API to the typed operations of
// oauth.Admin:
//
//	GET    /auth_agent/agents?after=<id>&limit=<n>
//	POST   /auth_agent/agents        {"agent_id", "agent_secret"?, "model_name", "owner_name", "owner_email", "permissions"?}
//	GET    /auth_agent/agents/<id>
//	PATCH  /auth_agent/agents/<id>   {"permissions": [...], "disabled": bool}
//	DELETE /auth_agent/agents/<id>
//	GET    /auth_agent/clients?after=<id>&limit=<n>
//	POST   /auth_agent/clients       {"client_id"?, "client_name", "public"?, "application_type"?, "redirect_uris", "scopes", "grant_types"?}
//	GET    /auth_agent/clients/<id>
//	PATCH  /auth_agent/clients/<id>  {"client_name", "application_type", "redirect_uris", "scopes", "grant_types"} (any of them)
//	DELETE /auth_agent/clients/<id>
//	POST   /auth_agent/keys/rotate
//	GET    /auth_agent/webhooks
//	POST   /auth_agent/webhooks      {"url", "events", "secret"?}
//	DELETE /auth_agent/webhooks/<id>
//	GET    /auth_agent/webhooks/deliveries?limit=<n>
//	POST   /auth_agent/webhooks/deliveries/<id>/redeliver
//	GET    /auth_agent/trusted_idps
//	POST   /auth_agent/trusted_idps  {"issuer", "jwks_uri"?, "clients", "scopes", "subject"?, "grant"?}
//	GET    /auth_agent/trusted_idps/<url-escaped issuer>
//	DELETE /auth_agent/trusted_idps/<url-escaped issuer>
func serveAdmin(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, adminPrefix)
	switch {
	case rest == "agents" || rest == "agents/":
		switch r.Method {
		case http.MethodGet:
			return adminListAgents(ad, w, r)
		case http.MethodPost:
			return adminCreateAgent(ad, w, r)
		}
		return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodPost)
	case strings.HasPrefix(rest, "agents/"):
		return adminAgent(ad, w, r, strings.TrimPrefix(rest, "agents/"))
	case rest == "clients" || rest == "clients/":
		switch r.Method {
		case http.MethodGet:
			return adminListClients(ad, w, r)
		case http.MethodPost:
			return adminCreateClient(ad, w, r)
		}
		return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodPost)
	case strings.HasPrefix(rest, "clients/"):
		return adminClient(ad, w, r, strings.TrimPrefix(rest, "clients/"))
	case rest == "keys/rotate":
		if r.Method != http.MethodPost {
			return oauth.ErrMethodNotAllowed(http.MethodPost)
		}
		keys, err := ad.RotateKeys(r.Context())
		if err != nil {
			return err
		}
		oauth.WriteJSON(w, http.StatusOK, map[string]any{"keys": keys})
		return nil
	case rest == "trusted_idps" || rest == "trusted_idps/":
		switch r.Method {
		case http.MethodGet:
			return adminListTrustedIdPs(ad, w, r)
		case http.MethodPost:
			return adminCreateTrustedIdP(ad, w, r)
		}
		return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodPost)
	case strings.HasPrefix(rest, "trusted_idps/"):
		return adminTrustedIdP(ad, w, r)
	case rest == "webhooks" || strings.HasPrefix(rest, "webhooks/"):
		wa, err := runningWebhooks()
		if err != nil {
			return err
		}
		return serveWebhookAdmin(wa, w, r, strings.TrimSuffix(strings.TrimPrefix(rest, "webhooks"), "/"))
	}
	return oauth.ErrNotFoundPath("no admin endpoint at " + r.URL.Path)
}

// pageParams reads ?after=&limit= (1–1000, default 100).
func pageParams(r *http.Request) (after string, limit int, err error) {
	q := r.URL.Query()
	limit = 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return "", 0, oauth.ErrInvalidRequest("limit must be a number from 1 to 1000")
		}
		limit = n
	}
	return q.Get("after"), limit, nil
}

// notFound turns a store's ErrNotFound into the 404 naming what is missing.
func notFound(err error, what, id string) error {
	if errors.Is(err, oauth.ErrNotFound) {
		return oauth.ErrNotFoundPath("no " + what + " " + strconv.Quote(id))
	}
	return err
}

func adminListAgents(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	list, next, err := ad.Agents(r.Context(), after, limit)
	if err != nil {
		return err
	}
	views := make([]oauth.AgentView, 0, len(list))
	for _, a := range list {
		views = append(views, oauth.ViewAgent(a, ""))
	}
	resp := map[string]any{"agents": views}
	if next != "" {
		resp["next"] = next
	}
	oauth.WriteJSON(w, http.StatusOK, resp)
	return nil
}

type adminCreateAgentRequest struct {
	AgentID     string          `json:"agent_id"`
	AgentSecret string          `json:"agent_secret"`
	ModelName   string          `json:"model_name"`
	OwnerName   string          `json:"owner_name"`
	OwnerEmail  string          `json:"owner_email"`
	Permissions []string        `json:"permissions"`
	JWKS        json.RawMessage `json:"jwks"`
}

// rawParam is a JSON field's text, "" when absent or null.
func rawParam(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	return string(raw)
}

func adminCreateAgent(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	var req adminCreateAgentRequest
	if err := oauth.DecodeJSON(w, r, adminMaxBody, &req); err != nil {
		return err
	}
	a, secret, err := ad.CreateAgent(r.Context(), agents.Registration{
		AgentID: req.AgentID, AgentSecret: req.AgentSecret, ModelName: req.ModelName,
		OwnerName: req.OwnerName, OwnerEmail: req.OwnerEmail, Permissions: req.Permissions, JWKS: rawParam(req.JWKS),
	})
	if err != nil {
		return err
	}
	oauth.WriteJSON(w, http.StatusCreated, oauth.ViewAgent(a, secret))
	return nil
}

func adminAgent(ad *oauth.Admin, w http.ResponseWriter, r *http.Request, id string) error {
	switch r.Method {
	case http.MethodGet:
		a, err := ad.Agent(r.Context(), id)
		if err != nil {
			return notFound(err, "agent", id)
		}
		oauth.WriteJSON(w, http.StatusOK, oauth.ViewAgent(a, ""))
		return nil
	case http.MethodPatch, http.MethodPut:
		var req struct {
			Permissions *[]string       `json:"permissions"`
			Disabled    *bool           `json:"disabled"`
			JWKS        json.RawMessage `json:"jwks"`
			RequireDPoP *bool           `json:"require_dpop"`
		}
		if err := oauth.DecodeJSON(w, r, adminMaxBody, &req); err != nil {
			return err
		}
		if req.Permissions != nil && *req.Permissions == nil {
			*req.Permissions = []string{}
		}
		u := agents.AdminUpdate{Permissions: req.Permissions, Disabled: req.Disabled, RequireDPoP: req.RequireDPoP}
		if jwks := rawParam(req.JWKS); jwks != "" {
			u.JWKS = &jwks
		}
		a, err := ad.UpdateAgent(r.Context(), id, u)
		if err != nil {
			return notFound(err, "agent", id)
		}
		oauth.WriteJSON(w, http.StatusOK, oauth.ViewAgent(a, ""))
		return nil
	case http.MethodDelete:
		if err := ad.DeleteAgent(r.Context(), id); err != nil {
			return notFound(err, "agent", id)
		}
		oauth.WriteJSON(w, http.StatusOK, map[string]string{"deleted": id})
		return nil
	}
	return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete)
}

// clientView is a client as the admin API shows it: never the secret hash.
func clientView(c *oauth.Client, secret string) map[string]any {
	v := oauth.ClientMetadata(c, secret)
	v["public"] = c.Public
	v["scopes"] = c.Scopes
	if c.AnyScope() {
		// Registered without scope: it may ask for any (the agents'
		// permissions bound what it gets).
		v["scopes"], v["any_scope"] = []string{}, true
	}
	v["source"] = c.Source
	delete(v, "scope")
	return v
}

func adminListClients(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	list, next, err := ad.Clients(r.Context(), after, limit)
	if err != nil {
		return err
	}
	views := make([]map[string]any, 0, len(list))
	for _, c := range list {
		views = append(views, clientView(c, ""))
	}
	resp := map[string]any{"clients": views}
	if next != "" {
		resp["next"] = next
	}
	oauth.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func adminCreateClient(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ClientID     string          `json:"client_id"`
		ClientName   string          `json:"client_name"`
		Public       bool            `json:"public"`
		RedirectURIs []string        `json:"redirect_uris"`
		Scopes       []string        `json:"scopes"`
		GrantTypes   []string        `json:"grant_types"`
		IDTokenAlg   string          `json:"id_token_signed_response_alg"`
		JWKS         json.RawMessage `json:"jwks"`
		JWKSURI      string          `json:"jwks_uri"`
		DPoPBound    bool            `json:"dpop_bound_access_tokens"`
		AppType      string          `json:"application_type"`
	}
	if err := oauth.DecodeJSON(w, r, adminMaxBody, &req); err != nil {
		return err
	}
	c, secret, err := ad.CreateClient(r.Context(), oauth.ClientSpec{
		ID: req.ClientID, Name: req.ClientName, Public: req.Public, RedirectURIs: req.RedirectURIs,
		Scopes: req.Scopes, GrantTypes: req.GrantTypes, IDTokenAlg: req.IDTokenAlg, JWKS: rawParam(req.JWKS), JWKSURI: req.JWKSURI,
		RequireDPoP: req.DPoPBound, ApplicationType: req.AppType,
	})
	if err != nil {
		return err
	}
	oauth.WriteJSON(w, http.StatusCreated, clientView(c, secret))
	return nil
}

func adminClient(ad *oauth.Admin, w http.ResponseWriter, r *http.Request, id string) error {
	switch r.Method {
	case http.MethodGet:
		c, err := ad.Client(r.Context(), id)
		if err != nil {
			return notFound(err, "client", id)
		}
		oauth.WriteJSON(w, http.StatusOK, clientView(c, ""))
		return nil
	case http.MethodPatch, http.MethodPut:
		var req struct {
			ClientName   *string   `json:"client_name"`
			RedirectURIs *[]string `json:"redirect_uris"`
			Scopes       *[]string `json:"scopes"`
			GrantTypes   *[]string `json:"grant_types"`
			IDTokenAlg   *string   `json:"id_token_signed_response_alg"`
			DPoPBound    *bool     `json:"dpop_bound_access_tokens"`
			AppType      *string   `json:"application_type"`
		}
		if err := oauth.DecodeJSON(w, r, adminMaxBody, &req); err != nil {
			return err
		}
		c, err := ad.UpdateClient(r.Context(), id, oauth.ClientPatch{
			Name: req.ClientName, RedirectURIs: req.RedirectURIs, Scopes: req.Scopes, GrantTypes: req.GrantTypes,
			IDTokenAlg: req.IDTokenAlg, RequireDPoP: req.DPoPBound, ApplicationType: req.AppType,
		})
		if err != nil {
			return notFound(err, "client", id)
		}
		oauth.WriteJSON(w, http.StatusOK, clientView(c, ""))
		return nil
	case http.MethodDelete:
		if err := ad.DeleteClient(r.Context(), id); err != nil {
			return notFound(err, "client", id)
		}
		oauth.WriteJSON(w, http.StatusOK, map[string]string{"deleted": id})
		return nil
	}
	return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete)
}

// serveWebhookAdmin routes /auth_agent/webhooks<rest>.
func serveWebhookAdmin(wa webhookAdmin, w http.ResponseWriter, r *http.Request, rest string) error {
	switch {
	case rest == "":
		switch r.Method {
		case http.MethodGet:
			return wa.list(w, r)
		case http.MethodPost:
			return wa.create(w, r)
		}
		return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodPost)
	case rest == "/deliveries":
		if r.Method != http.MethodGet {
			return oauth.ErrMethodNotAllowed(http.MethodGet)
		}
		return wa.deliveries(w, r)
	case strings.HasPrefix(rest, "/deliveries/"):
		id, ok := strings.CutSuffix(strings.TrimPrefix(rest, "/deliveries/"), "/redeliver")
		if !ok || id == "" || strings.Contains(id, "/") {
			return oauth.ErrNotFoundPath("no admin endpoint at " + r.URL.Path + "; redeliver with POST /auth_agent/webhooks/deliveries/<id>/redeliver")
		}
		if r.Method != http.MethodPost {
			return oauth.ErrMethodNotAllowed(http.MethodPost)
		}
		return wa.redeliver(w, r, id)
	}
	id := strings.TrimPrefix(rest, "/")
	if id == "" || strings.Contains(id, "/") {
		return oauth.ErrNotFoundPath("no admin endpoint at " + r.URL.Path)
	}
	if r.Method != http.MethodDelete {
		return oauth.ErrMethodNotAllowed(http.MethodDelete)
	}
	return wa.remove(w, r, id)
}

// trustedIdPView is a trusted IdP as the admin API shows it.
func trustedIdPView(idp *oauth.TrustedIdP) map[string]any {
	v := map[string]any{
		"issuer": idp.Issuer, "clients": idp.Clients, "scopes": idp.Scopes, "subject": idp.Subject, "source": idp.Source,
	}
	if idp.JWKSURI != "" {
		v["jwks_uri"] = idp.JWKSURI
	}
	if idp.AllowJWT {
		v["grant"] = "jwt"
	}
	if !idp.CreatedAt.IsZero() {
		v["created_at"] = idp.CreatedAt.UTC().Format(time.RFC3339)
	}
	return v
}

func adminListTrustedIdPs(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	list, err := ad.TrustedIdPs(r.Context())
	if err != nil {
		return err
	}
	views := make([]map[string]any, 0, len(list))
	for _, idp := range list {
		views = append(views, trustedIdPView(idp))
	}
	oauth.WriteJSON(w, http.StatusOK, map[string]any{"trusted_idps": views})
	return nil
}

func adminCreateTrustedIdP(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Clients []string `json:"clients"`
		Scopes  []string `json:"scopes"`
		Subject string   `json:"subject"`
		Grant   string   `json:"grant"`
	}
	if err := oauth.DecodeJSON(w, r, adminMaxBody, &req); err != nil {
		return err
	}
	idp, err := ad.CreateTrustedIdP(r.Context(), oauth.TrustedIdPSpec{
		Issuer: req.Issuer, JWKSURI: req.JWKSURI, Clients: req.Clients, Scopes: req.Scopes, Subject: req.Subject, Grant: req.Grant,
	})
	if err != nil {
		return err
	}
	oauth.WriteJSON(w, http.StatusCreated, trustedIdPView(idp))
	return nil
}

// adminTrustedIdP serves /auth_agent/trusted_idps/<issuer>: the issuer is
// one path segment, URL-escaped (https:%2F%2Fidp.example.com).
func adminTrustedIdP(ad *oauth.Admin, w http.ResponseWriter, r *http.Request) error {
	escaped := strings.TrimPrefix(r.URL.EscapedPath(), adminPrefix+"trusted_idps/")
	issuer, err := url.PathUnescape(escaped)
	if err != nil || issuer == "" || strings.Contains(escaped, "/") {
		return oauth.ErrNotFoundPath("no admin endpoint at " + r.URL.Path + "; name the issuer URL-escaped, as one path segment")
	}
	switch r.Method {
	case http.MethodGet:
		idp, err := ad.TrustedIdP(r.Context(), issuer)
		if err != nil {
			return notFound(err, "trusted IdP", issuer)
		}
		oauth.WriteJSON(w, http.StatusOK, trustedIdPView(idp))
		return nil
	case http.MethodDelete:
		if err := ad.DeleteTrustedIdP(r.Context(), issuer); err != nil {
			return notFound(err, "trusted IdP", issuer)
		}
		oauth.WriteJSON(w, http.StatusOK, map[string]string{"deleted": issuer})
		return nil
	}
	return oauth.ErrMethodNotAllowed(http.MethodGet, http.MethodDelete)
}
