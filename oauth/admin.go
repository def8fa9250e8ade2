package oauth

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/authagent/caddy-authagent/agents"
)

// AdminPrefix is where the admin routes live on Caddy's admin endpoint.
const AdminPrefix = "/auth_agent/"

// ServeAdmin serves the operator's API:
//
//	GET    /auth_agent/agents?after=<id>&limit=<n>
//	POST   /auth_agent/agents        {"agent_id", "agent_secret"?, "model_name", "owner_name", "owner_email", "permissions"?}
//	GET    /auth_agent/agents/<id>
//	PATCH  /auth_agent/agents/<id>   {"permissions": [...], "disabled": bool}
//	DELETE /auth_agent/agents/<id>
//	GET    /auth_agent/clients?after=<id>&limit=<n>
//	POST   /auth_agent/clients       {"client_id"?, "client_name", "public"?, "redirect_uris", "scopes", "grant_types"?}
//	GET    /auth_agent/clients/<id>
//	PATCH  /auth_agent/clients/<id>  {"client_name", "redirect_uris", "scopes", "grant_types"} (any of them)
//	DELETE /auth_agent/clients/<id>
func (s *Server) ServeAdmin(w http.ResponseWriter, r *http.Request) {
	if err := s.serveAdmin(w, r); err != nil {
		s.fail(w, r, err)
	}
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, AdminPrefix)
	switch {
	case rest == "agents" || rest == "agents/":
		switch r.Method {
		case http.MethodGet:
			return s.adminListAgents(w, r)
		case http.MethodPost:
			return s.adminCreateAgent(w, r)
		}
		return ErrMethodNotAllowed(http.MethodGet, http.MethodPost)
	case rest == "clients" || rest == "clients/":
		switch r.Method {
		case http.MethodGet:
			return s.adminListClients(w, r)
		case http.MethodPost:
			return s.adminCreateClient(w, r)
		}
		return ErrMethodNotAllowed(http.MethodGet, http.MethodPost)
	case strings.HasPrefix(rest, "clients/"):
		return s.adminClient(w, r, strings.TrimPrefix(rest, "clients/"))
	case strings.HasPrefix(rest, "agents/"):
		id := strings.TrimPrefix(rest, "agents/")
		if agents.ValidateID(id) != nil {
			return ErrNotFoundPath("no agent " + strconv.Quote(id))
		}
		switch r.Method {
		case http.MethodGet:
			a, err := s.agents.Get(r.Context(), id)
			if err != nil {
				return adminError(err, id)
			}
			writeJSON(w, http.StatusOK, viewOf(a))
			return nil
		case http.MethodPatch, http.MethodPut:
			return s.adminUpdateAgent(w, r, id)
		case http.MethodDelete:
			if err := s.agents.Delete(r.Context(), id); err != nil {
				return adminError(err, id)
			}
			if err := s.revokeSubject(r.Context(), id); err != nil {
				return err
			}
			s.log.Info("agent deleted by operator", zap.String("agent_id", id))
			writeJSON(w, http.StatusOK, map[string]string{"deleted": id})
			return nil
		default:
			return ErrMethodNotAllowed(http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete)
		}
	}
	return ErrNotFoundPath("no admin endpoint at " + r.URL.Path)
}

func adminError(err error, id string) error {
	if errors.Is(err, agents.ErrNotFound) {
		return ErrNotFoundPath("no agent " + strconv.Quote(id))
	}
	return registryError(err)
}

// pageParams reads ?after=&limit= (1–1000, default 100).
func pageParams(r *http.Request) (after string, limit int, err error) {
	q := r.URL.Query()
	limit = 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return "", 0, ErrInvalidRequest("limit must be a number from 1 to 1000")
		}
		limit = n
	}
	return q.Get("after"), limit, nil
}

func (s *Server) adminListAgents(w http.ResponseWriter, r *http.Request) error {
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	list, err := s.agents.List(r.Context(), after, limit)
	if err != nil {
		return err
	}
	views := make([]agentView, 0, len(list))
	for _, a := range list {
		views = append(views, viewOf(a))
	}
	resp := map[string]any{"agents": views}
	if len(list) == limit {
		resp["next"] = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

type adminUpdateRequest struct {
	Permissions *[]string `json:"permissions"`
	Disabled    *bool     `json:"disabled"`
}

func (s *Server) adminUpdateAgent(w http.ResponseWriter, r *http.Request, id string) error {
	var req adminUpdateRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	if req.Permissions == nil && req.Disabled == nil {
		return ErrInvalidRequest("nothing to change: give permissions and/or disabled")
	}
	if req.Permissions != nil && *req.Permissions == nil {
		*req.Permissions = []string{}
	}
	a, err := s.agents.AdminUpdate(r.Context(), id, agents.AdminUpdate{Permissions: req.Permissions, Disabled: req.Disabled})
	if err != nil {
		return adminError(err, id)
	}
	// Disabling voids every token the agent holds, for good: re-enabling
	// does not bring them back.
	if req.Disabled != nil && *req.Disabled {
		if err := s.revokeSubject(r.Context(), id); err != nil {
			return err
		}
	}
	s.log.Info("agent updated by operator", zap.String("agent_id", id))
	writeJSON(w, http.StatusOK, viewOf(a))
	return nil
}

type adminCreateAgentRequest struct {
	registerRequest
	Permissions []string `json:"permissions"`
}

// adminCreateAgent registers an agent as the operator: any id, including
// ones the configuration reserves, and optionally its permissions.
func (s *Server) adminCreateAgent(w http.ResponseWriter, r *http.Request) error {
	var req adminCreateAgentRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	v, err := s.registerAgent(r.Context(), req.registerRequest, req.Permissions, true)
	if err != nil {
		return err
	}
	s.log.Info("agent created by operator", zap.String("agent_id", v.AgentID))
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// clientView is a client as the admin API shows it: never the secret hash.
func clientView(c *Client, secret string) map[string]any {
	v := clientRegistrationView(c, secret)
	v["public"] = c.Public
	v["scopes"] = c.Scopes
	v["source"] = c.Source
	delete(v, "scope")
	return v
}

func (s *Server) adminListClients(w http.ResponseWriter, r *http.Request) error {
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	list, err := s.clients.List(r.Context(), after, limit)
	if err != nil {
		return err
	}
	views := make([]map[string]any, 0, len(list))
	for _, c := range list {
		views = append(views, clientView(c, ""))
	}
	resp := map[string]any{"clients": views}
	if n := len(list); n > 0 && list[n-1].Source != ClientFromConfig && n >= limit {
		resp["next"] = list[n-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

type adminClientRequest struct {
	ClientID     string   `json:"client_id"`
	ClientName   string   `json:"client_name"`
	Public       bool     `json:"public"`
	RedirectURIs []string `json:"redirect_uris"`
	Scopes       []string `json:"scopes"`
	GrantTypes   []string `json:"grant_types"`
}

// adminCreateClient creates a client; a confidential one gets a generated
// secret, returned once.
func (s *Server) adminCreateClient(w http.ResponseWriter, r *http.Request) error {
	var req adminClientRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		return err
	}
	if req.ClientID == "" {
		req.ClientID = "cl_" + randomToken(16)
	}
	c, secret, err := NewClient(ClientSpec{
		ID: req.ClientID, Name: req.ClientName, Public: req.Public, RedirectURIs: req.RedirectURIs,
		Scopes: req.Scopes, GrantTypes: req.GrantTypes,
	}, ClientFromAdmin, s.now())
	if err != nil {
		return err
	}
	if _, err := s.agents.Get(r.Context(), c.ID); err == nil {
		return ErrConflict("this id belongs to an agent")
	}
	if err := s.clients.Create(r.Context(), c); err != nil {
		return err
	}
	s.log.Info("client created by operator", zap.String("client_id", c.ID))
	writeJSON(w, http.StatusCreated, clientView(c, secret))
	return nil
}

func (s *Server) adminClient(w http.ResponseWriter, r *http.Request, id string) error {
	notFound := ErrNotFoundPath("no client " + strconv.Quote(id))
	switch r.Method {
	case http.MethodGet:
		c, err := s.clients.Get(r.Context(), id)
		if errors.Is(err, ErrNotFound) {
			return notFound
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, clientView(c, ""))
		return nil
	case http.MethodPatch, http.MethodPut:
		var req struct {
			ClientName   *string   `json:"client_name"`
			RedirectURIs *[]string `json:"redirect_uris"`
			Scopes       *[]string `json:"scopes"`
			GrantTypes   *[]string `json:"grant_types"`
		}
		if err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
			return err
		}
		c, err := s.clients.Update(r.Context(), id, func(c *Client) error {
			if req.ClientName != nil {
				c.Name = *req.ClientName
			}
			if req.RedirectURIs != nil {
				c.RedirectURIs = *req.RedirectURIs
			}
			if req.Scopes != nil {
				c.Scopes = *req.Scopes
			}
			if req.GrantTypes != nil {
				if len(*req.GrantTypes) == 0 {
					return newError("invalid_client_metadata", 400, "grant_types must not be empty")
				}
				if c.Source == ClientFromDynamic && slices.ContainsFunc(*req.GrantTypes, func(g string) bool {
					return g != GrantAuthorizationCode && g != GrantRefreshToken
				}) {
					return newError("invalid_client_metadata", 400, "dynamically registered clients may use only authorization_code and refresh_token")
				}
				c.GrantTypes = *req.GrantTypes
			}
			return nil
		})
		if errors.Is(err, ErrNotFound) {
			return notFound
		}
		if err != nil {
			return err
		}
		s.log.Info("client updated by operator", zap.String("client_id", id))
		writeJSON(w, http.StatusOK, clientView(c, ""))
		return nil
	case http.MethodDelete:
		err := s.clients.Delete(r.Context(), id)
		if errors.Is(err, ErrNotFound) {
			return notFound
		}
		if err != nil {
			return err
		}
		s.log.Info("client deleted by operator", zap.String("client_id", id))
		writeJSON(w, http.StatusOK, map[string]string{"deleted": id})
		return nil
	}
	return ErrMethodNotAllowed(http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete)
}
