package rewrite

import (
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	wirev1 "github.com/rewrited/rewrited/proto/rewrite/wire/v1"
)

// Request is a RewriteResponse request as the server decodes it: the fields
// of LazyRewriteRequest, whose strings share one copy of the received
// message, or why it could not be decoded.
type Request struct {
	wirev1.LazyRewriteRequest
	command string // backs LazyRewriteRequest.Command
	err     error
}

// Err is why the request could not be decoded, as an InvalidArgument
// status, or nil.
func (r *Request) Err() error { return r.err }

// Codec is the server's codec: the proto codec, except that a *Request is
// decoded straight from the wire in one or two allocations, where
// proto.Unmarshal makes one per field. Register it with grpc.ForceServerCodecV2.
type Codec struct {
	encoding.CodecV2
	maxBytes int
}

// NewCodec returns the server codec, which refuses a request of more than
// maxBytes undecoded; zero means no limit.
func NewCodec(maxBytes int) Codec {
	return Codec{CodecV2: encoding.GetCodecV2(protoenc.Name), maxBytes: maxBytes}
}

// Unmarshal implements encoding.CodecV2. A *Request too large or malformed
// is not an error here, which gRPC would answer with Internal: the request
// carries it in Err, for the service to answer InvalidArgument.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*Request)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	if n := data.Len(); c.maxBytes > 0 && n > c.maxBytes {
		r.err = status.Errorf(codes.InvalidArgument, "request: %d bytes, the limit is %d", n, c.maxBytes)
		return nil
	}
	if err := r.unmarshal(keep(data)); err != nil {
		r.err = status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
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
// Repeated conn_meta fields are joined once at the end, so that decoding
// stays linear in the size of the request.
func (r *Request) unmarshal(b []byte) error {
	whole := b
	metaFields, metaBytes := 0, 0
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
			r.ConnMeta, n = protowire.ConsumeBytes(b)
			metaFields++
			metaBytes += len(r.ConnMeta)
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
	if metaFields > 1 {
		r.ConnMeta = joinConnMeta(whole, metaBytes)
	}
	return nil
}

// joinConnMeta concatenates the conn_meta fields of b, which unmarshal has
// read without error, into one buffer of size bytes: concatenated encodings
// merge as protobuf messages do.
func joinConnMeta(b []byte, size int) []byte {
	meta := make([]byte, 0, size)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if num == fieldConnMeta && typ == protowire.BytesType {
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			meta = append(meta, v...)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		b = b[n:]
	}
	return meta
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
