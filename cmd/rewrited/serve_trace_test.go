package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// TestServeDecisionRecordCarriesTraceID: with tracing on, a call that
// carries a W3C traceparent is recorded in the decision log under the
// caller's trace id, so a record leads to the trace and back; a call
// without one is recorded under the trace the server started for it.
func TestServeDecisionRecordCarriesTraceID(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	file := filepath.Join(t.TempDir(), "decisions.jsonl")
	p := rewritedtest.Start(t, "--decision-log-sample", "1", "--decision-log", file)
	client := rewritev1.NewRewriteServiceClient(dial(t, p.Addr))
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK", Command: new("DATA")}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RewriteResponse(testCtx(t), &rewritev1.RewriteResponseRequest{Status: 250, Response: "untraced"}); err != nil {
		t.Fatal(err)
	}
	var records []map[string]any
	eventually(t, "both decisions are recorded", func() bool {
		data, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		records = records[:0]
		for line := range strings.Lines(string(data)) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("decision log line %q: %v", line, err)
			}
			records = append(records, rec)
		}
		return len(records) == 2
	})
	byText := map[string]map[string]any{}
	for _, rec := range records {
		byText[rec["response"].(string)] = rec
	}
	if got := byText["OK"]["trace_id"]; got != traceID {
		t.Errorf("trace_id of the traced call = %v, want %s", got, traceID)
	}
	// A call without a traceparent starts a trace of its own.
	if got, _ := byText["untraced"]["trace_id"].(string); len(got) != len(traceID) || got == traceID {
		t.Errorf("trace_id of the call without a traceparent = %q, want a new trace's", got)
	}
}
