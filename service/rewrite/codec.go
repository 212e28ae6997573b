package rewrite

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
)

// Request is a RewriteResponse request as the server decodes it: the fields
// of LazyRewriteRequest, whose strings share one copy of the received
// message, and the message's size.
type Request struct {
	wirev1.LazyRewriteRequest
	command string // backs LazyRewriteRequest.Command
	size    int
}

// WireSize is the size of the request's encoding.
func (r *Request) WireSize() int { return r.size }

// Codec is the server's codec: the proto codec, except that a *Request is
// decoded straight from the wire in one or two allocations, where
// proto.Unmarshal makes one per field. Register it with grpc.ForceServerCodecV2.
type Codec struct{ encoding.CodecV2 }

// NewCodec returns the server codec.
func NewCodec() Codec { return Codec{encoding.GetCodecV2(protoenc.Name)} }

// Unmarshal implements encoding.CodecV2.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*Request); ok {
		return r.unmarshal(keep(data))
	}
	return c.CodecV2.Unmarshal(data, v)
}

// keep returns the bytes of data for the Request to keep. gRPC frees data
// when Unmarshal returns, unless the codec took a reference; a SliceBuffer's
// references are no-ops, as its memory never returns to a pool, so a small
// message received in one piece is kept without a copy.
func keep(data mem.BufferSlice) []byte {
	if len(data) == 1 {
		if b, ok := data[0].(mem.SliceBuffer); ok {
			return b
		}
	}
	return data.Materialize()
}

// Field numbers of rewrite.v1.RewriteResponseRequest, which
// LazyRewriteRequest shares.
const (
	fieldStatus   = 1
	fieldResponse = 2
	fieldCommand  = 3
	fieldConnMeta = 4
	fieldPolicy   = 5
)

// unmarshal decodes b, which it keeps: the strings point into it. It reads
// the wire as proto.Unmarshal reads rewrite.v1.RewriteResponseRequest: the
// last of a repeated scalar wins, repeated conn_meta messages merge (their
// encodings concatenate, and a key's last entry wins), unknown fields and
// fields of an unexpected wire type are skipped, and strings must be UTF-8.
func (r *Request) unmarshal(b []byte) error {
	r.size = len(b)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("rewrite request: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("rewrite request: field number %d is out of range", num)
		}
		b = b[n:]
		switch {
		case num == fieldStatus && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			r.Status = uint32(v)
		case num == fieldResponse && typ == protowire.BytesType:
			r.Response, n = consumeString(b)
		case num == fieldCommand && typ == protowire.BytesType:
			r.command, n = consumeString(b)
			r.Command = &r.command
		case num == fieldConnMeta && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if r.ConnMeta == nil {
				r.ConnMeta = v
			} else {
				r.ConnMeta = append(slices.Clip(r.ConnMeta), v...)
			}
		case num == fieldPolicy && typ == protowire.BytesType:
			r.Policy, n = consumeString(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("rewrite request: field %d: %w", num, errField(n))
		}
		b = b[n:]
	}
	return nil
}

// errInvalidUTF8 is consumeString's error code, beyond protowire's.
const errInvalidUTF8 = -100

func errField(n int) error {
	if n == errInvalidUTF8 {
		return errors.New("string field contains invalid UTF-8")
	}
	return protowire.ParseError(n)
}

// consumeString is protowire.ConsumeString without a copy: the string
// shares b, which must not change afterwards.
func consumeString(b []byte) (string, int) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return "", n
	}
	if !utf8.Valid(v) {
		return "", errInvalidUTF8
	}
	return unsafe.String(unsafe.SliceData(v), len(v)), n
}
