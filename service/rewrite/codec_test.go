package rewrite_test

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/rewrite"
)

// decode decodes b received in one piece, which the request keeps, and in
// two pieces, which it copies, and checks that both read the same.
func decode(t *testing.T, b []byte) (*rewrite.Request, error) {
	t.Helper()
	whole, split := new(rewrite.Request), new(rewrite.Request)
	codec := rewrite.NewCodec(0)
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, whole); err != nil {
		t.Fatalf("Unmarshal: %v; a request carries its error", err)
	}
	half := len(b) / 2
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:half]), mem.SliceBuffer(b[half:])}, split); err != nil {
		t.Fatalf("Unmarshal in two pieces: %v; a request carries its error", err)
	}
	err, splitErr := whole.Err(), split.Err()
	if err != nil && status.Code(err) != codes.InvalidArgument {
		t.Errorf("decode error %v, want InvalidArgument", err)
	}
	if (err == nil) != (splitErr == nil) || (err == nil && !proto.Equal(&whole.LazyRewriteRequest, &split.LazyRewriteRequest)) {
		t.Fatalf("in one piece: %v (%v); in two: %v (%v)", &whole.LazyRewriteRequest, err, &split.LazyRewriteRequest, splitErr)
	}
	return whole, err
}

// sameAsProto checks the codec's reading of b against proto.Unmarshal's:
// both fail or both succeed with the same fields. Repeated conn_meta
// fields merge, where LazyRewriteRequest's bytes field keeps the last.
func sameAsProto(t *testing.T, b []byte) {
	t.Helper()
	var want wirev1.LazyRewriteRequest
	wantErr := proto.Unmarshal(b, &want)
	got, err := decode(t, b)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("codec error %v, proto.Unmarshal error %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if got.Status != want.Status || got.Response != want.Response || got.Policy != want.Policy {
		t.Errorf("got status %d response %q policy %q, want %d %q %q", got.Status, got.Response, got.Policy, want.Status, want.Response, want.Policy)
	}
	if (got.Command == nil) != (want.Command == nil) || got.GetCommand() != want.GetCommand() {
		t.Errorf("got command %v, want %v", got.Command, want.Command)
	}
	if !bytes.HasSuffix(got.ConnMeta, want.ConnMeta) {
		t.Errorf("conn_meta %x does not end with proto's %x", got.ConnMeta, want.ConnMeta)
	}
	// What a policy reads of conn_meta is what the public message holds.
	var public rewritev1.RewriteResponseRequest
	if proto.Unmarshal(b, &public) != nil {
		return
	}
	for key, v := range public.GetConnMeta().GetFields() {
		found, err := policy.Meta(got.ConnMeta).Lookup(key)
		if err != nil || !proto.Equal(found, v) {
			t.Errorf("conn_meta %q: got %v (%v), want %v", key, found, err, v)
		}
	}
}

func TestCodecReadsLikeProto(t *testing.T) {
	cmd := "DATA"
	full, err := proto.Marshal(&rewritev1.RewriteResponseRequest{
		Status: 250, Response: "OK ids=8f2a", Command: &cmd, Policy: "strict",
		ConnMeta: &structpb.Struct{Fields: map[string]*structpb.Value{"hostname": structpb.NewStringValue("mx1")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	meta := func(key, value string) []byte {
		b, err := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{key: structpb.NewStringValue(value)}})
		if err != nil {
			t.Fatal(err)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), b)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"full request", full},
		{"empty request", nil},
		{"empty command is present", str(3, "")},
		{"last status wins", cat(varint(1, 421), varint(1, 250))},
		{"status over 32 bits", varint(1, 1<<40|250)},
		{"unknown fields are skipped", cat(varint(9, 7), protowire.AppendFixed64(protowire.AppendTag(nil, 10, protowire.Fixed64Type), 1), str(11, "x"), str(2, "OK"))},
		{"status of the wrong wire type is skipped", cat(protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 5), str(2, "OK"))},
		{"repeated conn_meta merges", cat(meta("a", "1"), meta("b", "2"), meta("a", "3"))},
		{"invalid UTF-8 response", str(2, "OK \xff")},
		{"invalid UTF-8 command", str(3, "\xc3")},
		{"invalid UTF-8 policy", str(5, "\xed\xa0\x80")},
		{"truncated length", full[:len(full)-1]},
		{"truncated tag", []byte{0x80}},
		{"field number zero", []byte{0x00, 0x01}},
		{"end group without start", []byte{0x0c}},
	} {
		t.Run(tc.name, func(t *testing.T) { sameAsProto(t, tc.b) })
	}
}

func TestCodecJoinsRepeatedConnMetaOnce(t *testing.T) {
	const n = 80_000
	b := rewritedtest.RepeatedConnMeta(n)
	got, err := decode(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Repeat([]byte{0x0a, 0x00}, n); !bytes.Equal(got.ConnMeta, want) {
		t.Errorf("conn_meta: %d bytes, want the %d bytes of the %d fields joined", len(got.ConnMeta), len(want), n)
	}
	if got.Status != 250 || got.Response != "OK" {
		t.Errorf("status %d response %q", got.Status, got.Response)
	}
	codec, data := rewrite.NewCodec(0), mem.BufferSlice{mem.SliceBuffer(b)}
	allocs := testing.AllocsPerRun(10, func() {
		if err := codec.Unmarshal(data, new(rewrite.Request)); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("%v allocations to decode %d conn_meta fields, want the request and one joined buffer", allocs, n)
	}
}

func TestCodecRefusesOversizedRequestUndecoded(t *testing.T) {
	b := rewritedtest.RepeatedConnMeta(300)
	codec := rewrite.NewCodec(len(b) - 1)
	var r rewrite.Request
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &r); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("request: %d bytes, the limit is %d", len(b), len(b)-1)
	if status.Code(r.Err()) != codes.InvalidArgument || status.Convert(r.Err()).Message() != want {
		t.Errorf("oversized request: %v, want InvalidArgument %q", r.Err(), want)
	}
	if r.Status != 0 || r.Response != "" || r.ConnMeta != nil {
		t.Errorf("oversized request was decoded: status %d, response %q, %d bytes of conn_meta", r.Status, r.Response, len(r.ConnMeta))
	}
	r = rewrite.Request{}
	if err := rewrite.NewCodec(len(b)).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &r); err != nil || r.Err() != nil || r.Status != 250 {
		t.Errorf("request at the limit: %v, %v, status %d", err, r.Err(), r.Status)
	}
}

// FuzzCodec checks the codec against proto.Unmarshal on any bytes.
func FuzzCodec(f *testing.F) {
	cmd := "RCPT"
	seed, err := proto.Marshal(&rewritev1.RewriteResponseRequest{Status: 550, Response: "no such user", Command: &cmd, Policy: "default"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{0x08, 0xfa, 0x01, 0x22, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) { sameAsProto(t, b) })
}
