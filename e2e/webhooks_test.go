package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authagent/caddy-authagent/internal/pgtest"
)

// The webhook receiver is e2e/webhooks/receiver.mjs: a Node server that
// verifies every delivery with the official Standard Webhooks npm package
// (an implementation independent of ours) and records it.
const (
	webhookLib        = "webhooks/node_modules/standardwebhooks"
	webhookLibVersion = "1.1.1"
	hookSecret        = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

var allWebhookTypes = []string{
	"agent.registered", "agent.updated", "agent.disabled", "agent.deleted", "signin.completed",
	"token.revoked", "refresh.reuse_detected", "client.registered", "key.rotated",
}

// requireWebhookLib returns node, skipping (failing under CI=true) when
// node or the pinned package is missing.
func requireWebhookLib(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		var pkg struct{ Version string }
		b, rerr := os.ReadFile(webhookLib + "/package.json")
		if err = rerr; err == nil {
			if err = json.Unmarshal(b, &pkg); err == nil && pkg.Version != webhookLibVersion {
				err = fmt.Errorf("standardwebhooks %s installed, want %s", pkg.Version, webhookLibVersion)
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but node or standardwebhooks is missing (.ci/run runs npm ci --prefix e2e/webhooks): %v", err)
		}
		t.Skipf("node or %s missing: install Node.js and run `npm ci --prefix e2e/webhooks`: %v", webhookLib, err)
	}
	return node
}

// hookReceiver is a running receiver.mjs.
type hookReceiver struct {
	t    *testing.T
	base string // http://127.0.0.1:<port>
	cmd  *exec.Cmd
	log  *syncedBuffer
	done chan struct{}
}

type syncedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hookRecord is one request the receiver got.
type hookRecord struct {
	Path           string         `json:"path"`
	ID             string         `json:"id"`
	Timestamp      string         `json:"timestamp"`
	ContentType    string         `json:"content_type"`
	Verified       bool           `json:"verified"`
	Error          string         `json:"error"`
	Type           string         `json:"type"`
	EventTimestamp string         `json:"event_timestamp"`
	Data           map[string]any `json:"data"`
	Status         int            `json:"status"`
}

// startReceiver runs the receiver on port (0: any free one).
func startReceiver(t *testing.T, node string, port int) *hookReceiver {
	t.Helper()
	cmd := exec.Command(node, "receiver.mjs")
	cmd.Dir = "webhooks"
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+hookSecret, "PORT="+strconv.Itoa(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &hookReceiver{t: t, cmd: cmd, log: new(syncedBuffer), done: make(chan struct{})}
	cmd.Stderr = h.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(h.done) }()
	t.Cleanup(h.stop)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				lines <- p
			}
			fmt.Fprintln(h.log, sc.Text())
		}
	}()
	select {
	case p := <-lines:
		h.base = "http://127.0.0.1:" + p
	case <-h.done:
		t.Fatalf("the receiver exited: %s", h.log)
	case <-time.After(20 * time.Second):
		t.Fatalf("the receiver did not start: %s", h.log)
	}
	return h
}

func (h *hookReceiver) stop() {
	if h.cmd.Process != nil {
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

// script sets how the next deliveries are answered.
func (h *hookReceiver) script(statuses []int, hang bool) {
	h.t.Helper()
	b, _ := json.Marshal(map[string]any{"statuses": statuses, "hang": hang})
	if r := do(h.t, "POST", h.base+"/script", nil, string(b)); r.status != 200 {
		h.t.Fatalf("script: %d %s", r.status, r.body)
	}
}

func (h *hookReceiver) received() []hookRecord {
	h.t.Helper()
	r := do(h.t, "GET", h.base+"/received", nil, "")
	var recs []hookRecord
	if r.status != 200 || json.Unmarshal(r.body, &recs) != nil {
		h.t.Fatalf("received: %d %s", r.status, r.body)
	}
	for _, rec := range recs {
		if !rec.Verified {
			h.t.Fatalf("a delivery failed Standard Webhooks verification: %+v", rec)
		}
	}
	return recs
}

// delivered returns the verified deliveries answered 200 at path whose
// event type is typ.
func delivered(recs []hookRecord, path, typ string) []hookRecord {
	var out []hookRecord
	for _, r := range recs {
		if r.Path == path && r.Type == typ && r.Status == 200 {
			out = append(out, r)
		}
	}
	return out
}

// webhookBlock is a webhook in the Caddyfile.
func webhookBlock(u string, types ...string) string {
	return fmt.Sprintf("\t\twebhook %s {\n\t\t\tevents %s\n\t\t\tsecret %s\n\t\t}\n", u, strings.Join(types, " "), hookSecret)
}

// adminDeliveries lists the deliveries through the admin API.
func (c *caddy) adminDeliveries(t *testing.T) []map[string]any {
	t.Helper()
	r := c.admin(t, "GET", "/auth_agent/webhooks/deliveries?limit=1000", "")
	if r.status != 200 {
		t.Fatalf("deliveries: %d %s", r.status, r.body)
	}
	var out []map[string]any
	for _, d := range r.json["deliveries"].([]any) {
		out = append(out, d.(map[string]any))
	}
	return out
}

// TestWebhooks: every event type arrives after its action, verified by
// the Standard Webhooks library; a receiver failing three times gets the
// event exactly once more; the admin API lists, adds, deletes and
// redelivers; and a hanging receiver does not slow the endpoint that
// caused the event.
func TestWebhooks(t *testing.T) {
	node := requireWebhookLib(t)
	rc := startReceiver(t, node, 0)
	site := newWebsite(t)
	cb := site.callback
	c := newCaddy(t, "")
	c.start(oauthOpts(cb, webhookBlock(rc.base+"/all", allWebhookTypes...)+webhookBlock(rc.base+"/keys", "key.rotated")))
	demo := map[string]string{"redirect_uri": cb}

	// Each action, then the event it must cause, with a field to check.
	id := c.registerOK(t, "hook-agent")
	tok := c.token(t, id, secret)
	if r := do(t, "PUT", c.base()+"/api/agents/profile", bearer(tok), `{"model_name":"gpt-5"}`); r.status != 200 {
		t.Fatalf("profile update: %d %s", r.status, r.body)
	}
	first := c.redeem(t, c.codeFor(t, demo, id), cb)
	rt1 := first.str("refresh_token")
	second := c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}})
	if second.status != 200 {
		t.Fatalf("refresh: %d %s", second.status, second.body)
	}
	wantError(t, c.tokenCall(t, "demo-site", clientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}}), 400, "invalid_grant")
	third := c.redeem(t, c.codeFor(t, demo, id), cb)
	if r := c.formCall(t, "/oauth2/revoke", "demo-site", clientSecret, url.Values{"token": {third.str("access_token")}}); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	cl := c.admin(t, "POST", "/auth_agent/clients", fmt.Sprintf(`{"client_name":"Hooked","redirect_uris":[%q],"scopes":["openid"]}`, cb))
	if cl.status != 201 {
		t.Fatalf("client: %d %s", cl.status, cl.body)
	}
	if r := c.admin(t, "POST", "/auth_agent/keys/rotate", ""); r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	if r := c.admin(t, "PATCH", "/auth_agent/agents/"+id, `{"disabled":true}`); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if r := c.admin(t, "DELETE", "/auth_agent/agents/"+id, ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	want := map[string][2]string{ // type → a data field and its value
		"agent.registered":       {"agent_id", id},
		"agent.updated":          {"agent_id", id},
		"agent.disabled":         {"agent_id", id},
		"agent.deleted":          {"agent_id", id},
		"signin.completed":       {"client_id", "demo-site"},
		"token.revoked":          {"token_type", "access_token"},
		"refresh.reuse_detected": {"client_id", "demo-site"},
		"client.registered":      {"client_id", cl.str("client_id")},
		"key.rotated":            {"", ""},
	}
	eventually(t, 30*time.Second, "every event type delivered", func() string {
		recs := rc.received()
		for _, typ := range allWebhookTypes {
			if len(delivered(recs, "/all", typ)) == 0 {
				return "no " + typ
			}
		}
		if len(delivered(recs, "/keys", "key.rotated")) == 0 {
			return "no key.rotated at /keys"
		}
		return ""
	})
	recs := rc.received()
	ids := map[string]bool{}
	for _, r := range recs {
		if r.Path == "/keys" && r.Type != "key.rotated" {
			t.Errorf("/keys subscribes to key.rotated only, got %s", r.Type)
		}
		if !strings.HasPrefix(r.ID, "evt_") || r.ContentType != "application/json" || r.EventTimestamp == "" {
			t.Errorf("delivery %+v", r)
		}
		if ts, err := time.Parse(time.RFC3339, r.EventTimestamp); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("payload timestamp %q: %v", r.EventTimestamp, err)
		}
		if r.Path == "/all" {
			if ids[r.ID] {
				t.Errorf("webhook-id %s delivered twice", r.ID)
			}
			ids[r.ID] = true
		}
		b, _ := json.Marshal(r.Data)
		if strings.Contains(string(b), secret) || strings.Contains(string(b), clientSecret) || strings.Contains(string(b), rt1) {
			t.Errorf("a payload carries a secret or token: %s", b)
		}
	}
	for typ, field := range want {
		got := delivered(recs, "/all", typ)
		if typ == "token.revoked" || typ == "agent.updated" || typ == "agent.registered" || typ == "agent.deleted" || typ == "agent.disabled" {
			if len(got) != 1 {
				t.Errorf("%s delivered %d times, want once", typ, len(got))
			}
		}
		if field[0] != "" && len(got) > 0 && got[0].Data[field[0]] != field[1] {
			t.Errorf("%s data %v: want %s = %q", typ, got[0].Data, field[0], field[1])
		}
	}
	t.Logf("delivered %d events", len(ids))

	t.Run("admin API", func(t *testing.T) {
		r := c.admin(t, "GET", "/auth_agent/webhooks", "")
		hooks, _ := r.json["webhooks"].([]any)
		if r.status != 200 || len(hooks) != 2 || strings.Contains(string(r.body), hookSecret) || strings.Contains(string(r.body), "secret") {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		cfgID := hooks[0].(map[string]any)["id"].(string)
		if !strings.HasPrefix(cfgID, "cfg_") || hooks[0].(map[string]any)["source"] != "config" {
			t.Fatalf("config webhook %v", hooks[0])
		}
		wantError(t, c.admin(t, "DELETE", "/auth_agent/webhooks/"+cfgID, ""), 409, "invalid_request")
		wantError(t, c.admin(t, "DELETE", "/auth_agent/webhooks/wh_nope", ""), 404, "invalid_request")
		for _, body := range []string{
			`{"url":"http://hooks.example.com/x","events":["agent.registered"]}`,
			`{"url":"https://hooks.example.com/x","events":["token.issued"]}`,
			`{"url":"https://hooks.example.com/x","events":[]}`,
			`{"url":"https://hooks.example.com/x","events":["agent.registered"],"secret":"hunter2"}`,
			`{"url":"ftp://hooks.example.com/x","events":["agent.registered"]}`,
			`{"url":`,
			`{"url":1}`,
		} {
			r := c.admin(t, "POST", "/auth_agent/webhooks", body)
			wantError(t, r, 400, "invalid_request")
			if strings.Contains(string(r.body), "hunter2") {
				t.Fatalf("the error repeats the secret: %s", r.body)
			}
		}
		for _, q := range []string{"0", "1001", "x"} {
			wantError(t, c.admin(t, "GET", "/auth_agent/webhooks/deliveries?limit="+q, ""), 400, "invalid_request")
		}
		wantError(t, c.admin(t, "POST", "/auth_agent/webhooks/deliveries/dlv_nope/redeliver", ""), 404, "invalid_request")
		wantError(t, c.admin(t, "PUT", "/auth_agent/webhooks", ""), 405, "invalid_request")

		gen := c.admin(t, "POST", "/auth_agent/webhooks", `{"url":"https://hooks.example.com/gen","events":["agent.deleted"]}`)
		if gen.status != 201 || !strings.HasPrefix(gen.str("secret"), "whsec_") || !strings.HasPrefix(gen.str("id"), "wh_") {
			t.Fatalf("create: %d %s", gen.status, gen.body)
		}
		if r := c.admin(t, "DELETE", "/auth_agent/webhooks/"+gen.str("id"), ""); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		made := c.admin(t, "POST", "/auth_agent/webhooks", fmt.Sprintf(`{"url":%q,"events":["agent.registered"],"secret":%q}`, rc.base+"/admin", hookSecret))
		if made.status != 201 || made.str("secret") != hookSecret {
			t.Fatalf("create: %d %s", made.status, made.body)
		}
		if r := c.admin(t, "GET", "/auth_agent/webhooks", ""); len(r.json["webhooks"].([]any)) != 3 {
			t.Fatalf("list after create: %s", r.body)
		}
		c.registerOK(t, "admin-hook-agent")
		eventually(t, 30*time.Second, "delivered to the admin webhook", func() string {
			if len(delivered(rc.received(), "/admin", "agent.registered")) != 1 {
				return "not yet"
			}
			return ""
		})

		// The receiver has the delivery before the dispatcher records its
		// answer: wait for the records too.
		eventually(t, 10*time.Second, "every delivery recorded as delivered", func() string {
			for _, d := range c.adminDeliveries(t) {
				if d["state"] != "delivered" {
					return fmt.Sprintf("%v", d)
				}
			}
			return ""
		})
		ds := c.adminDeliveries(t)
		var keyDelivery map[string]any
		for _, d := range ds {
			for _, f := range []string{"id", "webhook_id", "url", "event_id", "event_type", "state", "attempts", "next_attempt", "last_attempt", "last_status", "last_error", "created_at"} {
				if _, ok := d[f]; !ok {
					t.Fatalf("delivery without %s: %v", f, d)
				}
			}
			if d["state"] != "delivered" {
				t.Errorf("delivery %v not delivered", d)
			}
			if d["event_type"] == "key.rotated" && strings.HasSuffix(d["url"].(string), "/keys") {
				keyDelivery = d
			}
		}
		if r := c.admin(t, "GET", "/auth_agent/webhooks/deliveries?limit=2", ""); len(r.json["deliveries"].([]any)) != 2 {
			t.Fatalf("limit=2: %s", r.body)
		}
		if keyDelivery == nil {
			t.Fatal("no key.rotated delivery to /keys listed")
		}
		re := c.admin(t, "POST", "/auth_agent/webhooks/deliveries/"+keyDelivery["id"].(string)+"/redeliver", "")
		if re.status != 201 || re.str("event_id") != keyDelivery["event_id"] || re.str("id") == keyDelivery["id"] || re.str("state") != "pending" {
			t.Fatalf("redeliver: %d %s", re.status, re.body)
		}
		eventually(t, 30*time.Second, "redelivered", func() string {
			got := delivered(rc.received(), "/keys", "key.rotated")
			if len(got) != 2 {
				return fmt.Sprintf("%d deliveries", len(got))
			}
			if got[0].ID != got[1].ID || got[1].ID != keyDelivery["event_id"] {
				t.Fatalf("a redelivery has another webhook-id: %s, %s", got[0].ID, got[1].ID)
			}
			return ""
		})
		if r := c.admin(t, "DELETE", "/auth_agent/webhooks/"+made.str("id"), ""); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	})

	t.Run("500 three times then 200", func(t *testing.T) {
		rc.script([]int{500, 500, 500}, false)
		c.registerOK(t, "retry-agent")
		var got []hookRecord
		// Attempts after about 1 s, 5 s and 30 s: about 36 s.
		eventually(t, 90*time.Second, "delivered after three failures", func() string {
			got = nil
			for _, r := range rc.received() {
				if r.Path == "/all" && r.Type == "agent.registered" && r.Data["agent_id"] == "retry-agent" {
					got = append(got, r)
				}
			}
			if len(got) < 4 {
				return fmt.Sprintf("%d attempts", len(got))
			}
			return ""
		})
		statuses := []int{}
		for _, r := range got {
			statuses = append(statuses, r.Status)
			if r.ID != got[0].ID {
				t.Errorf("webhook-id changed between attempts: %s, %s", got[0].ID, r.ID)
			}
		}
		if !slices.Equal(statuses, []int{500, 500, 500, 200}) {
			t.Fatalf("answers %v, want 500 500 500 200", statuses)
		}
		for _, d := range c.adminDeliveries(t) {
			if d["event_id"] == got[0].ID {
				if d["state"] != "delivered" || d["attempts"] != 4.0 || d["last_status"] != 200.0 || d["last_error"] != "" {
					t.Fatalf("delivery %v", d)
				}
			}
		}
		// Nothing more arrives once it was delivered.
		time.Sleep(3 * time.Second)
		n := 0
		for _, r := range rc.received() {
			if r.ID == got[0].ID {
				n++
			}
		}
		if n != 4 {
			t.Fatalf("%d requests for the event, want 4", n)
		}
		fams := c.scrape(t)
		if v := metric(fams, "auth_agent_webhook_deliveries_total", map[string]string{"result": "failed"}); v < 3 {
			t.Errorf("failed attempts counted %v, want at least 3", v)
		}
		if v := metric(fams, "auth_agent_webhook_deliveries_total", map[string]string{"result": "delivered"}); v < 12 {
			t.Errorf("deliveries counted %v, want at least 12", v)
		}
	})

	t.Run("a hanging receiver does not slow registration", func(t *testing.T) {
		rc.script(nil, true)
		for i := range 8 {
			start := time.Now()
			r := c.register(t, fmt.Sprintf("hang-agent-%d", i), secret)
			if r.status != 201 {
				t.Fatalf("register: %d %s", r.status, r.body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("registration took %v while the receiver hangs", d)
			}
		}
		eventually(t, 30*time.Second, "the receiver holds attempts", func() string {
			n := 0
			for _, r := range rc.received() {
				if r.Status == 0 {
					n++
				}
			}
			if n == 0 {
				return "no attempt reached the receiver"
			}
			return ""
		})
		rc.script(nil, false)
		// Each hanging attempt times out after 10 s and is retried.
		eventually(t, 60*time.Second, "delivered once the receiver answers", func() string {
			for i := range 8 {
				found := false
				for _, r := range delivered(rc.received(), "/all", "agent.registered") {
					found = found || r.Data["agent_id"] == fmt.Sprintf("hang-agent-%d", i)
				}
				if !found {
					return fmt.Sprintf("hang-agent-%d not delivered", i)
				}
			}
			return ""
		})
	})
	if strings.Contains(c.log.String(), hookSecret) || strings.Contains(c.log.String(), strings.TrimPrefix(hookSecret, "whsec_")) {
		t.Fatal("the log shows the webhook secret")
	}
}

// TestWebhooksConfigErrors: a webhook Caddy cannot use is a configuration
// error naming it.
func TestWebhooksConfigErrors(t *testing.T) {
	c := newCaddy(t, "")
	for _, tc := range []struct{ block, want string }{
		{webhookBlock("http://hooks.example.com/in", "agent.registered"), "must be https"},
		{webhookBlock("http://10.0.0.1/in", "agent.registered"), "must be https"},
		{webhookBlock("https://hooks.example.com/in", "token.issued"), "is not one of agent.registered"},
		{"\t\twebhook https://hooks.example.com/in {\n\t\t\tevents agent.registered\n\t\t\tsecret whsec_c2hvcnQ=\n\t\t}\n", "24 to 64 bytes"},
		{"\t\twebhook https://hooks.example.com/in {\n\t\t\tevents agent.registered\n\t\t}\n", "secret"},
	} {
		path := c.writeConfig(tc.block)
		cmd := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
		cmd.Env = c.env()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("validate of\n%s: %v, want an error with %q:\n%s", tc.block, err, tc.want, out)
		}
	}
	// A valid one validates.
	path := c.writeConfig(webhookBlock("https://hooks.example.com/in", "agent.registered") + webhookBlock("http://localhost:9/x", "key.rotated"))
	cmd := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = c.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("a valid webhook config: %v\n%s", err, out)
	}
}

// TestWebhooksSurviveKill9: an event accepted while the receiver is down
// is delivered after Caddy is killed with SIGKILL and started again.
func TestWebhooksSurviveKill9(t *testing.T) {
	node := requireWebhookLib(t)
	port := freePort(t) // nothing listens yet: the receiver is down
	hookURL := fmt.Sprintf("http://127.0.0.1:%d/hook", port)
	c := newCaddy(t, "")
	opts := webhookBlock(hookURL, "agent.registered")
	c.start(opts)
	c.registerOK(t, "kill-agent")
	var eventID string
	eventually(t, 20*time.Second, "a failed attempt recorded", func() string {
		for _, d := range c.adminDeliveries(t) {
			if d["state"] == "pending" && d["attempts"].(float64) >= 1 && strings.Contains(d["last_error"].(string), "could not be sent") {
				eventID = d["event_id"].(string)
				return ""
			}
		}
		return "no failed attempt yet"
	})
	c.kill9()
	rc := startReceiver(t, node, port)
	c.start(opts)
	eventually(t, 90*time.Second, "delivered after the restart", func() string {
		got := delivered(rc.received(), "/hook", "agent.registered")
		if len(got) == 0 {
			return "not delivered"
		}
		if len(got) != 1 || got[0].ID != eventID || got[0].Data["agent_id"] != "kill-agent" {
			t.Fatalf("delivered %+v, want event %s once", got, eventID)
		}
		return ""
	})
}

// TestWebhooksCluster: two instances on one PostgreSQL database deliver
// each event exactly once.
func TestWebhooksCluster(t *testing.T) {
	node := requireWebhookLib(t)
	rc := startReceiver(t, node, 0)
	pg := pgtest.Start(t)
	pg.CreateDatabase(t, "authagent")
	opts := webhookBlock(rc.base+"/hook", "agent.registered")
	a, b := newCaddy(t, ""), newCaddy(t, "")
	for _, c := range []*caddy{a, b} {
		c.storage = "postgres " + pg.DSN("authagent")
	}
	a.start(opts)
	b.start(opts)
	const n = 20
	for i := range n {
		c := a
		if i%2 == 1 {
			c = b
		}
		c.registerOK(t, fmt.Sprintf("cluster-hook-%d", i))
	}
	eventually(t, 60*time.Second, "every event delivered", func() string {
		if got := len(delivered(rc.received(), "/hook", "agent.registered")); got < n {
			return fmt.Sprintf("%d of %d", got, n)
		}
		return ""
	})
	// Both instances poll every second: give a second delivery time to
	// show up, were there one.
	time.Sleep(3 * time.Second)
	seen := map[string]int{}
	for _, r := range rc.received() {
		seen[r.ID]++
	}
	if len(seen) != n {
		t.Fatalf("%d distinct events, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("event %s delivered %d times", id, k)
		}
	}
	// Both instances list the same deliveries.
	if la, lb := len(a.adminDeliveries(t)), len(b.adminDeliveries(t)); la != n || lb != n {
		t.Fatalf("instances list %d and %d deliveries, want %d", la, lb, n)
	}
}
