package policy

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Meta is connection metadata in protobuf wire form: an encoded
// google.protobuf.Struct. It is decoded one key at a time, when the policy
// asks for it, so a request's cost does not grow with metadata it never
// reads.
type Meta []byte

// MetaFromStruct encodes s.
func MetaFromStruct(s *structpb.Struct) (Meta, error) {
	if s == nil {
		return nil, nil
	}
	return proto.Marshal(s)
}

// MetaFromMap encodes a JSON-like map.
func MetaFromMap(m map[string]any) (Meta, error) {
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, err
	}
	return MetaFromStruct(s)
}

var errMalformedMeta = errors.New("conn_meta is not a well-formed google.protobuf.Struct")

// Lookup returns the value stored under name, or nil when there is none. As
// when protobuf decodes a map, the last entry for a key wins.
func (m Meta) Lookup(name string) (*structpb.Value, error) {
	found, ok, err := m.lookupEncoded(name)
	if err != nil || !ok {
		return nil, err
	}
	return decodeValue(name, found)
}

// decodeValue decodes the encoded value of key name.
func decodeValue(name string, b []byte) (*structpb.Value, error) {
	v := new(structpb.Value)
	if err := proto.Unmarshal(b, v); err != nil {
		return nil, malformed(name, err)
	}
	return v, nil
}

func malformed(name string, err error) error {
	return fmt.Errorf("%w: key %q: %w", errMalformedMeta, name, err)
}

// lookupEncoded returns the encoded google.protobuf.Value stored under name.
func (m Meta) lookupEncoded(name string) (found []byte, ok bool, err error) {
	for b := []byte(m); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false, errMalformedMeta
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType { // Struct.fields is field 1
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, false, errMalformedMeta
			}
			b = b[n:]
			continue
		}
		entry, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, false, errMalformedMeta
		}
		b = b[n:]
		key, value, err := mapEntry(entry)
		if err != nil {
			return nil, false, err
		}
		if string(key) == name {
			found, ok = value, true
		}
	}
	return found, ok, nil
}

// mapEntry splits a map entry into its key (field 1) and encoded value
// (field 2).
func mapEntry(b []byte) (key, value []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, errMalformedMeta
		}
		b = b[n:]
		if typ != protowire.BytesType || (num != 1 && num != 2) {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, nil, errMalformedMeta
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, nil, errMalformedMeta
		}
		b = b[n:]
		if num == 1 {
			key = v
		} else {
			value = v
		}
	}
	return key, value, nil
}
