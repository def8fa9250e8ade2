package oauth

import (
	"errors"
	"net/http"
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
//	GET    /auth_agent/agents/<id>
//	PATCH  /auth_agent/agents/<id>   {"permissions": [...], "disabled": bool}
//	DELETE /auth_agent/agents/<id>
func (s *Server) ServeAdmin(w http.ResponseWriter, r *http.Request) {
	if err := s.serveAdmin(w, r); err != nil {
		s.fail(w, r, err)
	}
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, AdminPrefix)
	switch {
	case rest == "agents" || rest == "agents/":
		if r.Method != http.MethodGet {
			return ErrMethodNotAllowed(http.MethodGet)
		}
		return s.adminListAgents(w, r)
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

func (s *Server) adminListAgents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return ErrInvalidRequest("limit must be a number from 1 to 1000")
		}
		limit = n
	}
	list, err := s.agents.List(r.Context(), q.Get("after"), limit)
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
	s.log.Info("agent updated by operator", zap.String("agent_id", id))
	writeJSON(w, http.StatusOK, viewOf(a))
	return nil
}
