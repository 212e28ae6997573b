package policy_test

import (
	"math"
	"testing"

	lua "github.com/yuin/gopher-lua"
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

// sameAsProtoValue checks get_meta's reading of an encoded
// google.protobuf.Value against proto.Unmarshal followed by the conversion
// of a decoded value.
func sameAsProtoValue(t *testing.T, value []byte) {
	t.Helper()
	entry := protowire.AppendBytes(protowire.AppendTag(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "k"), 2, protowire.BytesType), value)
	meta := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), entry)
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	got, err := policy.LookupLua(L, meta, "k")
	var v structpb.Value
	if wantErr := proto.Unmarshal(value, &v); wantErr != nil {
		if err == nil {
			t.Fatalf("got %v, proto.Unmarshal refuses the value: %v", got, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("error %v, proto.Unmarshal decodes %v", err, &v)
	}
	want := policy.ValueToLua(L, &v)
	if got.Type() != want.Type() {
		t.Fatalf("got %v (%s), want %v (%s)", got, got.Type(), want, want.Type())
	}
	if n, ok := want.(lua.LNumber); ok && n != n {
		if g := got.(lua.LNumber); g == g {
			t.Fatalf("got %v, want NaN", got)
		}
		return
	}
	if want.Type() != lua.LTTable && got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestGetMetaReadsLikeProto(t *testing.T) {
	value := func(v *structpb.Value) []byte {
		b, err := proto.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	list, err := structpb.NewValue([]any{"a", 1.5})
	if err != nil {
		t.Fatal(err)
	}
	field := func(num protowire.Number, typ protowire.Type, payload []byte) []byte {
		return append(protowire.AppendTag(nil, num, typ), payload...)
	}
	str := func(s string) []byte { return field(3, protowire.BytesType, protowire.AppendString(nil, s)) }
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"string", value(structpb.NewStringValue("10.0.0.1:52000"))},
		{"empty string", str("")},
		{"number", value(structpb.NewNumberValue(-2.5))},
		{"NaN", value(structpb.NewNumberValue(math.NaN()))},
		{"true", value(structpb.NewBoolValue(true))},
		{"bool of a large varint", field(4, protowire.VarintType, protowire.AppendVarint(nil, 1<<40))},
		{"null", value(structpb.NewNullValue())},
		{"no kind", nil},
		{"list", value(list)},
		{"last kind wins", append(str("first"), value(structpb.NewNumberValue(7))...)},
		{"null after a string", append(str("x"), field(1, protowire.VarintType, []byte{0})...)},
		{"string after a list", append(value(list), str("x")...)},
		{"malformed struct replaced by a string", append(field(5, protowire.BytesType, protowire.AppendBytes(nil, []byte{0x0a, 0x05})), str("x")...)},
		{"invalid UTF-8 replaced later", append(str("\xff"), str("ok")...)},
		{"number of the wrong wire type is skipped", append(field(2, protowire.VarintType, []byte{1}), str("x")...)},
		{"unknown field", append(field(9, protowire.Fixed32Type, []byte{1, 2, 3, 4}), str("x")...)},
		{"truncated number", field(2, protowire.Fixed64Type, []byte{1, 2})},
		{"field number out of range", protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3)},
	} {
		t.Run(tc.name, func(t *testing.T) { sameAsProtoValue(t, tc.value) })
	}
}

// FuzzGetMeta checks get_meta's reading of any value bytes against protobuf.
func FuzzGetMeta(f *testing.F) {
	f.Add([]byte{0x1a, 0x02, 'o', 'k'})
	f.Add([]byte{0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f})
	f.Add([]byte{0x32, 0x02, 0x0a, 0x00, 0x20, 0x01})
	f.Fuzz(func(t *testing.T, value []byte) { sameAsProtoValue(t, value) })
}
