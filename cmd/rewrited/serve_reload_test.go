package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
)

// answering is a policy that rewrites every DATA reply to 250 text.
func answering(text string) string {
	return fmt.Sprintf("kumo.on('smtp_server_rewrite_response', function(status, response, command)\n  if command == 'DATA' then return 250, %q end\nend)\n", text)
}

func writeFile(t *testing.T, file, src string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes src next to file and renames it over file, as editors
// and configuration tools save.
func replaceFile(t *testing.T, file, src string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".tmp")
	writeFile(t, tmp, src)
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// decide asks policy name (empty: the default) about a 250 DATA reply.
func decide(ctx context.Context, conn *grpc.ClientConn, name string) (*rewritev1.RewriteResponseResponse, error) {
	cmd := "DATA"
	return rewritev1.NewRewriteServiceClient(conn).RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK", Command: &cmd, Policy: name})
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers reports whether policy name answers text.
func answers(ctx context.Context, conn *grpc.ClientConn, name, text string) func() bool {
	return func() bool {
		resp, err := decide(ctx, conn, name)
		return err == nil && resp.Response == text
	}
}

// logRecords returns the process's JSON log records with message msg.
func logRecords(p *rewritedtest.Proc, msg string) []map[string]any {
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.Logs()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			recs = append(recs, rec)
		}
	}
	return recs
}

// metricsURL returns the /metrics URL the process logged.
func metricsURL(t *testing.T, p *rewritedtest.Proc) string {
	t.Helper()
	recs := logRecords(p, "serving metrics")
	if len(recs) == 0 {
		t.Fatalf("no metrics address logged:\n%s", p.Logs())
	}
	return fmt.Sprintf("http://%s/metrics", recs[0]["addr"])
}

// scrape returns the metrics' text exposition.
func scrape(t *testing.T, url string) string {
	t.Helper()
	code, body := rewritedtest.HTTPGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d", url, code)
	}
	return body
}

// hasSample reports whether the exposition holds the sample line exactly
// ("name{labels} value", labels in the order Prometheus prints them).
func hasSample(exposition, sample string) bool {
	return strings.Contains("\n"+exposition, "\n"+sample+"\n")
}

// TestServeReloadUnderLoad rewrites the policy file 50 times, half in place
// and half by rename, while clients keep calling: no call may fail, every
// answer must come from one whole version, and the last version must win.
func TestServeReloadUnderLoad(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.lua")
	const versions = 50
	texts := map[string]string{} // version → the text it answers
	srcs := make([]string, versions+1)
	for i := range srcs {
		srcs[i] = answering(fmt.Sprintf("v%d", i))
		texts[policy.Version([]byte(srcs[i]))] = fmt.Sprintf("v%d", i)
	}
	writeFile(t, file, srcs[0])
	// A budget a loaded machine cannot exhaust: a timed-out evaluation
	// answers with the original reply, which this test would take for a
	// torn version.
	p := rewritedtest.Start(t, "--policy", file, "--eval-timeout", "5s")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)

	l := startLoad(t, func() (*rewritev1.RewriteResponseResponse, error) { return decide(ctx, conn, "") }, texts)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		health := healthpb.NewHealthClient(conn)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "rewrite.v1.RewriteService"})
			if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health during reloads: %v %v", resp, err)
				return
			}
		}
	})
	for i := 1; i <= versions; i++ {
		if i%2 == 0 {
			writeFile(t, file, srcs[i])
		} else {
			replaceFile(t, file, srcs[i])
		}
		pause := 30 * time.Millisecond
		if i%5 == 0 {
			pause = 400 * time.Millisecond // let a reload happen
		}
		time.Sleep(pause)
	}
	eventually(t, "the last version serves", answers(ctx, conn, "", fmt.Sprintf("v%d", versions)))
	close(stop)
	wg.Wait()
	calls, seen := l.finish()
	if len(seen) < 3 {
		t.Errorf("only %d versions answered: %v", len(seen), seen)
	}
	t.Logf("%d calls answered by %d versions during 50 rewrites", calls, len(seen))
	// The process logs through a pipe: its last lines may still be on the way.
	eventually(t, "the last reload is logged", func() bool {
		loaded := logRecords(p, "policy loaded")
		last := loaded[len(loaded)-1]
		return last["file"] == file && last["policy"] == "default" && texts[last["version"].(string)] == fmt.Sprintf("v%d", versions)
	})
}

// TestServeRefusesBrokenReload: a policy that fails to load leaves the old
// version serving and healthy, and is logged with file:line and counted.
func TestServeRefusesBrokenReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.lua")
	writeFile(t, file, answering("good"))
	good := policy.Version([]byte(answering("good")))
	p := rewritedtest.Start(t, "--policy", file, "--metrics-listen", "127.0.0.1:0")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	url := metricsURL(t, p)

	replaceFile(t, file, "kumo.on('smtp_server_rewrite_response', function()\n  return 250,\nend)\n")
	eventually(t, "the refusal is logged", func() bool { return len(logRecords(p, "policy refused: the previous version keeps serving")) > 0 })
	rec := logRecords(p, "policy refused: the previous version keeps serving")[0]
	if rec["policy"] != "default" || rec["file"] != file || !strings.HasPrefix(rec["error"].(string), file+":3: ") {
		t.Errorf("refusal logged as %v", rec)
	}
	resp, err := decide(ctx, conn, "")
	if err != nil || resp.Response != "good" || resp.PolicyVersion != good {
		t.Errorf("after the refusal: %v %v", resp, err)
	}
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "rewrite.v1.RewriteService"})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after the refusal: %v %v", hc, err)
	}
	body := scrape(t, url)
	for _, want := range []string{
		`rewrited_policy_reloads_total{policy="default",result="failure"} 1`,
		`rewrited_policy_reloads_total{policy="default",result="success"} 1`,
		`rewrited_policy_info{policy="default",shadow_version="",version="` + good + `"} 1`,
	} {
		if !hasSample(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A fixed file is taken, and the old version leaves rewrited_policy_info.
	replaceFile(t, file, answering("fixed"))
	eventually(t, "the fixed policy serves", answers(ctx, conn, "", "fixed"))
	body = scrape(t, url)
	fixed := policy.Version([]byte(answering("fixed")))
	if !hasSample(body, `rewrited_policy_info{policy="default",shadow_version="",version="`+fixed+`"} 1`) || strings.Contains(body, good) {
		t.Errorf("rewrited_policy_info after the fix:\n%s", grepLines(body, "rewrited_policy_info"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// TestServeSIGHUPReloads changes a policy where the watch cannot see it:
// --policy names a symlink, and the target, in another directory, is
// rewritten in place. SIGHUP reloads it.
func TestServeSIGHUPReloads(t *testing.T) {
	target := filepath.Join(t.TempDir(), "real.lua")
	link := filepath.Join(t.TempDir(), "policy.lua")
	writeFile(t, target, answering("v1"))
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	p := rewritedtest.Start(t, "--policy", link)
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	writeFile(t, target, answering("v2"))
	time.Sleep(500 * time.Millisecond)
	if resp, err := decide(ctx, conn, ""); err != nil || resp.Response != "v1" {
		t.Fatalf("before SIGHUP: %v %v (the watch saw the target: the test proves nothing)", resp, err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "v2 serves after SIGHUP", answers(ctx, conn, "", "v2"))
}

// TestServePolicyDirKubernetesSwap reproduces on disk how the kubelet
// updates a mounted ConfigMap: NAME.lua are symlinks to ..data/NAME.lua,
// ..data is a symlink to a timestamped directory, and an update renames a
// new ..data_tmp symlink over ..data. No NAME.lua is ever written.
func TestServePolicyDirKubernetesSwap(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dataDir := func(name string, files map[string]string) {
		must(os.Mkdir(filepath.Join(dir, name), 0o755))
		for f, src := range files {
			writeFile(t, filepath.Join(dir, name, f), src)
		}
	}
	dataDir("..2026_01_01_00_00_00.000000001", map[string]string{"default.lua": answering("v1"), "old.lua": answering("old")})
	must(os.Symlink("..2026_01_01_00_00_00.000000001", filepath.Join(dir, "..data")))
	for _, f := range []string{"default.lua", "old.lua"} {
		must(os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
	}
	p := rewritedtest.Start(t, "--policy-dir", dir)
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	if resp, err := decide(ctx, conn, "old"); err != nil || resp.Response != "old" {
		t.Fatalf("old before the swap: %v %v", resp, err)
	}
	if resp, err := decide(ctx, conn, ""); err != nil || resp.Response != "v1" {
		t.Fatalf("default before the swap: %v %v", resp, err)
	}

	dataDir("..2026_01_01_00_01_00.000000002", map[string]string{"default.lua": answering("v2"), "new.lua": answering("new")})
	must(os.Symlink("..2026_01_01_00_01_00.000000002", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.Symlink(filepath.Join("..data", "new.lua"), filepath.Join(dir, "new.lua")))
	must(os.Remove(filepath.Join(dir, "old.lua")))
	must(os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.000000001")))

	eventually(t, "default serves v2", answers(ctx, conn, "", "v2"))
	eventually(t, "new is served", answers(ctx, conn, "new", "new"))
	eventually(t, "old is gone", func() bool {
		_, err := decide(ctx, conn, "old")
		return status.Code(err) == codes.NotFound
	})
	v2 := policy.Version([]byte(answering("v2")))
	eventually(t, "the reload of default is logged", func() bool {
		for _, rec := range logRecords(p, "policy loaded") {
			if rec["policy"] == "default" && rec["version"] == v2 && rec["file"] == filepath.Join(dir, "default.lua") {
				return true
			}
		}
		return false
	})
}

// TestServeShadow covers --shadow and NAME.shadow.lua: the original reply
// comes back as OUTCOME_SHADOWED, and the would-be rewrite is logged and
// counted.
func TestServeShadow(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "default.lua"), answering("live"))
	writeFile(t, filepath.Join(dir, "trial.shadow.lua"), answering("trial"))
	tests := []struct {
		name     string
		args     []string
		policy   string
		want     rewritev1.Outcome
		proposed string
	}{
		{"live policy", nil, "", rewritev1.Outcome_OUTCOME_REWRITTEN, ""},
		{"NAME.shadow.lua", nil, "trial", rewritev1.Outcome_OUTCOME_SHADOWED, "trial"},
		{"--shadow", []string{"--shadow"}, "", rewritev1.Outcome_OUTCOME_SHADOWED, "live"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := rewritedtest.Start(t, append([]string{"--policy-dir", dir, "--metrics-listen", "127.0.0.1:0"}, tt.args...)...)
			conn := dial(t, p.Addr)
			resp, err := decide(testCtx(t), conn, tt.policy)
			if err != nil || resp.Outcome != tt.want {
				t.Fatalf("got %v %v, want %v", resp, err, tt.want)
			}
			if tt.want == rewritev1.Outcome_OUTCOME_SHADOWED {
				eventually(t, "the would-be rewrite is logged", func() bool { return len(logRecords(p, "shadow: would rewrite")) > 0 })
			}
			shadowLines := logRecords(p, "shadow: would rewrite")
			body := scrape(t, metricsURL(t, p))
			name := tt.policy
			if name == "" {
				name = "default"
			}
			counted := hasSample(body, `rewrited_decisions_total{outcome="shadowed",policy="`+name+`"} 1`)
			if tt.want != rewritev1.Outcome_OUTCOME_SHADOWED {
				if len(shadowLines) != 0 || counted {
					t.Errorf("a live decision was logged or counted as shadowed")
				}
				return
			}
			if resp.Response != "OK" || resp.Rewritten {
				t.Errorf("shadow mode changed the reply: %v", resp)
			}
			if !counted || !hasSample(body, `rewrited_policy_shadow{policy="`+name+`"} 1`) {
				t.Errorf("shadowed decision not counted:\n%s", grepLines(body, "shadow"))
			}
			proposed, _ := shadowLines[0]["proposed"].(map[string]any)
			if len(shadowLines) != 1 || proposed["response"] != tt.proposed || shadowLines[0]["policy"] != name || shadowLines[0]["command"] != "DATA" {
				t.Errorf("shadow log lines: %v", shadowLines)
			}
		})
	}
}
