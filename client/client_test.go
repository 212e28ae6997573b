package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/smtpreply"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	budget = 100 * time.Millisecond
	// slack is how late a call may return before it counts as ignoring its
	// deadline: a busy shared machine can deschedule a caller that honours
	// it for a second or more, while one that ignores it waits for ever on
	// a peer that never answers.
	slack = 2 * time.Second
	// answerBudget is the budget of calls whose answer, not their budget,
	// is under test: no scheduling delay reaches it.
	answerBudget = 10 * time.Second
)

var dataReply = Reply{Status: 250, Text: "OK ids=0123abcd", Command: "DATA"}

func TestReplyWire(t *testing.T) {
	for _, tc := range []struct {
		r    Reply
		want string
	}{
		{Reply{Status: 250, Text: "OK"}, "250 OK\r\n"},
		{Reply{Status: 250, Text: "super fantastic!\nOK"}, "250-super fantastic!\r\n250 OK\r\n"},
		{Reply{Status: 550, Text: "a\r\nb\n"}, "550-a\r\n550 b\r\n"},
		{Reply{Status: 421, Text: ""}, "421 \r\n"},
	} {
		if got := tc.r.Wire(); got != tc.want {
			t.Errorf("%+v.Wire() = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestRewriteAnswers(t *testing.T) {
	long := strings.Repeat("x", smtpreply.MaxTextLine+1)
	for _, tc := range []struct {
		name          string
		h             handler
		in            Reply
		want          Reply
		wantRewritten bool
		wantErr       error
		wantCode      codes.Code
		wantClose     bool
		wantMeta      map[string]any
		// timeout is the client's budget: answerBudget unless the case is
		// about the budget running out.
		timeout time.Duration
	}{
		{name: "valid rewrite", h: superFantastic, in: dataReply,
			want: Reply{250, "super fantastic!\nOK ids=0123abcd", "DATA"}, wantRewritten: true},
		{name: "unchanged", h: superFantastic, in: Reply{Status: 550, Text: "5.1.1 no such user", Command: "RCPT TO:<x@y>"},
			want: Reply{550, "5.1.1 no such user", "RCPT TO:<x@y>"}},
		{name: "normalised original is no rewrite", h: unchanged, in: Reply{Status: 250, Text: "a\r\nb\n"},
			want: Reply{Status: 250, Text: "a\r\nb\n"}},
		{name: "empty original echoed", h: unchanged, in: Reply{Status: 250},
			want: Reply{Status: 250}},
		{name: "421 closes", h: answers(421, "4.7.0 go away"), in: dataReply,
			want: Reply{421, "4.7.0 go away", "DATA"}, wantRewritten: true, wantClose: true},
		{name: "original 421 closes", h: unchanged, in: Reply{Status: 421, Text: "shutting down"},
			want: Reply{Status: 421, Text: "shutting down"}, wantClose: true},
		{name: "CRLF is a line separator", h: answers(250, "ok\r\n250 injected"), in: dataReply,
			want: Reply{250, "ok\n250 injected", "DATA"}, wantRewritten: true},
		{name: "status 999", h: answers(999, "OK"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "status 0", h: answers(0, "OK"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "status 260", h: answers(260, "OK"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "status 600", h: answers(600, "OK"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "bare CR", h: answers(250, "ok\r250 injected"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "NUL", h: answers(250, "ok\x00"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "control char", h: answers(250, "ok\x1b[31m"), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "empty text", h: answers(250, ""), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "overlong line", h: answers(250, "ok\n"+long), in: dataReply, want: dataReply, wantErr: ErrInvalidAnswer},
		{name: "not found", h: fails(codes.NotFound), in: dataReply, want: dataReply, wantErr: ErrRPC, wantCode: codes.NotFound},
		{name: "unavailable", h: fails(codes.Unavailable), in: dataReply, want: dataReply, wantErr: ErrRPC, wantCode: codes.Unavailable},
		{name: "invalid argument", h: fails(codes.InvalidArgument), in: dataReply, want: dataReply, wantErr: ErrRPC, wantCode: codes.InvalidArgument},
		{name: "internal", h: fails(codes.Internal), in: dataReply, want: dataReply, wantErr: ErrRPC, wantCode: codes.Internal},
		{name: "sleeps past the deadline", h: sleeps(time.Hour), timeout: budget, in: dataReply, want: dataReply,
			wantErr: ErrTimeout, wantCode: codes.DeadlineExceeded},
		{name: "policy error keeps original and meta",
			h:  withOutcome(rewritev1.Outcome_OUTCOME_POLICY_ERROR, "boom", map[string]any{"x_seen": true}),
			in: dataReply, want: dataReply, wantErr: ErrPolicy, wantMeta: map[string]any{"x_seen": true}},
		{name: "policy timeout", h: withOutcome(rewritev1.Outcome_OUTCOME_TIMEOUT, "too slow", nil),
			in: dataReply, want: dataReply, wantErr: ErrPolicy},
		{name: "shadowed is not an error", h: withOutcome(rewritev1.Outcome_OUTCOME_SHADOWED, "", nil),
			in: dataReply, want: dataReply},
		{name: "meta updates", h: withOutcome(rewritev1.Outcome_OUTCOME_UNCHANGED, "", map[string]any{"x_n": 2.0, "x_s": "v"}),
			in: dataReply, want: dataReply, wantMeta: map[string]any{"x_n": 2.0, "x_s": "v"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFake(t, tc.h)
			timeout := cmp.Or(tc.timeout, answerBudget)
			c := newClient(t, srv.addr, WithTimeout(timeout))
			start := time.Now()
			res := c.Rewrite(context.Background(), tc.in, nil)
			if el := time.Since(start); el > timeout+slack {
				t.Errorf("took %v, budget %v", el, timeout)
			}
			if res.Reply != tc.want {
				t.Errorf("reply = %+v, want %+v", res.Reply, tc.want)
			}
			if res.Rewritten != tc.wantRewritten {
				t.Errorf("Rewritten = %v, want %v", res.Rewritten, tc.wantRewritten)
			}
			if res.CloseConnection != tc.wantClose {
				t.Errorf("CloseConnection = %v, want %v", res.CloseConnection, tc.wantClose)
			}
			switch {
			case tc.wantErr == nil && res.Err != nil:
				t.Errorf("Err = %v, want nil", res.Err)
			case tc.wantErr != nil && !errors.Is(res.Err, tc.wantErr):
				t.Errorf("Err = %v, want %v", res.Err, tc.wantErr)
			}
			if tc.wantCode != codes.OK && status.Code(res.Err) != tc.wantCode {
				t.Errorf("status.Code(Err) = %v, want %v", status.Code(res.Err), tc.wantCode)
			}
			if fmt.Sprint(res.MetaUpdates) != fmt.Sprint(tc.wantMeta) {
				t.Errorf("MetaUpdates = %v, want %v", res.MetaUpdates, tc.wantMeta)
			}
			if res.Err == nil && res.PolicyVersion != "v1" {
				t.Errorf("PolicyVersion = %q", res.PolicyVersion)
			}
		})
	}
}

func TestRewriteRequest(t *testing.T) {
	srv := startFake(t, unchanged)
	for _, tc := range []struct {
		name        string
		policy      string
		in          Reply
		meta        map[string]any
		wantCommand *string
	}{
		{name: "no command is absent", in: Reply{Status: 220, Text: "mx ESMTP"}},
		{name: "DATA", in: dataReply, wantCommand: ptr("DATA")},
		{name: "raw command line and meta", policy: "inbound",
			in:          Reply{Status: 550, Text: "no", Command: "rcpt to:<x@y>"},
			meta:        map[string]any{"received_from": "192.0.2.1:1234", "x_n": 3, "tls_peer_subject_name": []string{"a", "b"}, "x_list": []any{1, "two"}},
			wantCommand: ptr("rcpt to:<x@y>")},
		// A client's garbage must not make the request unsendable, which
		// would count against the fleet in the breaker.
		{name: "command with invalid UTF-8", in: Reply{Status: 500, Text: "5.5.2 syntax error", Command: "MAIL FROM:<\xff@example.com>"},
			wantCommand: ptr("MAIL FROM:<\uFFFD@example.com>")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, srv.addr, WithPolicy(tc.policy))
			if res := c.Rewrite(context.Background(), tc.in, tc.meta); res.Err != nil {
				t.Fatal(res.Err)
			}
			req := srv.lastRequest()
			if int(req.GetStatus()) != tc.in.Status || req.GetResponse() != tc.in.Text || req.GetPolicy() != tc.policy {
				t.Errorf("request = %v", req)
			}
			if (req.Command == nil) != (tc.wantCommand == nil) || (req.Command != nil && *req.Command != *tc.wantCommand) {
				t.Errorf("command = %v, want %v", req.Command, tc.wantCommand)
			}
			got := req.GetConnMeta().AsMap()
			if len(got) != len(tc.meta) {
				t.Errorf("conn_meta = %v, want %v", got, tc.meta)
			}
			for k, v := range tc.meta {
				if fmt.Sprint(got[k]) != fmt.Sprint(v) {
					t.Errorf("conn_meta[%s] = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestInvalidRequestNotSent(t *testing.T) {
	srv := startFake(t, superFantastic)
	c := newClient(t, srv.addr)
	for _, tc := range []struct {
		name string
		in   Reply
		meta map[string]any
	}{
		{name: "status 999", in: Reply{Status: 999, Text: "OK", Command: "DATA"}},
		{name: "status 0", in: Reply{Text: "OK"}},
		{name: "bare CR in text", in: Reply{Status: 550, Text: "no\r550 injected"}},
		{name: "NUL in text", in: Reply{Status: 550, Text: "no\x00"}},
		{name: "overlong text line", in: Reply{Status: 550, Text: strings.Repeat("x", smtpreply.MaxTextLine+1)}},
		{name: "meta value without protobuf form", in: dataReply, meta: map[string]any{"ch": make(chan int)}},
		{name: "meta struct value", in: dataReply, meta: map[string]any{"t": time.Now()}},
		{name: "meta key not UTF-8", in: dataReply, meta: map[string]any{"\xff": 1}},
		{name: "meta nested bad value", in: dataReply, meta: map[string]any{"m": map[string]any{"f": func() {}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.Rewrite(context.Background(), tc.in, tc.meta)
			if !errors.Is(res.Err, ErrInvalidRequest) || res.Reply != tc.in || res.Rewritten {
				t.Errorf("res = %+v", res)
			}
		})
	}
	if n := srv.calls.Load(); n != 0 {
		t.Errorf("server saw %d calls, want 0", n)
	}
}

func TestUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		target  string
		wantErr error
		timeout time.Duration
	}{
		{name: "refused port", target: refusedAddr(t), wantErr: ErrRPC},
		{name: "listener that never answers", target: rewritedtest.SilentListener(t), wantErr: ErrTimeout},
		// The resolver's failure ends the call; on a busy machine it may come
		// after 100ms, so this case has answerBudget.
		{name: "unresolvable name", target: "dns:///rewrited.invalid:7070", wantErr: ErrRPC, timeout: answerBudget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeout := cmp.Or(tc.timeout, budget)
			c := newClient(t, tc.target, WithTimeout(timeout))
			for i := 0; i < 3; i++ {
				start := time.Now()
				res := c.Rewrite(context.Background(), dataReply, map[string]any{"hostname": "mx"})
				if el := time.Since(start); el > timeout+slack {
					t.Errorf("call %d took %v, budget %v", i, el, timeout)
				}
				if res.Reply != dataReply || res.Rewritten || !errors.Is(res.Err, tc.wantErr) {
					t.Errorf("call %d: res = %+v, want original with %v", i, res, tc.wantErr)
				}
			}
		})
	}
}

func TestNewDoesNoIO(t *testing.T) {
	start := time.Now()
	c, err := New(rewritedtest.SilentListener(t), WithTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if el := time.Since(start); el > 50*time.Millisecond {
		t.Errorf("New took %v", el)
	}
}

func TestNewErrors(t *testing.T) {
	for name, opts := range map[string][]Option{
		"zero timeout":            {WithTimeout(0)},
		"negative breaker":        {WithBreaker(-1, time.Second)},
		"breaker without period":  {WithBreaker(3, 0)},
		"bearer over plaintext":   {WithBearerToken("secret")},
		"empty address in a list": nil,
	} {
		t.Run(name, func(t *testing.T) {
			target := "127.0.0.1:1"
			if opts == nil {
				target = "127.0.0.1:1,,127.0.0.1:2"
			}
			if c, err := New(target, opts...); err == nil {
				c.Close()
				t.Error("New succeeded")
			}
		})
	}
}

func TestContext(t *testing.T) {
	srv := startFake(t, sleeps(time.Hour))
	// Far beyond 50ms+slack, so a call that waited for it did not honour
	// the caller's context.
	long := 30 * time.Second
	t.Run("cancelled before the call", func(t *testing.T) {
		c := newClient(t, srv.addr, WithTimeout(long))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		before := srv.calls.Load()
		res := c.Rewrite(ctx, dataReply, nil)
		if !errors.Is(res.Err, ErrCallerDone) || !errors.Is(res.Err, context.Canceled) || res.Reply != dataReply {
			t.Errorf("res = %+v", res)
		}
		if srv.calls.Load() != before {
			t.Error("a cancelled call reached the server")
		}
	})
	t.Run("cancelled during the call", func(t *testing.T) {
		c := newClient(t, srv.addr, WithTimeout(long), WithBreaker(1, time.Hour))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		res := c.Rewrite(ctx, dataReply, nil)
		if el := time.Since(start); el > 50*time.Millisecond+slack {
			t.Errorf("took %v after a cancel at 50ms", el)
		}
		if !errors.Is(res.Err, context.Canceled) || res.Reply != dataReply {
			t.Errorf("res = %+v", res)
		}
		// The caller giving up says nothing about rewrited: the breaker stays closed.
		if c.breaker.State().String() != "closed" {
			t.Errorf("breaker %v after a caller cancel", c.breaker.State())
		}
	})
	t.Run("shorter caller deadline", func(t *testing.T) {
		c := newClient(t, srv.addr, WithTimeout(long))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		res := c.Rewrite(ctx, dataReply, nil)
		if el := time.Since(start); el > 50*time.Millisecond+slack {
			t.Errorf("took %v with a 50ms caller deadline", el)
		}
		if !errors.Is(res.Err, ErrTimeout) || res.Reply != dataReply {
			t.Errorf("res = %+v", res)
		}
	})
}

func TestBreaker(t *testing.T) {
	const threshold, openFor = 3, 300 * time.Millisecond
	t.Run("opens on unavailable and recovers through a probe", func(t *testing.T) {
		srv := startFake(t, fails(codes.Unavailable))
		c := newClient(t, srv.addr, WithBreaker(threshold, openFor))
		for i := 0; i < threshold; i++ {
			if res := c.Rewrite(context.Background(), dataReply, nil); !errors.Is(res.Err, ErrRPC) {
				t.Fatalf("call %d: %v", i, res.Err)
			}
		}
		assertOpen(t, c, srv)

		srv.setHandler(superFantastic)
		time.Sleep(openFor + 50*time.Millisecond)
		if res := c.Rewrite(context.Background(), dataReply, nil); !res.Rewritten || res.Err != nil {
			t.Fatalf("probe: %+v", res)
		}
		for i := 0; i < 5; i++ {
			if res := c.Rewrite(context.Background(), dataReply, nil); !res.Rewritten {
				t.Fatalf("after recovery: %+v", res)
			}
		}
		if n := srv.calls.Load(); n != threshold+6 {
			t.Errorf("server saw %d calls, want %d", n, threshold+6)
		}
	})
	t.Run("a failed probe reopens", func(t *testing.T) {
		srv := startFake(t, fails(codes.ResourceExhausted))
		c := newClient(t, srv.addr, WithBreaker(threshold, openFor))
		for i := 0; i < threshold; i++ {
			c.Rewrite(context.Background(), dataReply, nil)
		}
		assertOpen(t, c, srv)
		time.Sleep(openFor + 50*time.Millisecond)
		if res := c.Rewrite(context.Background(), dataReply, nil); !errors.Is(res.Err, ErrRPC) {
			t.Fatalf("probe: %v", res.Err)
		}
		assertOpen(t, c, srv)
	})
	t.Run("opens on timeouts", func(t *testing.T) {
		c := newClient(t, rewritedtest.SilentListener(t), WithTimeout(budget), WithBreaker(2, time.Hour))
		for i := 0; i < 2; i++ {
			if res := c.Rewrite(context.Background(), dataReply, nil); !errors.Is(res.Err, ErrTimeout) {
				t.Fatalf("call %d: %v", i, res.Err)
			}
		}
		start := time.Now()
		res := c.Rewrite(context.Background(), dataReply, nil)
		if !errors.Is(res.Err, ErrBreakerOpen) || res.Reply != dataReply {
			t.Errorf("res = %+v", res)
		}
		if el := time.Since(start); el > 20*time.Millisecond {
			t.Errorf("open breaker took %v", el)
		}
	})
	t.Run("caller and config errors do not trip it", func(t *testing.T) {
		for _, code := range []codes.Code{codes.NotFound, codes.InvalidArgument} {
			srv := startFake(t, fails(code))
			c := newClient(t, srv.addr, WithBreaker(2, time.Hour))
			for i := 0; i < 10; i++ {
				if res := c.Rewrite(context.Background(), dataReply, nil); errors.Is(res.Err, ErrBreakerOpen) {
					t.Fatalf("%v: breaker opened on call %d", code, i)
				}
			}
			if n := srv.calls.Load(); n != 10 {
				t.Errorf("%v: server saw %d calls, want 10", code, n)
			}
		}
	})
	t.Run("disabled", func(t *testing.T) {
		srv := startFake(t, fails(codes.Unavailable))
		c := newClient(t, srv.addr, WithBreaker(0, 0))
		for i := 0; i < 10; i++ {
			c.Rewrite(context.Background(), dataReply, nil)
		}
		if n := srv.calls.Load(); n != 10 {
			t.Errorf("server saw %d calls, want 10", n)
		}
	})
}

// assertOpen checks that calls return at once with ErrBreakerOpen and never reach srv.
func assertOpen(t *testing.T, c *Client, srv *fakeServer) {
	t.Helper()
	before := srv.calls.Load()
	for i := 0; i < 10; i++ {
		start := time.Now()
		res := c.Rewrite(context.Background(), dataReply, nil)
		if !errors.Is(res.Err, ErrBreakerOpen) || res.Reply != dataReply || res.Rewritten {
			t.Fatalf("breaker not open: %+v", res)
		}
		if el := time.Since(start); el > 20*time.Millisecond {
			t.Errorf("open breaker took %v", el)
		}
	}
	if n := srv.calls.Load(); n != before {
		t.Errorf("open breaker sent %d calls", n-before)
	}
}

func TestRoundRobin(t *testing.T) {
	srvs := []*fakeServer{startFake(t, superFantastic), startFake(t, superFantastic), startFake(t, superFantastic)}
	target := srvs[0].addr + "," + srvs[1].addr + "," + srvs[2].addr
	c := newClient(t, target, WithTimeout(time.Second))
	// Calls go to the replicas connected so far; on a busy machine the
	// first ones may all reach the first replica to connect.
	allServed := func() bool {
		for _, s := range srvs {
			if s.calls.Load() == 0 {
				return false
			}
		}
		return true
	}
	for i, deadline := 0, time.Now().Add(10*time.Second); !allServed(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d calls, a replica has seen none: %d, %d, %d", i, srvs[0].calls.Load(), srvs[1].calls.Load(), srvs[2].calls.Load())
		}
		if res := c.Rewrite(context.Background(), dataReply, nil); !res.Rewritten {
			t.Fatalf("call %d: %+v", i, res)
		}
	}

	srvs[0].srv.Stop()
	before1, before2 := srvs[1].calls.Load(), srvs[2].calls.Load()
	var fallbacks []int
	for i := 0; i < 60; i++ {
		if res := c.Rewrite(context.Background(), dataReply, nil); !res.Rewritten {
			fallbacks = append(fallbacks, i)
		}
	}
	// Only a call racing the stop may fall back; later ones use the survivors.
	if len(fallbacks) > 2 || (len(fallbacks) > 0 && fallbacks[len(fallbacks)-1] > 5) {
		t.Errorf("fallbacks after stopping one replica at calls %v", fallbacks)
	}
	if srvs[1].calls.Load() == before1 || srvs[2].calls.Load() == before2 {
		t.Error("survivors did not share the calls")
	}
}

func TestObserver(t *testing.T) {
	srv := startFake(t, superFantastic)
	var (
		mu   sync.Mutex
		seen []Result
	)
	c := newClient(t, srv.addr, WithObserver(func(r Result, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if d <= 0 {
			t.Errorf("duration %v", d)
		}
		seen = append(seen, r)
	}))
	c.Rewrite(context.Background(), dataReply, nil)
	c.Rewrite(context.Background(), Reply{Status: 999}, nil)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || !seen[0].Rewritten || !errors.Is(seen[1].Err, ErrInvalidRequest) {
		t.Errorf("observed %+v", seen)
	}
}

func TestObserverPanicIsContained(t *testing.T) {
	srv := startFake(t, superFantastic)
	c := newClient(t, srv.addr, WithObserver(func(Result, time.Duration) { panic("metrics bug") }))
	if res := c.Rewrite(context.Background(), dataReply, nil); !res.Rewritten {
		t.Errorf("res = %+v", res)
	}
}

func TestClosed(t *testing.T) {
	srv := startFake(t, superFantastic)
	c, err := New(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if res := c.Rewrite(context.Background(), dataReply, nil); !errors.Is(res.Err, ErrClosed) || res.Reply != dataReply {
		t.Errorf("after Close: %+v", res)
	}
	var nilClient *Client
	if res := nilClient.Rewrite(context.Background(), dataReply, nil); !errors.Is(res.Err, ErrClosed) {
		t.Errorf("nil client: %+v", res)
	}
}

func TestRewriteConnKeepsSetMeta(t *testing.T) {
	// The policy counts the replies of a connection in conn_meta, as
	// `conn_meta:set_meta('x_n', (conn_meta:get_meta('x_n') or 0) + 1)` would.
	srv := startFake(t, func(_ context.Context, req *rewritev1.RewriteResponseRequest) (*rewritev1.RewriteResponseResponse, error) {
		n, _ := req.GetConnMeta().AsMap()["x_n"].(float64)
		return withOutcome(rewritev1.Outcome_OUTCOME_UNCHANGED, "", map[string]any{"x_n": n + 1})(nil, req)
	})
	c := newClient(t, srv.addr)
	cm := NewConnMeta(map[string]any{"hostname": "mx"})
	for i := 0; i < 3; i++ {
		if res := c.RewriteConn(context.Background(), dataReply, cm); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if v, _ := cm.Get("x_n"); v != 3.0 {
		t.Errorf("x_n = %v, want 3", v)
	}
	if v, _ := cm.Get("hostname"); v != "mx" {
		t.Errorf("hostname = %v", v)
	}
}

func FuzzAnswer(f *testing.F) {
	f.Add(uint32(250), "super fantastic!\nOK", int32(2))
	f.Add(uint32(999), "OK", int32(2))
	f.Add(uint32(421), "ok\r\n250 x", int32(3))
	f.Add(uint32(250), "a\rb\x00", int32(0))
	f.Add(uint32(345), "\n\n", int32(-17))
	f.Fuzz(func(t *testing.T, st uint32, text string, outcome int32) {
		res := answer(dataReply, &rewritev1.RewriteResponseResponse{Status: st, Response: text, Outcome: rewritev1.Outcome(outcome)})
		if !smtpreply.ValidStatus(res.Status) {
			t.Fatalf("invalid status %d sent", res.Status)
		}
		// Sanitize("\n\n") is "\n", which Sanitize calls empty: only that may fail here.
		if _, err := smtpreply.Sanitize(res.Text); err != nil && !errors.Is(err, smtpreply.ErrEmptyText) {
			t.Fatalf("unsafe text %q sent: %v", res.Text, err)
		}
		if res.Rewritten != (res.Reply != dataReply) || (res.Err != nil && res.Rewritten) {
			t.Fatalf("inconsistent result %+v", res)
		}
		if res.CloseConnection != (res.Status == 421) {
			t.Fatalf("CloseConnection %v for %d", res.CloseConnection, res.Status)
		}
	})
}
