package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather returns the families of reg by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestRegisterTwiceAndOnSeveralRegistries(t *testing.T) {
	a, b := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	for _, reg := range []*prometheus.Registry{a, a, b} {
		if err := Register(reg); err != nil {
			t.Fatal(err)
		}
	}
	// One process-wide counter, seen by both registries (a config and the
	// one a reload made).
	before := counterValue(tokensIssued.WithLabelValues("client_credentials", "site"))
	TokenIssued("client_credentials", "site")
	if got := counterValue(tokensIssued.WithLabelValues("client_credentials", "site")); got != before+1 {
		t.Fatalf("counter %v, want %v", got, before+1)
	}
	if f := gather(t, b)["auth_agent_tokens_issued_total"]; f == nil || len(f.Metric) < 1 {
		t.Fatalf("registry b has no tokens issued: %v", f)
	}
}

func TestKeyMetricsFollowTheLatestSource(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	keys.now = func() time.Time { return now }
	defer func() { keys.now = nil }()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(keys); err != nil {
		t.Fatal(err)
	}
	old := SetKeySource(func() KeyState {
		return KeyState{Created: map[string]time.Time{"ES256": now.Add(-time.Hour)}, NextRotation: now.Add(time.Minute)}
	})
	clearNew := SetKeySource(func() KeyState {
		return KeyState{Created: map[string]time.Time{"ES256": now.Add(-2 * time.Hour)}, NextRotation: now.Add(-time.Minute)}
	})
	old() // the previous config stopping must not clear the new one's
	got := map[string]float64{}
	for name, f := range gather(t, reg) {
		if len(f.Metric) != 1 {
			t.Fatalf("%s: %d series", name, len(f.Metric))
		}
		got[name] = f.Metric[0].GetGauge().GetValue()
	}
	if got["auth_agent_signing_key_age_seconds"] != 7200 || got["auth_agent_signing_key_next_rotation_seconds"] != -60 {
		t.Fatalf("key metrics %v", got)
	}
	clearNew()
	if fams := gather(t, reg); len(fams) != 0 {
		t.Fatalf("%d families after the last source was cleared", len(fams))
	}
}
