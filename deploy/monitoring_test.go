package deploy

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// metricsFromElsewhere are metric names the rules and the dashboard use
// that a plain `rewrited serve` does not export: each with where it comes
// from.
var metricsFromElsewhere = map[string]string{
	"rewrited_shadow_comparisons_total": "exported only while a NAME.shadow.lua runs beside NAME.lua",
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
			Labels map[string]string
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	readYAML(t, "monitoring/rewrited-alerts.yaml", &rf)
	if len(rf.Groups) == 0 {
		t.Fatal("monitoring/rewrited-alerts.yaml holds no group")
	}
	return rf
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestPrometheusRuleIsTheRulesFile: the PrometheusRule manifest holds
// exactly the groups of the plain rules file.
func TestPrometheusRuleIsTheRulesFile(t *testing.T) {
	var plain struct {
		Groups any `yaml:"groups"`
	}
	var manifest struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Spec       struct {
			Groups any `yaml:"groups"`
		} `yaml:"spec"`
	}
	readYAML(t, "monitoring/rewrited-alerts.yaml", &plain)
	readYAML(t, "monitoring/prometheusrule.yaml", &manifest)
	if manifest.APIVersion != "monitoring.coreos.com/v1" || manifest.Kind != "PrometheusRule" {
		t.Errorf("prometheusrule.yaml is a %s %s", manifest.APIVersion, manifest.Kind)
	}
	if !reflect.DeepEqual(plain.Groups, manifest.Spec.Groups) {
		t.Error("prometheusrule.yaml's groups differ from rewrited-alerts.yaml's: copy them over")
	}
}

// dashboardExprs returns every query of the Grafana dashboard: the panels'
// targets and the template variables.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	return exprs
}

var (
	// Label matchers and grouping clauses hold label names, not metrics.
	promqlLabels = regexp.MustCompile(`\{[^}]*\}|\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// Metric names are the identifiers with rewrited's or its libraries'
	// prefixes; functions, keywords and variables have none of them.
	metricName = regexp.MustCompile(`\b(rewrited|grpc|go|process)_[a-zA-Z0-9_:]*`)
	sampleName = regexp.MustCompile(`(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]`)
)

// metricNames returns the metric names an expression uses, roughly: the
// identifiers with a known prefix outside label matchers and groupings.
func metricNames(expr string) []string {
	return metricName.FindAllString(promqlLabels.ReplaceAllString(expr, " "), -1)
}

func TestMetricNamesOfExpressions(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sum by (job, grpc_code) (rate(grpc_server_handled_total{grpc_code!~"OK|go_x"}[5m])) / on (job) rewrited_ready`, []string{"grpc_server_handled_total", "rewrited_ready"}},
		{`label_values(rewrited_policy_info{job=~"$job"}, policy)`, []string{"rewrited_policy_info"}},
		{`histogram_quantile(0.99, sum by (le) (rate(rewrited_eval_seconds_bucket[5m]))) > 0.015`, []string{"rewrited_eval_seconds_bucket"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

// TestMonitoringMetricsExist scrapes a real `rewrited serve` and checks that
// every metric the alert rules and the dashboard query is exported. The
// policy folder holds a broken file so that the refusal metrics appear.
func TestMonitoringMetricsExist(t *testing.T) {
	dir := t.TempDir()
	for name, src := range map[string]string{
		"default.lua": "kumo.on('smtp_server_rewrite_response', function() end)\n",
		"broken.lua":  "kumo.on('smtp_server_rewrite_response', function() return 250, end)\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := rewritedtest.Start(t, "--policy-dir", dir, "--metrics-listen", "127.0.0.1:0")
	code, body := rewritedtest.HTTPGet(t, "http://"+metricsAddr(t, p)+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	exported := map[string]bool{}
	for _, m := range sampleName.FindAllStringSubmatch(body, -1) {
		exported[m[1]] = true
	}

	used := map[string][]string{} // metric → where it is used
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			for _, name := range metricNames(r.Expr) {
				used[name] = append(used[name], "alert "+r.Alert)
			}
		}
	}
	for _, expr := range dashboardExprs(t) {
		for _, name := range metricNames(expr) {
			used[name] = append(used[name], "dashboard")
		}
	}
	if len(used) < 10 {
		t.Fatalf("only %d metric names found in the rules and the dashboard: the parsing is broken", len(used))
	}
	for name, where := range used {
		if exported[name] {
			continue
		}
		if _, ok := metricsFromElsewhere[name]; ok {
			continue
		}
		t.Errorf("%s (used by %s) is not exported by rewrited serve", name, strings.Join(slices.Compact(slices.Sorted(slices.Values(where))), ", "))
	}
	for name, why := range metricsFromElsewhere {
		if exported[name] {
			t.Errorf("%s is exported by a plain serve: remove it from metricsFromElsewhere (%s)", name, why)
		}
	}
}
