package rewrite_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
	"github.com/rewrited/rewrited/service/rewrite"
)

// BenchmarkCodec compares the server codec with gRPC's proto codec on the
// load generator's request (5-key conn_meta).
func BenchmarkCodec(b *testing.B) {
	meta, err := structpb.NewStruct(map[string]any{
		"received_from": "192.0.2.10:52344", "received_via": "192.0.2.1:25", "hostname": "mx1.example.net",
		"reception_protocol": "ESMTP", "ehlo_domain": "client.example.org",
	})
	if err != nil {
		b.Fatal(err)
	}
	cmd := "DATA"
	req, err := proto.Marshal(&rewritev1.RewriteResponseRequest{Status: 250, Response: "OK ids=8f2a61c04be94d7e", Command: &cmd, ConnMeta: meta})
	if err != nil {
		b.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(req)}
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
		msg   func() any
	}{
		{"proto", encoding.GetCodecV2(protoenc.Name), func() any { return new(wirev1.LazyRewriteRequest) }},
		{"server", rewrite.NewCodec(0), func() any { return new(rewrite.Request) }},
	} {
		b.Run("decode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.codec.Unmarshal(data, c.msg()); err != nil {
					b.Fatal(err)
				}
			}
		})

	}
}

// BenchmarkCodecRepeatedConnMeta decodes the request of the quadratic-decode
// attack at growing numbers of conn_meta fields: the time per field stays
// flat when decoding is linear.
func BenchmarkCodecRepeatedConnMeta(b *testing.B) {
	codec := rewrite.NewCodec(0)
	for _, n := range []int{1_000, 10_000, 80_000} {
		data := mem.BufferSlice{mem.SliceBuffer(rewritedtest.RepeatedConnMeta(n))}
		b.Run(fmt.Sprintf("fields=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := new(rewrite.Request)
				if err := codec.Unmarshal(data, r); err != nil || r.Err() != nil {
					b.Fatal(err, r.Err())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/field")
		})
	}
}
