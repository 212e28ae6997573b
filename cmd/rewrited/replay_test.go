package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/replay"
	"google.golang.org/protobuf/types/known/structpb"
)

var updateReplayGolden = flag.Bool("update-replay-golden", false, "rewrite testdata/replay/*.golden from the current output")

const (
	replayLive      = "testdata/replay/live.lua"
	replayCandidate = "testdata/replay/candidate.lua"
)

// record runs a real `rewrited serve` with the live policy, recording every
// decision to file with conn_meta as metaMode says, and sends it reqs.
func record(t *testing.T, file, metaMode string, reqs []*rewritev1.RewriteResponseRequest) {
	t.Helper()
	p := rewritedtest.Start(t, "--policy", replayLive, "--decision-log", file, "--decision-log-sample", "1", "--decision-log-meta", metaMode)
	client := rewritev1.NewRewriteServiceClient(dial(t, p.Addr))
	ctx := testCtx(t)
	for _, req := range reqs {
		if _, err := client.RewriteResponse(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
}

func connMeta(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recordedLogs records two decision logs: full.jsonl with the whole
// conn_meta, and keys.jsonl.gz, gzip'd, with its keys only.
func recordedLogs(t *testing.T) (dir, full, keys string) {
	t.Helper()
	dir = t.TempDir()
	full, keys = filepath.Join(dir, "full.jsonl"), filepath.Join(dir, "keys.jsonl.gz")
	data, rcptA, rcptB, mail, auth := "DATA", "RCPT TO:<a@example.com>", "RCPT TO:<b@example.com>", "MAIL FROM:<c@example.com>", "AUTH PLAIN AGFsaWNlAHNlY3JldA=="
	record(t, full, "full", []*rewritev1.RewriteResponseRequest{
		{Status: 250, Response: "OK", Command: &data, ConnMeta: connMeta(t, map[string]any{"queue_id": "q1"})},                      // same
		{Status: 250, Response: "OK", Command: &data, ConnMeta: connMeta(t, map[string]any{"queue_id": "q2", "tenant": "blocked"})}, // protected
		{Status: 550, Response: "no such user", Command: &rcptA},                                                                    // changed
		{Status: 550, Response: "no such user", Command: &rcptB},                                                                    // changed
		{Status: 550, Response: "sender refused", Command: &mail},                                                                   // changed
		{Status: 451, Response: "4.7.1 try later", Command: &rcptA},                                                                 // broken: policy error
		{Status: 421, Response: "closing"},                                                                                          // broken: invalid result
		{Status: 220, Response: "mx.example.com ready"},                                                                             // same
		{Status: 535, Response: "5.7.8 authentication failed", Command: &auth},                                                      // skipped: command redacted
	})
	plain := filepath.Join(dir, "keys.jsonl")
	record(t, plain, "keys", []*rewritev1.RewriteResponseRequest{
		{Status: 250, Response: "OK", Command: &data, ConnMeta: connMeta(t, map[string]any{"queue_id": "q3"})}, // skipped: keys only
		{Status: 550, Response: "no such user", Command: &rcptA},                                               // changed: no conn_meta, replayable
	})
	raw, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, full, keys
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", "replay", name)
	if *updateReplayGolden {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n%s\nwant:\n%s", file, got, want)
	}
}

// TestReplayRecordedLog replays the decisions a real serve run recorded:
// exact counts, grouping and examples against a golden file, JSON output,
// gzip'd files and standard input, and the exit codes.
func TestReplayRecordedLog(t *testing.T) {
	dir, full, keys := recordedLogs(t)
	code, stdout, stderr := runArgs(t, "replay", "--policy", replayCandidate, "--eval-timeout", evalSlack, full, keys)
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	checkGolden(t, "candidate.golden", strings.ReplaceAll(stdout, dir, "DIR"))
	if strings.Contains(stdout, "AGFsaWNl") {
		t.Errorf("the report shows the AUTH credential")
	}

	code, stdout, _ = runArgs(t, "replay", "--json", "--policy", replayCandidate, "--eval-timeout", evalSlack, full, keys)
	var rep replay.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 1 {
		t.Fatalf("--json: exit %d, %v:\n%s", code, err, stdout)
	}
	if rep.Records != 11 || rep.Replayed != 9 || rep.Same != 2 || rep.Changed != 4 || rep.Protected != 1 || rep.Broken != 2 ||
		rep.BrokenBy["policy_error"] != 1 || rep.BrokenBy["invalid_result"] != 1 || rep.SkippedTotal != 2 ||
		rep.Skipped["command (redacted)"] != 1 || rep.Skipped["conn_meta (keys only)"] != 1 {
		t.Errorf("--json report: %s", stdout)
	}
	if len(rep.Differences) == 0 || rep.Differences[0].StatusClass != "5xx" || rep.Differences[0].Verb != "RCPT" || rep.Differences[0].Count != 3 || len(rep.Differences) != 5 {
		t.Errorf("first group: %+v", rep.Differences)
	}

	// The live policy itself changes nothing.
	code, stdout, stderr = runArgs(t, "replay", "--policy", replayLive, "--eval-timeout", evalSlack, full, keys)
	if code != 0 {
		t.Errorf("replaying the live policy: exit %d, want 0\n%s%s", code, stdout, stderr)
	}
	checkGolden(t, "live.golden", strings.ReplaceAll(stdout, dir, "DIR"))

	// Standard input, gzip'd, through the binary.
	f, err := os.Open(keys)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(rewritedtest.Binary(t), "replay", "--policy", replayCandidate, "--eval-timeout", evalSlack)
	cmd.Stdin = f
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("from stdin: %v", err)
	}
	if !strings.Contains(string(out), "2 decision records: 1 replayed, 1 skipped\n") || !strings.Contains(string(out), "stdin:2: 550 ") {
		t.Errorf("from stdin:\n%s", out)
	}
}

// TestReplayBadInput: what is not a decision log stops the replay with exit
// 2 and names the file and line.
func TestReplayBadInput(t *testing.T) {
	dir := t.TempDir()
	good := `{"schema":1,"policy":"default","status":250,"response":"OK","outcome":"unchanged","reply":{"status":250,"response":"OK"}}`
	tests := []struct {
		name, content, want string
	}{
		{"not JSON", good + "\nhello\n", "bad.jsonl:2: not a JSON decision record"},
		{"future schema", `{"schema":99,"status":250}` + "\n", "bad.jsonl:1: schema 99 is not a decision-log schema this version reads"},
		{"no schema", `{"status":250}` + "\n", "bad.jsonl:1: schema 0"},
		{"truncated gzip", "\x1f\x8b\x08\x00", "bad.jsonl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, "bad.jsonl")
			writeFile(t, file, tt.content)
			code, stdout, stderr := runArgs(t, "replay", "--policy", replayCandidate, file)
			if code != 2 || !strings.Contains(stderr, tt.want) || stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want 2 and %q", code, stderr, stdout, tt.want)
			}
		})
	}
	// Records of two policies: the candidate replaces one of them.
	two := filepath.Join(dir, "two.jsonl")
	writeFile(t, two, good+"\n"+strings.Replace(good, `"default"`, `"tenant"`, 1)+"\n")
	if code, _, stderr := runArgs(t, "replay", "--policy", replayCandidate, two); code != 2 || !strings.Contains(stderr, "several policies (default, tenant): pick the one the candidate replaces with --name") {
		t.Errorf("two policies: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runArgs(t, "replay", "--policy", replayCandidate, "--name", "tenant", two)
	if code != 0 || !strings.Contains(stdout, "in place of policy tenant\n1 decision records: 1 replayed, 0 skipped\n") || !strings.Contains(stdout, "1 records of other policies ignored\n") {
		t.Errorf("--name tenant: exit %d\n%s%s", code, stdout, stderr)
	}

	for _, args := range [][]string{
		{"replay", filepath.Join(dir, "bad.jsonl")},
		{"replay", "--policy", replayCandidate, filepath.Join(dir, "missing.jsonl")},
		{"replay", "--policy", "testdata/two-handlers.lua", filepath.Join(dir, "bad.jsonl")},
	} {
		if code, _, stderr := runArgs(t, args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
}

// TestReplayProcessLog replays the "decision" lines of a real serve run's
// JSON process log, skipping its other lines.
func TestReplayProcessLog(t *testing.T) {
	p := rewritedtest.Start(t, "--policy", replayLive, "--decision-log-sample", "1", "--decision-log-meta", "full")
	client := rewritev1.NewRewriteServiceClient(dial(t, p.Addr))
	ctx := testCtx(t)
	data, rcpt := "DATA", "RCPT TO:<a@example.com>"
	for _, req := range []*rewritev1.RewriteResponseRequest{
		{Status: 250, Response: "OK", Command: &data, ConnMeta: connMeta(t, map[string]any{"queue_id": "q1"})},
		{Status: 550, Response: "no such user", Command: &rcpt},
	} {
		if _, err := client.RewriteResponse(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both decisions are logged", func() bool { return len(logRecords(p, "decision")) == 2 })
	file := filepath.Join(t.TempDir(), "rewrited.log")
	writeFile(t, file, p.Logs())
	code, stdout, stderr := runArgs(t, "replay", "--json", "--policy", replayCandidate, "--eval-timeout", evalSlack, file)
	var rep replay.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 1 {
		t.Fatalf("exit %d, %v:\n%s%s", code, err, stdout, stderr)
	}
	if rep.Records != 2 || rep.Same != 1 || rep.Changed != 1 || rep.OtherLines < 2 {
		t.Errorf("report: %s", stdout)
	}
}

// TestServeDecisionLogRotates: past --decision-log-max-mb the file is
// rotated, and replay reads the rotated file and the current one alike.
func TestServeDecisionLogRotates(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "decisions.jsonl")
	p := rewritedtest.Start(t, "--policy", replayLive, "--decision-log", file, "--decision-log-sample", "1", "--decision-log-max-mb", "1")
	client := rewritev1.NewRewriteServiceClient(dial(t, p.Addr))
	ctx := testCtx(t)
	text := strings.Repeat(strings.Repeat("x", 500)+"\n", 200) // 100 KB in lines of 500
	const calls = 12                                           // records of 200 KB: the text and the reply sent
	for range calls {
		if _, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 451, Response: text}); err != nil {
			t.Fatal(err)
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "decisions*.jsonl"))
	if err != nil || len(files) < 2 || !slices.Contains(files, file) {
		t.Fatalf("files %v, %v: want the current file and rotated ones", files, err)
	}
	code, stdout, stderr := runArgs(t, append([]string{"replay", "--policy", replayLive, "--eval-timeout", evalSlack}, files...)...)
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("%d decision records: %d replayed, 0 skipped\n", calls, calls)) {
		t.Errorf("replaying %v: exit %d\n%s%s", files, code, stdout, stderr)
	}
}
