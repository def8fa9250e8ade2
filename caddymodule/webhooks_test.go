package caddymodule

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/authagent/caddy-authagent/events"
	"github.com/authagent/caddy-authagent/oauth"
	"github.com/authagent/caddy-authagent/storage"
)

const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestWebhookCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"no url":          "auth_agent {\n webhook {\n events agent.registered\n secret x\n }\n}",
		"two urls":        "auth_agent {\n webhook https://a/x https://b/y {\n events agent.registered\n secret x\n }\n}",
		"no events":       "auth_agent {\n webhook https://a/x {\n secret x\n }\n}",
		"empty events":    "auth_agent {\n webhook https://a/x {\n events\n secret x\n }\n}",
		"no secret":       "auth_agent {\n webhook https://a/x {\n events agent.registered\n }\n}",
		"secret twice":    "auth_agent {\n webhook https://a/x {\n events agent.registered\n secret a\n secret b\n }\n}",
		"secret two args": "auth_agent {\n webhook https://a/x {\n events agent.registered\n secret a b\n }\n}",
		"unknown setting": "auth_agent {\n webhook https://a/x {\n events agent.registered\n secret a\n retries 3\n }\n}",
	}
	for name, input := range cases {
		t.Run(name, func(t *testing.T) {
			if err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Fatalf("accepted %q", input)
			}
		})
	}
	var a App
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("auth_agent {\n issuer https://auth.example.com\n" +
		" webhook https://a.example/x {\n events agent.registered key.rotated\n secret {env.X}\n }\n" +
		" webhook http://localhost:9/y {\n event token.revoked\n secret " + testWebhookSecret + "\n }\n}"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Webhooks) != 2 || a.Webhooks[0].URL != "https://a.example/x" || len(a.Webhooks[0].Events) != 2 ||
		a.Webhooks[0].Secret != "{env.X}" || a.Webhooks[1].Events[0] != "token.revoked" {
		t.Fatalf("parsed %+v", a.Webhooks)
	}
}

func TestWebhookValidate(t *testing.T) {
	hook := func(url, secret string, types ...string) *WebhookConfig {
		return &WebhookConfig{URL: url, Events: types, Secret: secret}
	}
	cases := map[string]struct {
		hooks []*WebhookConfig
		want  string
	}{
		"http remote":   {[]*WebhookConfig{hook("http://hooks.example.com/x", testWebhookSecret, "agent.registered")}, "https"},
		"no events":     {[]*WebhookConfig{hook("https://hooks.example.com/x", testWebhookSecret)}, "events"},
		"unknown event": {[]*WebhookConfig{hook("https://hooks.example.com/x", testWebhookSecret, "token.issued")}, "token.issued"},
		"no secret":     {[]*WebhookConfig{hook("https://hooks.example.com/x", "", "agent.registered")}, "secret"},
		"bad secret":    {[]*WebhookConfig{hook("https://hooks.example.com/x", "hunter2hunter2", "agent.registered")}, "whsec_"},
		"twice": {[]*WebhookConfig{
			hook("https://hooks.example.com/x", testWebhookSecret, "agent.registered", "key.rotated"),
			hook("https://hooks.example.com/x", testWebhookSecret, "key.rotated", "agent.registered"),
		}, "twice"},
		"nil": {[]*WebhookConfig{nil}, "no settings"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := &App{Issuer: "https://auth.example.com", Webhooks: tc.hooks}
			err := a.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the message repeats the secret: %v", err)
			}
		})
	}
	ok := &App{Issuer: "https://auth.example.com", Webhooks: []*WebhookConfig{
		hook("https://hooks.example.com/x", "{env.AUTH_AGENT_TEST_WEBHOOK_SECRET}", "agent.registered"),
	}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUTH_AGENT_TEST_WEBHOOK_SECRET", testWebhookSecret)
	hooks, err := buildWebhooks(caddy.NewReplacer(), ok.Webhooks)
	if err != nil || len(hooks) != 1 || hooks[0].Secret != testWebhookSecret || !strings.HasPrefix(hooks[0].ID, "cfg_") {
		t.Fatalf("buildWebhooks = %+v, %v", hooks, err)
	}
	t.Setenv("AUTH_AGENT_TEST_WEBHOOK_SECRET", "")
	if _, err := buildWebhooks(caddy.NewReplacer(), ok.Webhooks); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("an empty expanded secret: %v", err)
	}
}

// TestWebhookAdminRoutes drives the routes with a dispatcher on the memory
// store: statuses, bodies and the SPEC's error shape.
func TestWebhookAdminRoutes(t *testing.T) {
	out := storage.NewMemory(nil)
	cfg := events.Webhook{ID: events.ConfigWebhookID("https://hooks.example/cfg", []string{"agent.registered"}),
		URL: "https://hooks.example/cfg", Events: []string{"agent.registered"}, Secret: testWebhookSecret, Source: events.WebhookFromConfig}
	d := events.NewDispatcher(out, []events.Webhook{cfg}, events.DispatcherOptions{})
	if err := d.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	wa := webhookAdmin{d}
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		rest := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/auth_agent/webhooks"), "/")
		if err := serveWebhookAdmin(wa, w, r, rest); err != nil {
			oauth.WriteError(w, err)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s: not JSON: %s", method, path, w.Body)
		}
		if w.Code >= 400 {
			if v["error"] == nil || v["error_description"] == nil || len(v) != 2 {
				t.Fatalf("%s %s: error shape %s", method, path, w.Body)
			}
		}
		return w.Code, v
	}

	bad := []struct{ method, path, body string }{
		{"POST", "/auth_agent/webhooks", `{"url":"http://hooks.example/x","events":["agent.registered"]}`},
		{"POST", "/auth_agent/webhooks", `{"url":"https://hooks.example/x","events":[]}`},
		{"POST", "/auth_agent/webhooks", `{"url":"https://hooks.example/x","events":["nope"]}`},
		{"POST", "/auth_agent/webhooks", `{"url":"https://hooks.example/x","events":["agent.registered"],"secret":"whsec_x"}`},
		{"POST", "/auth_agent/webhooks", `{"url":`},
		{"POST", "/auth_agent/webhooks", `{"url":"https://hooks.example/x","events":"agent.registered"}`},
		{"GET", "/auth_agent/webhooks/deliveries?limit=0", ""},
		{"GET", "/auth_agent/webhooks/deliveries?limit=1001", ""},
		{"GET", "/auth_agent/webhooks/deliveries?limit=x", ""},
	}
	for _, b := range bad {
		if code, v := call(b.method, b.path, b.body); code != 400 {
			t.Errorf("%s %s %s: %d %v, want 400", b.method, b.path, b.body, code, v)
		}
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"DELETE", "/auth_agent/webhooks/" + cfg.ID, 409},
		{"DELETE", "/auth_agent/webhooks/wh_unknown", 404},
		{"POST", "/auth_agent/webhooks/deliveries/dlv_unknown/redeliver", 404},
		{"GET", "/auth_agent/webhooks/deliveries/dlv_unknown/redeliver", 405},
		{"GET", "/auth_agent/webhooks/deliveries/dlv_unknown", 404},
		{"PUT", "/auth_agent/webhooks", 405},
		{"POST", "/auth_agent/webhooks/deliveries", 405},
		{"GET", "/auth_agent/webhooks/wh_x", 405},
		{"DELETE", "/auth_agent/webhooks/a/b", 404},
	} {
		if code, v := call(c.method, c.path, ""); code != c.want {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, code, v, c.want)
		}
	}

	code, made := call("POST", "/auth_agent/webhooks", `{"url":"https://hooks.example/new","events":["key.rotated"]}`)
	secret, _ := made["secret"].(string)
	if code != 201 || events.ValidateSecret(secret) != nil || made["source"] != "admin" {
		t.Fatalf("create: %d %v", code, made)
	}
	code, list := call("GET", "/auth_agent/webhooks", "")
	hooks, _ := list["webhooks"].([]any)
	if code != 200 || len(hooks) != 2 {
		t.Fatalf("list: %d %v", code, list)
	}
	for _, h := range hooks {
		if _, ok := h.(map[string]any)["secret"]; ok {
			t.Fatalf("a listing shows a secret: %v", h)
		}
	}
	if code, v := call("GET", "/auth_agent/webhooks/deliveries", ""); code != 200 || v["deliveries"] == nil {
		t.Fatalf("deliveries: %d %v", code, v)
	}
	if code, v := call("DELETE", "/auth_agent/webhooks/"+made["id"].(string), ""); code != 200 || v["deleted"] != made["id"] {
		t.Fatalf("delete: %d %v", code, v)
	}
}
