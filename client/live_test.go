package client

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// TestAgainstRewrited checks the client against a real rewrited process
// serving the bundled example policy.
func TestAgainstRewrited(t *testing.T) {
	if _, err := os.Stat("../cmd/rewrited"); err != nil || testing.Short() {
		t.Skip("needs cmd/rewrited")
	}
	p := rewritedtest.Start(t)
	c := newClient(t, p.Addr, WithTimeout(time.Second))
	meta := map[string]any{"received_from": "192.0.2.1:4321", "tls_peer_subject_name": []string{"CN=x"}}
	for _, tc := range []struct {
		name          string
		c             *Client
		in            Reply
		wantText      string
		wantRewritten bool
		wantCode      codes.Code
	}{
		{name: "DATA 250 rewritten", c: c, in: dataReply, wantText: "super fantastic!\n" + dataReply.Text, wantRewritten: true},
		{name: "no command kept", c: c, in: Reply{Status: 250, Text: dataReply.Text}, wantText: dataReply.Text},
		{name: "rejection kept", c: c, in: Reply{Status: 550, Text: "5.7.1 no", Command: "RCPT TO:<x@y>"}, wantText: "5.7.1 no"},
		{name: "unknown policy", c: newClient(t, p.Addr, WithPolicy("nope")),
			in: dataReply, wantText: dataReply.Text, wantCode: codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.c.Rewrite(context.Background(), tc.in, meta)
			if res.Text != tc.wantText || res.Rewritten != tc.wantRewritten || status.Code(res.Err) != tc.wantCode {
				t.Errorf("res = %+v", res)
			}
			if tc.wantCode == codes.OK && (res.Err != nil || res.PolicyVersion == "") {
				t.Errorf("res = %+v", res)
			}
			if tc.wantCode != codes.OK && !errors.Is(res.Err, ErrRPC) {
				t.Errorf("Err = %v", res.Err)
			}
		})
	}
	// NotFound is a configuration error: the breaker (threshold 1) stays closed.
	nf := newClient(t, p.Addr, WithPolicy("nope"), WithBreaker(1, time.Hour))
	for i := 0; i < 3; i++ {
		if res := nf.Rewrite(context.Background(), dataReply, nil); status.Code(res.Err) != codes.NotFound {
			t.Errorf("call %d: %v, want NotFound", i, res.Err)
		}
	}
}
