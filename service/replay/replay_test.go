package replay

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/decisiongen"
	"github.com/rewrited/rewrited/service/policy"
)

func compile(t testing.TB) *policy.Policy {
	t.Helper()
	p, _, err := policy.Compile("candidate.lua", []byte(decisiongen.Candidate), policy.Options{ProtectData: true, EvalTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// records generates n decision records.
func records(t testing.TB, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := decisiongen.Write(&b, n); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestWorkersAgree: however many workers share the records, the report is
// the same, its examples the first in input order.
func TestWorkersAgree(t *testing.T) {
	p := compile(t)
	data := records(t, 5000)
	var reports []*Report
	for _, workers := range []int{1, 4} {
		rep, err := Run(context.Background(), p, []Input{{Name: "a", Reader: bytes.NewReader(data)}, {Name: "b", Reader: bytes.NewReader(data)}}, Options{Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		reports = append(reports, rep)
	}
	rep := reports[0]
	if rep.Records != 10000 || rep.Replayed != 7500 || rep.Changed != 2500 || rep.Same != 5000 || rep.Skipped["conn_meta (keys only)"] != 2500 {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Differences) != 1 || len(rep.Differences[0].Examples) != 3 {
		t.Fatalf("differences %+v", rep.Differences)
	}
	for i, ex := range rep.Differences[0].Examples {
		if want := fmt.Sprintf("a:%d", 4*i+1); ex.Source != want || !strings.HasSuffix(ex.Candidate.Response, fmt.Sprintf("(see https://example.com/%d)", 4*i)) {
			t.Errorf("example %d: %+v, want from %s", i, ex, want)
		}
	}
	if !reflect.DeepEqual(reports[0], reports[1]) {
		t.Errorf("1 worker: %+v\n4 workers: %+v", reports[0], reports[1])
	}
}

// BenchmarkRun is the cost of replaying one record, decoding included.
func BenchmarkRun(b *testing.B) {
	p := compile(b)
	data := records(b, 100000)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Run(context.Background(), p, []Input{{Name: "a", Reader: bytes.NewReader(data)}}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100000, "ns/record")
}

// TestRunawayCandidateIsBroken: a candidate that never returns counts as
// broken by timeout, retried or not.
func TestRunawayCandidateIsBroken(t *testing.T) {
	p, _, err := policy.Compile("runaway.lua", []byte(`kumo.on('smtp_server_rewrite_response', function(status) if status == 451 then while true do end end end)`),
		policy.Options{EvalTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	data := `{"schema":1,"policy":"default","status":451,"response":"later","outcome":"unchanged","reply":{"status":451,"response":"later"}}
{"schema":1,"policy":"default","status":250,"response":"OK","outcome":"unchanged","reply":{"status":250,"response":"OK"}}
`
	rep, err := Run(context.Background(), p, []Input{{Name: "a", Reader: strings.NewReader(data)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Broken != 1 || rep.BrokenBy["timeout"] != 1 || rep.Same != 1 || !rep.Differs() {
		t.Errorf("report %+v", rep)
	}
	if ex := rep.Differences[0].Examples[0]; ex.Source != "a:1" || ex.Candidate != (Reply{451, "later"}) || ex.Outcome != "timeout" {
		t.Errorf("example %+v", ex)
	}
}
