package policy_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewrited/rewrited/service/policy"
)

func TestMetaLookup(t *testing.T) {
	meta, err := policy.MetaFromMap(map[string]any{
		"received_from": "10.0.0.1:52000",
		"count":         3,
		"list":          []any{"a", 1.5},
		"null":          nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want *structpb.Value
	}{
		{"received_from", structpb.NewStringValue("10.0.0.1:52000")},
		{"count", structpb.NewNumberValue(3)},
		{"list", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("a"), structpb.NewNumberValue(1.5)}})},
		{"null", structpb.NewNullValue()},
		{"absent", nil},
		{"", nil},
	} {
		got, err := meta.Lookup(tc.key)
		if err != nil || !proto.Equal(got, tc.want) {
			t.Errorf("Lookup(%q) = %v, %v; want %v", tc.key, got, err, tc.want)
		}
	}
}

func TestMetaLookupLastEntryWins(t *testing.T) {
	entry := func(key, value string) []byte {
		v, _ := proto.Marshal(structpb.NewStringValue(value))
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, key)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendBytes(e, v)
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		return protowire.AppendBytes(b, e)
	}
	meta := policy.Meta(append(entry("k", "first"), entry("k", "second")...))
	got, err := meta.Lookup("k")
	if err != nil || got.GetStringValue() != "second" {
		t.Errorf("got %v, %v", got, err)
	}
}

func TestMetaLookupMalformed(t *testing.T) {
	for _, b := range [][]byte{{0x0a}, {0x0a, 0x05, 0x0a}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, err := policy.Meta(b).Lookup("k"); err == nil {
			t.Errorf("Lookup on %x: no error", b)
		}
	}
}
