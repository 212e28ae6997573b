package metrics

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
)

// served is a PolicySource whose list a test changes.
type served []*policy.Policy

func (s *served) Policies() []*policy.Policy { return *s }

// withCandidates is a CandidateSource.
type withCandidates struct {
	served
	candidates map[string]*policy.Policy
}

func (w *withCandidates) Candidate(name string) (*policy.Policy, bool) {
	p, ok := w.candidates[name]
	return p, ok
}

func compile(t *testing.T, name, src string) *policy.Policy {
	t.Helper()
	p, _, err := policy.Compile(name+".lua", []byte(src), policy.Options{Name: name, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.Warm(); err != nil {
		t.Fatal(err)
	}
	return p
}

// samples returns "name{label=value,...} value" for every sample of the
// families whose name starts with prefix, sorted.
func samples(t *testing.T, m *Metrics, prefix string) []string {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), prefix) {
			continue
		}
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, f.GetName()+"{"+strings.Join(labels, ",")+"} "+value(s))
		}
	}
	sort.Strings(out)
	return out
}

func value(s *dto.Metric) string {
	switch {
	case s.Counter != nil:
		return trimFloat(s.Counter.GetValue())
	case s.Gauge != nil:
		return trimFloat(s.Gauge.GetValue())
	case s.Histogram != nil:
		return "count=" + trimFloat(float64(s.Histogram.GetSampleCount()))
	}
	return "?"
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestOutcomesFit(t *testing.T) {
	if len(rewritev1.Outcome_name) != numOutcomes {
		t.Fatalf("the proto has %d outcomes, numOutcomes is %d", len(rewritev1.Outcome_name), numOutcomes)
	}
}

func TestObserveAndPolicies(t *testing.T) {
	m := New()
	a := compile(t, "a", "kumo.on('smtp_server_rewrite_response', function() return 250, 'x' end)")
	src := &served{a}
	m.CollectPolicies(src)
	m.PolicyLoaded("a", nil)
	m.PolicyLoaded("a", errors.New("boom"))

	for _, o := range []policy.Outcome{policy.OutcomeRewritten, policy.OutcomeRewritten, policy.OutcomeProtected, policy.OutcomeUnspecified} {
		m.Observe(context.Background(), a, policy.Input{}, policy.Decision{Outcome: o}, 30*time.Microsecond)
	}
	got := strings.Join(samples(t, m, "rewrited_"), "\n")
	for _, want := range []string{
		"rewrited_decisions_total{outcome=rewritten,policy=a} 2",
		"rewrited_decisions_total{outcome=protected,policy=a} 1",
		"rewrited_decisions_total{outcome=timeout,policy=a} 0",
		"rewrited_eval_seconds{policy=a} count=4",
		"rewrited_policy_reloads_total{policy=a,result=success} 1",
		"rewrited_policy_reloads_total{policy=a,result=failure} 1",
		"rewrited_policy_info{policy=a,shadow_version=,version=" + a.Version() + "} 1",
		"rewrited_policy_shadow{policy=a} 0",
		"rewrited_lua_states_idle{policy=a} 2",
		"rewrited_lua_states_created_total{policy=a} 2",
		"rewrited_lua_pool_misses_total{policy=a} 0",
	} {
		if !strings.Contains(got+"\n", want+"\n") {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
	if strings.Contains(got, "unspecified") {
		t.Errorf("OUTCOME_UNSPECIFIED was counted:\n%s", got)
	}

	// Once replaced, a policy's version and pool drop out of the scrape.
	b := compile(t, "a", "-- empty")
	*src = served{b}
	got = strings.Join(samples(t, m, "rewrited_policy_info"), "\n")
	if want := "rewrited_policy_info{policy=a,shadow_version=,version=" + b.Version() + "} 1"; got != want {
		t.Errorf("after the swap:\n%s\nwant\n%s", got, want)
	}
}

func TestPolicyInfoAndComparisonsOfACandidate(t *testing.T) {
	m := New()
	live := compile(t, "a", "kumo.on('smtp_server_rewrite_response', function() return 250, 'v1' end)")
	cand := compile(t, "a", "kumo.on('smtp_server_rewrite_response', function() return 250, 'v2' end)")
	m.CollectPolicies(&withCandidates{served{live}, map[string]*policy.Policy{"a": cand}})
	m.ShadowCompared("a", "different")
	m.ShadowCompared("a", "different")
	m.ShadowCompared("a", "skipped")
	got := strings.Join(samples(t, m, "rewrited_"), "\n")
	for _, want := range []string{
		"rewrited_policy_info{policy=a,shadow_version=" + cand.Version() + ",version=" + live.Version() + "} 1",
		"rewrited_shadow_comparisons_total{policy=a,result=different} 2",
		"rewrited_shadow_comparisons_total{policy=a,result=skipped} 1",
	} {
		if !strings.Contains(got+"\n", want+"\n") {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
}

// BenchmarkObserve is the per-decision cost of the metrics.
func BenchmarkObserve(b *testing.B) {
	m := New()
	p, _, err := policy.Compile("a.lua", nil, policy.Options{Name: "a", PoolSize: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	d := policy.Decision{Outcome: policy.OutcomeRewritten}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(ctx, p, policy.Input{}, d, 40*time.Microsecond)
		}
	})
}
