package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

func TestParseVmRSS(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int64
		wantErr      bool
	}{
		{"present", "Name:\trewrited\nVmPeak:\t  900 kB\nVmRSS:\t   21504 kB\nThreads:\t7\n", 21504, false},
		{"absent", "Name:\trewrited\nThreads:\t7\n", 0, true},
		{"other unit", "VmRSS:\t 21 MB\n", 0, true},
		{"not a number", "VmRSS:\t lots kB\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmRSS(strings.NewReader(tc.status))
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	stat := "4242 (rewrited (x) y) S 1 4242 4242 0 -1 4194560 2107 0 0 0 150 25 0 0 20 0 7 0 123 0 0\n"
	if got, err := parseStatCPU(stat); err != nil || got != 1750*time.Millisecond {
		t.Fatalf("got %v, %v; want 1.75s", got, err)
	}
	for _, bad := range []string{"", "4242 (rewrited) S 1 2", "4242 (rewrited) S 1 4242 4242 0 -1 4194560 2107 0 0 0 x 25 0"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestOthersCPU(t *testing.T) {
	before := cpuSnapshot{machine: 10 * time.Second, server: 4 * time.Second, self: 2 * time.Second}
	after := cpuSnapshot{machine: 14 * time.Second, server: 5500 * time.Millisecond, self: 3 * time.Second}
	if got := othersCPU(before, after, 2*time.Second); got != 0.75 { // 4s busy - 1.5s - 1s over 2s
		t.Errorf("othersCPU = %v, want 0.75", got)
	}
	// Tick rounding can make the processes' share exceed the machine's.
	after.machine = 12 * time.Second
	if got := othersCPU(before, after, 2*time.Second); got != 0 {
		t.Errorf("othersCPU = %v, want 0", got)
	}
}

func TestQuantileAndSpread(t *testing.T) {
	var r run
	for i := 1; i <= 1000; i++ {
		r.lat = append(r.lat, time.Duration(i)*time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Microsecond, 0.99: 990 * time.Microsecond, 0.999: 999 * time.Microsecond, 1: 1000 * time.Microsecond} {
		if got := r.quantile(q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	id := func(x float64) float64 { return x }
	if got := spread([]float64{3, 1, 2, 10}, id, "%.1f"); got != "2.5 (1.0–10.0)" {
		t.Errorf("spread = %q", got)
	}
	if got := spread([]float64{7}, id, "%.0f"); got != "7" {
		t.Errorf("spread of one = %q", got)
	}
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-in-flight", "2, 16", "-mode", "memory", "-server-env", "GOGC=200, GOMEMLIMIT=64MiB"})
	if err != nil || len(cfg.inFlight) != 2 || cfg.inFlight[1] != 16 || cfg.out != filepath.Join("bench", "results", "memory.md") || len(cfg.serverEnv) != 2 || cfg.serverEnv[1] != "GOMEMLIMIT=64MiB" {
		t.Fatalf("got %+v, %v", cfg, err)
	}
	if cfg, err := parseFlags([]string{"-mode", "floor"}); err != nil || !slices.Equal(cfg.inFlight, []int{8, 64}) || cfg.out != filepath.Join("bench", "results", "floor.md") {
		t.Fatalf("floor defaults: got %+v, %v", cfg, err)
	}
	if cfg, err := parseFlags([]string{"-mode", "floor", "-in-flight", "1"}); err != nil || !slices.Equal(cfg.inFlight, []int{1}) {
		t.Fatalf("floor with -in-flight 1: got %+v, %v", cfg, err)
	}
	for _, args := range [][]string{{"-in-flight", "0"}, {"-reps", "0"}, {"-mode", "fast"}, {"-duration", "-1s"}, {"-server-env", "GOGC"}, {"extra"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
}

// TestAnswerComparesBytes checks that only a reply equal to the reference
// answer is taken as it, whether it arrives in one buffer or several.
func TestAnswerComparesBytes(t *testing.T) {
	ref := []byte("\x08\xfa\x01\x12\x05hello")
	codec := preEncoded{}
	for _, tc := range []struct {
		name string
		data mem.BufferSlice
		ref  []byte
		same bool
	}{
		{"equal", mem.BufferSlice{mem.SliceBuffer(ref)}, ref, true},
		{"equal, split", mem.BufferSlice{mem.SliceBuffer(ref[:3]), mem.SliceBuffer(ref[3:])}, ref, true},
		{"other", mem.BufferSlice{mem.SliceBuffer(ref[:len(ref)-1])}, ref, false},
		{"other, split", mem.BufferSlice{mem.SliceBuffer(ref[:3]), mem.SliceBuffer([]byte("\x00\x12"))}, ref, false},
		{"no reference yet", mem.BufferSlice{mem.SliceBuffer(ref)}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &answer{ref: tc.ref}
			if err := codec.Unmarshal(tc.data, a); err != nil {
				t.Fatal(err)
			}
			if a.same != tc.same {
				t.Errorf("same = %v, want %v", a.same, tc.same)
			}
			if !a.same && !bytes.Equal(a.raw, tc.data.Materialize()) {
				t.Errorf("raw = %q, want the reply's bytes %q", a.raw, tc.data.Materialize())
			}
		})
	}
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(ref)}, new(int)); err == nil {
		t.Error("decoded into an *int")
	}
}

// TestModes runs each mode briefly against a real server and checks the
// report it writes.
func TestModes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and builds a profiling binary")
	}
	bin := rewritedtest.Binary(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		mode string
		args []string
		want []string
	}{
		{"compare", []string{"-reps", "2", "-duration", "200ms", "-warmup", "100ms", "-in-flight", "1,8"},
			[]string{"| 8 | RewriteResponse |", "| 8 | Health.Check |", "| 8 | **RR / HC** |", "Load average after"}},
		{"floor", []string{"-reps", "2", "-duration", "200ms", "-warmup", "100ms"},
			[]string{"| 8 | shipped |", "| 8 | floor |", "| 64 | **shipped / floor** |", "Throughput shipped/floor at 64 in flight ≥ 0.97", "Server CPU per call shipped/floor at 8 in flight ≤ 1.04"}},
		{"memory", []string{"-mem-duration", "2s", "-warmup", "100ms", "-mem-in-flight", "8"},
			[]string{"| idle | start | end | max |", "Every 5 s (MiB): 0s "}},
		{"profile", []string{"-duration", "1s", "-warmup", "100ms", "-mem-in-flight", "8", "-pprof", filepath.Join(dir, "cpu.prof")},
			[]string{"CPU profile of `rewrited serve`", "Type: cpu", "flat%"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out := filepath.Join(dir, tc.mode+".md")
			cfg, err := parseFlags(append([]string{"-mode", tc.mode, "-rewrited", bin, "-out", out}, tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			var stdout strings.Builder
			if err := benchmark(cfg, &stdout); err != nil {
				t.Fatal(err)
			}
			written, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if string(written) != stdout.String() {
				t.Errorf("%s differs from stdout", out)
			}
			for _, want := range tc.want {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, stdout.String())
				}
			}
		})
	}
}

// TestFloorBuild checks that the floor build answers without checking the
// request or evaluating its policy, and that the build as shipped does both:
// both serve a policy that rewrites every reply its own way.
func TestFloorBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts two servers")
	}
	dir := t.TempDir()
	pol := filepath.Join(dir, "other.lua")
	src := "kumo.on('smtp_server_rewrite_response', function(status, response)\n  return 250, 'other ' .. response\nend)\n"
	if err := os.WriteFile(pol, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	command := "DATA"
	ask := func(t *testing.T, bin string, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		t.Helper()
		srv, err := startServer(bin, 0, nil, []string{"--policy", pol}, "")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.stop()
		conn, err := dial(srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return rewritev1.NewRewriteServiceClient(conn).RewriteResponse(ctx, req)
	}
	valid := &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK id=1", Command: &command}
	invalid := &rewritev1.RewriteResponseRequest{Status: 999, Response: "OK id=1", Command: &command}

	floorBin, err := buildServer(dir, floor)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("floor", func(t *testing.T) {
		for _, req := range []*rewritev1.RewriteResponseRequest{valid, invalid} {
			resp, err := ask(t, floorBin, req)
			if err != nil {
				t.Fatalf("status %d: %v", req.Status, err)
			}
			if resp.GetStatus() != req.Status || resp.GetResponse() != "super fantastic!\nOK id=1" || !resp.GetRewritten() ||
				resp.GetOutcome() != rewritev1.Outcome_OUTCOME_REWRITTEN || len(resp.GetPolicyVersion()) != 12 {
				t.Errorf("status %d: got %v, want the fixed rewrite", req.Status, resp)
			}
		}
	})
	t.Run("shipped", func(t *testing.T) {
		bin := rewritedtest.Binary(t)
		resp, err := ask(t, bin, valid)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != 250 || resp.GetResponse() != "other OK id=1" || resp.GetOutcome() != rewritev1.Outcome_OUTCOME_REWRITTEN {
			t.Errorf("got %v, want the policy's rewrite", resp)
		}
		if _, err := ask(t, bin, invalid); status.Code(err) != codes.InvalidArgument {
			t.Errorf("status 999: got %v, want InvalidArgument", err)
		}
	})
}
