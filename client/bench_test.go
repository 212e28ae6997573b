package client

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// BenchmarkRewriteBreakerOpen measures the cost of a call while the fleet is
// down and the breaker open: what every SMTP reply pays during an outage.
func BenchmarkRewriteBreakerOpen(b *testing.B) {
	c := newClient(b, refusedAddr(b), WithBreaker(1, time.Hour))
	ctx := context.Background()
	meta := map[string]any{"received_from": "192.0.2.1:4321", "hostname": "mx"}
	c.Rewrite(ctx, dataReply, meta) // trips the breaker
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := c.Rewrite(ctx, dataReply, meta); !errors.Is(res.Err, ErrBreakerOpen) {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkRewriteLive measures a full round trip to a real rewrited process
// serving the bundled example policy, or to an in-process server when
// cmd/rewrited is not in this checkout.
func BenchmarkRewriteLive(b *testing.B) {
	if _, err := os.Stat("../cmd/rewrited"); err != nil {
		b.Log("cmd/rewrited missing: using an in-process server")
		benchRoundTrip(b, startFake(b, superFantastic).addr)
		return
	}
	benchRoundTrip(b, rewritedtest.Start(b).Addr)
}

// BenchmarkRewriteInProcess measures the client and gRPC overhead alone,
// against an in-process server with a trivial policy.
func BenchmarkRewriteInProcess(b *testing.B) {
	benchRoundTrip(b, startFake(b, superFantastic).addr)
}

func benchRoundTrip(b *testing.B, addr string) {
	c := newClient(b, addr, WithTimeout(time.Second))
	ctx := context.Background()
	meta := map[string]any{"received_from": "192.0.2.1:4321", "hostname": "mx"}
	if res := c.Rewrite(ctx, dataReply, meta); !res.Rewritten { // connects
		b.Fatalf("warm-up: %+v", res)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := c.Rewrite(ctx, dataReply, meta); !res.Rewritten {
			b.Fatalf("%+v", res)
		}
	}
}
