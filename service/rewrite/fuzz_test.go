package rewrite_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/rewrite"
	"github.com/rewrited/rewrited/smtpreply"
)

// fuzzPolicy reads conn_meta the way real policies do and turns part of the
// request into its answer, so fuzzed bytes reach the result conversion.
const fuzzPolicy = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  local v = conn_meta:get_meta('x_status')
  local t = conn_meta:get_meta('x_text')
  local from = conn_meta:get_meta('received_from')
  if command == 'ERROR' then error(response:sub(2)) end
  if command == 'META' then conn_meta:set_meta('x_seen', from) end
  if v ~= nil or t ~= nil then return v, t end
  if command == 'DATA' and status == 250 then
    return 250, 'super fantastic!\n' .. response
  end
  if from ~= nil then return nil, response .. ' via ' .. tostring(from) end
end)
`

var (
	fuzzOnce sync.Once
	fuzzSvc  *rewrite.Service
)

// service compiles fuzzPolicy once per process: fuzz workers run many inputs.
func service(t testing.TB) *rewrite.Service {
	fuzzOnce.Do(func() {
		p, _, err := policy.Compile("fuzz.lua", []byte(fuzzPolicy), policy.Options{EvalTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		fuzzSvc = rewrite.New(rewrite.Static{"default": p, "other": p})
	})
	return fuzzSvc
}

func metaSeed(tb testing.TB, m map[string]any) []byte {
	b, err := policy.MetaFromMap(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkAnswer asserts the service's contract for one request: a reply that
// is valid SMTP and marshals, or InvalidArgument / NotFound, never anything
// else.
func checkAnswer(t *testing.T, req *wirev1.LazyRewriteRequest, resp *rewritev1.RewriteResponseResponse, err error) {
	t.Helper()
	if err != nil {
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound {
			t.Fatalf("request %v: error %v, want a reply, InvalidArgument or NotFound", req, err)
		}
		return
	}
	if !smtpreply.ValidStatus(int(resp.GetStatus())) {
		t.Fatalf("request %v: invalid status in %v", req, resp)
	}
	if text := resp.GetResponse(); text != "" {
		if clean, err := smtpreply.Sanitize(text); err != nil || clean != text {
			t.Fatalf("request %v: response text %q is not sanitised (%q, %v)", req, text, clean, err)
		}
	}
	if !resp.GetRewritten() && (resp.GetStatus() != req.GetStatus()) {
		t.Fatalf("request %v: not rewritten but the status changed: %v", req, resp)
	}
	if resp.GetCloseConnection() != (resp.GetStatus() == 421) {
		t.Fatalf("request %v: close_connection %v with status %d", req, resp.GetCloseConnection(), resp.GetStatus())
	}
	// What the handler returns must reach the client: gRPC marshals it.
	if _, err := proto.Marshal(resp); err != nil {
		t.Fatalf("request %v: the response cannot be sent: %v (%v)", req, err, resp)
	}
}

// FuzzRewrite feeds the service requests with fuzzed status, response,
// command, conn_meta bytes and policy name, as the gRPC server would after
// decoding a LazyRewriteRequest.
func FuzzRewrite(f *testing.F) {
	meta := metaSeed(f, map[string]any{"received_from": "10.0.0.1:5200", "hostname": "mx"})
	for _, seed := range []struct {
		status           uint32
		response         string
		command          string
		hasCommand       bool
		meta             []byte
		policy           string
		xStatus, xText   string
		setXStatus, setX bool
	}{
		{250, "OK ids=8f2a", "DATA", true, meta, "", "", "", false, false},
		{250, "OK", "", false, nil, "", "", "", false, false},
		{550, "5.1.1 unknown", "RCPT TO:<a@b>", true, meta, "other", "", "", false, false},
		{250, "OK", "META", true, meta, "", "", "", false, false},
		{250, "\xff", "ERROR", true, nil, "", "", "", false, false},
		{250, "x", "ERROR", true, nil, "", "", "", false, false},
		{250, "é", "ERROR", true, nil, "", "", "", false, false},
		{250, "a\r\nb\r\n", "", false, nil, "missing", "", "", false, false},
		{999, "x", "", false, nil, "", "", "", false, false},
		{1 << 31, "x", "", false, []byte{0x0a, 0xff}, "", "", "", false, false},
		{250, "x", "", false, nil, "../etc/passwd", "", "", false, false},
		{250, "x", "", false, nil, "", "421", "bye\r\n250 injected", true, true},
		{250, "x", "", false, nil, "", "250", "a\r250 injected", true, true},
		{250, "x", "", false, nil, "", "0x1f4", "\n\n", true, true},
	} {
		m := seed.meta
		if seed.setXStatus || seed.setX {
			m = metaSeed(f, map[string]any{"x_status": seed.xStatus, "x_text": seed.xText})
		}
		f.Add(seed.status, seed.response, seed.command, seed.hasCommand, m, seed.policy)
	}
	f.Fuzz(func(t *testing.T, st uint32, response, command string, hasCommand bool, meta []byte, name string) {
		req := &wirev1.LazyRewriteRequest{Status: st, Response: response, ConnMeta: meta, Policy: name}
		if hasCommand {
			req.Command = &command
		}
		resp, err := service(t).Rewrite(context.Background(), req)
		checkAnswer(t, req, resp, err)
	})
}

// FuzzMetaLookup checks the lazy conn_meta reader against protobuf's own
// decoding: arbitrary bytes never panic it, and for a well-formed Struct it
// finds what proto.Unmarshal finds.
func FuzzMetaLookup(f *testing.F) {
	f.Add(metaSeed(f, map[string]any{"received_from": "10.0.0.1:5200", "n": 3, "l": []any{"a", true, nil}, "o": map[string]any{"k": "v"}}), "received_from")
	f.Add(metaSeed(f, map[string]any{"tls_peer_subject_name": []any{"CN=a", "O=b"}}), "tls_peer_subject_name")
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x01, 'k', 0x12, 0x00, 0x0a, 0x03, 0x0a, 0x01, 'k'}, "k") // the key twice: the last wins
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, "k")
	f.Add([]byte{0x12, 0x00, 0x0a, 0x02, 0x10, 0x01}, "")
	f.Fuzz(func(t *testing.T, meta []byte, key string) {
		got, err := policy.Meta(meta).Lookup(key)
		var s structpb.Struct
		if proto.Unmarshal(meta, &s) != nil {
			return // Lookup may accept or refuse bytes protobuf refuses, but must not panic
		}
		want, ok := s.GetFields()[key]
		switch {
		case err != nil:
			// Lookup decodes only the key asked for; protobuf checks the
			// others too, so it cannot refuse more than Lookup.
			t.Fatalf("Lookup(%q) = %v on a Struct protobuf decodes: %v", key, err, &s)
		case !ok && got != nil:
			t.Fatalf("Lookup(%q) = %v, but the Struct has no such key", key, got)
		case ok && !proto.Equal(got, want):
			t.Fatalf("Lookup(%q) = %v, protobuf decodes %v", key, got, want)
		}
	})
}

// FuzzRewriteStruct drives the in-process RewriteResponse path, which
// encodes a decoded conn_meta Struct of any shape and depth.
func FuzzRewriteStruct(f *testing.F) {
	f.Add([]byte(nil), "OK")
	f.Add(metaSeed(f, map[string]any{"received_from": map[string]any{"deep": []any{map[string]any{"x": 1}}}}), "OK")
	f.Add(metaSeed(f, map[string]any{"x_status": 5.5e2, "x_text": "no"}), "OK")
	f.Fuzz(func(t *testing.T, meta []byte, response string) {
		var s structpb.Struct
		if proto.Unmarshal(meta, &s) != nil {
			return
		}
		req := &rewritev1.RewriteResponseRequest{Status: 250, Response: response, ConnMeta: &s}
		resp, err := service(t).RewriteResponse(context.Background(), req)
		checkAnswer(t, &wirev1.LazyRewriteRequest{Status: 250, Response: response}, resp, err)
	})
}
